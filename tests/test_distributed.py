"""Multi-process jobs as users start them, on CPU with gloo: torchrun on one and on two "nodes",
a Slurm-like launch, concurrent jobs on one cache, exact scores and skipped files under DDP.

Each job gets free ports and a timeout after which it is killed, so a hang fails the test
instead of the suite. Sizes are the smoke preset's: each job takes seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from hydra.utils import instantiate

from nightseg.infra.hardware import auto_precision
from nightseg.tools.faults.runs import free_port
from tests.conftest import compose_cfg, read_metrics
from tests.dist_helpers import check, env, run_all, slurm_env, torchrun

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# Seconds: a failsafe against hangs (every job here takes well under a minute); raise it with
# NIGHTSEG_DIST_TIMEOUT on a slow machine.
TIMEOUT = float(os.environ.get("NIGHTSEG_DIST_TIMEOUT", 150))
SMOKE = ["experiment=smoke", "logger=csv", "trainer.accelerator=cpu"]


def _nightseg(tmp_path, *overrides: str, cache: str = "cache", run: str = "run") -> list[str]:
    return ["-m", "nightseg.run", *SMOKE, f"paths.cache_dir={tmp_path / cache}",
            f"hydra.run.dir={tmp_path / run}", *overrides]


def _metrics(tmp_path, run: str = "run") -> dict:
    return read_metrics(tmp_path / run)


def _spec(tmp_path, kind: str) -> dict:
    [spec] = (tmp_path / "cache" / "stages" / kind).glob("*/spec.json")
    return json.loads(spec.read_text())


def test_torchrun_two_processes_with_strategy_auto(tmp_path):
    """The issue's command: torchrun, trainer.devices=2 and the default strategy (auto). The
    CycleGAN steps under DDP, and 2-process stages are cached under keys of their own."""
    port = free_port()
    cmd = torchrun(2, port, *_nightseg(tmp_path, "strategy=augment", "night_count=4",
                                       "trainer.devices=2"))
    check(run_all([(cmd, env())], TIMEOUT, tmp_path / "logs"))
    assert _metrics(tmp_path)["stages"] == {"translator": "trained", "generated_night": "trained",
                                            "segmenter": "trained"}
    manifest = next((tmp_path / "cache" / "stages" / "night_images").glob("*/images/manifest.json"))
    assert [e["index"] for e in json.loads(manifest.read_text())] == list(range(16))
    for kind in ("translator", "segmenter"):
        assert _spec(tmp_path, kind)["trainer"] == {"precision": auto_precision(cuda=False)[0],
                                                   "world_size": 2}


def test_two_nodes_share_one_cache(tmp_path):
    """torchrun --nnodes=2 (one process each, on 127.0.0.1): the second node's rank (LOCAL_RANK 0,
    GROUP_RANK 1) must not take the stage lock that rank zero holds."""
    port = free_port()
    jobs = [(torchrun(1, port, *_nightseg(tmp_path, "strategy=augment", "night_count=0",
                                          "trainer.num_nodes=2", run=f"run{node}"),
                      nnodes=2, node_rank=node), env()) for node in (0, 1)]
    check(run_all(jobs, TIMEOUT, tmp_path / "logs"))
    assert _metrics(tmp_path, "run0")["stages"]["segmenter"] == "trained"
    assert not (tmp_path / "run1" / "metrics.json").exists()  # rank zero writes the results


def test_two_nodes_without_a_shared_cache_fail_naming_it(tmp_path):
    """Each "node" with a cache of its own: the generated images of node 1 are not on node 0's
    disk, so the job stops naming the directory that must be shared instead of silently using
    a different subset of images."""
    port = free_port()
    jobs = [(torchrun(1, port, *_nightseg(tmp_path, "strategy=augment", "night_count=4",
                                          "trainer.num_nodes=2", "trainer.strategy=ddp",
                                          "model.translator.epochs_decay=0", cache=f"node{node}",
                                          run=f"run{node}"),
                      nnodes=2, node_rank=node), env()) for node in (0, 1)]
    results = run_all(jobs, TIMEOUT, tmp_path / "logs")
    assert not any(r.timed_out for r in results), results[0].output[-3000:]
    assert all(r.returncode != 0 for r in results)
    out = results[0].output
    assert "paths.cache_dir" in out and "shared by every node" in out, out[-3000:]
    assert str(tmp_path / "node0") in out


def test_slurm_like_launch(tmp_path):
    """Two tasks as srun starts them (SLURM_PROCID/SLURM_LOCALID, no LOCAL_RANK): one lock
    holder, one segmenter trained by both."""
    port = free_port()
    jobs = [([sys.executable, *_nightseg(tmp_path, "strategy=augment", "night_count=0",
                                         "trainer.devices=2", run=f"run{k}")],
             env(**slurm_env(k, 2, port))) for k in (0, 1)]
    check(run_all(jobs, TIMEOUT, tmp_path / "logs"))
    assert _metrics(tmp_path, "run0")["stages"]["segmenter"] == "trained"
    assert _spec(tmp_path, "segmenter")["trainer"]["world_size"] == 2


def test_skipped_images_under_ddp_finish(tmp_path):
    """data.on_error=skip with a corrupt day image (CycleGAN batch of 1) and a corrupt labelled
    image: every rank keeps stepping, the job ends, and the generated set lacks only that image."""
    cfg = compose_cfg([*SMOKE, f"paths.cache_dir={tmp_path / 'cache'}"])
    catalog = instantiate(cfg.data.catalog)  # render the smoke data, then damage two files
    for path in (catalog.translate_day.samples[3].image, catalog.train.samples[5].image):
        path.write_bytes(path.read_bytes()[:100])
    port = free_port()
    cmd = torchrun(2, port, *_nightseg(tmp_path, "strategy=augment", "night_count=4",
                                       "trainer.devices=2", "trainer.strategy=ddp",
                                       "data.on_error=skip"))
    check(run_all([(cmd, env())], TIMEOUT, tmp_path / "logs"))
    assert _metrics(tmp_path)["stages"]["translator"] == "trained"
    manifest = next((tmp_path / "cache" / "stages" / "night_images").glob("*/images/manifest.json"))
    sources = [e["source"] for e in json.loads(manifest.read_text())]
    assert len(sources) == 15 and str(catalog.train.samples[5].image) not in sources


def test_concurrent_jobs_on_one_cache_build_once(tmp_path):
    """Two 2-process jobs need the same artefact at once. One builds it (with collectives in the
    build, as Trainer.fit has); every rank of the other follows its rank zero and reuses it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    jobs = []
    for job, other in (("a", "b"), ("b", "a")):
        args = ["-m", "tests.dist_worker", "cache_race", f"--cache={tmp_path / 'cache'}",
                f"--out={shared}", f"--job={job}", f"--other={other}"]
        jobs.append((torchrun(2, free_port(), *args), env()))
    check(run_all(jobs, TIMEOUT, tmp_path / "logs"))
    seen = {job: json.loads((shared / f"result_{job}.json").read_text()) for job in ("a", "b")}
    statuses = {job: {r["status"] for r in ranks} for job, ranks in seen.items()}
    assert sorted(map(tuple, statuses.values())) == [("cached",), ("trained",)], seen
    builder = next(job for job, s in statuses.items() if s == {"trained"})
    assert sorted((shared / "builds.log").read_text().split("\n")[:-1]) == [f"{builder} 0",
                                                                             f"{builder} 1"]
    assert all(r["content"] == f"built by {builder}" for ranks in seen.values() for r in ranks)


def test_ddp_scores_equal_one_process_exactly(tmp_path):
    """Uneven sets (3 validation and 5 test images in batches of 2, on 2 processes): every image
    counts once, so mIoU, accuracies, per-class IoU, PSNR and SSIM equal one process's exactly."""
    cache = tmp_path / "cache"
    instantiate(compose_cfg([*SMOKE, f"paths.cache_dir={cache}", "data.counts.val=3",
                             "data.counts.test=5"]).data.catalog)  # render once, before the jobs
    worker = ["-m", "tests.dist_worker", "evaluate", f"--cache={cache}", f"--out={tmp_path}"]
    jobs = [([sys.executable, *worker], env()), (torchrun(2, free_port(), *worker), env())]
    check(run_all(jobs, TIMEOUT, tmp_path / "logs"))
    one, two = (json.loads((tmp_path / f"results_{n}.json").read_text()) for n in (1, 2))
    assert [(r["test_set"], r["condition"]) for r in one] == [
        ("synthetic_day_val", "raw"), ("synthetic_night", "raw"), ("synthetic_night", "night2day")]
    assert all("psnr" in r for r in one[1:])
    assert two == one


def test_a_resume_mid_epoch_under_ddp_gives_every_rank_the_batches_it_would_have_had(tmp_path):
    """Two ranks, 4 steps an epoch (8 samples, batch 1 each), 3 epochs: stopped before step 6 and
    resumed from step 5's checkpoint, every rank trains on the crops it trained on in the run
    that was never stopped, and the ranks train on different samples."""
    def job(name: str, stop_at: str = "") -> tuple[list[str], dict]:
        (tmp_path / name).mkdir()
        checkpoints = tmp_path / ("whole" if name == "whole" else "stopped")
        args = ["-m", "tests.dist_worker", "resume", "--cache", str(checkpoints),
                "--out", str(tmp_path / name), "--job", name, "--stop-at", stop_at]
        return torchrun(2, free_port(), *args), env()

    check(run_all([job("whole"), job("stopped", "6")], TIMEOUT, tmp_path / "logs"))
    check(run_all([job("resume")], TIMEOUT, tmp_path / "logs2"))
    seen = {(name, rank): json.loads((tmp_path / name / f"seen_{name}_{rank}.json").read_text())
            for name in ("whole", "stopped", "resume") for rank in (0, 1)}
    for rank in (0, 1):
        assert len(seen["whole", rank]) == 12 and len(seen["stopped", rank]) == 6
        assert seen["stopped", rank] + seen["resume", rank] == seen["whole", rank]
    assert [s[1] for s in seen["whole", 0][:4]] != [s[1] for s in seen["whole", 1][:4]]


def test_sigterm_reaching_the_ranks_at_different_steps_stops_both_after_the_same_step(tmp_path):
    """Slurm signals every task, each at its own moment. Lightning 2.6's SIGTERM handler broadcasts
    from inside the signal handler and each rank acts on its own flag: here both ranks hung until
    killed. nightseg's Trainers agree every log_every_n_steps batches (2 here): both stop at the
    first agreement after the step in which rank 0 got the signal (4 steps done), save that step,
    and end with SIGTERMException within seconds."""
    cmd = torchrun(2, free_port(), "-m", "tests.dist_worker", "sigterm", "--cache", str(tmp_path),
                   "--out", str(tmp_path))
    check(run_all([(cmd, env())], 60, tmp_path / "logs"))
    ranks = [json.loads((tmp_path / f"sigterm_{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1], ranks
    assert ranks[0]["stopped"] and ranks[0]["step"] == ranks[0]["checkpoint_step"] == 4, ranks
