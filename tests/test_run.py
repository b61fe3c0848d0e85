"""End to end at smoke size: both strategies, the stage cache, a 2-point sweep, the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightseg.core.errors import ConfigError
from nightseg.infra.hardware import auto_precision
from nightseg.run import run
from tests.conftest import REPO, compose_cfg, read_metrics
from tests.wandb_files import offline_runs

pytestmark = pytest.mark.slow


def _run(overrides, run_dir):
    return run(compose_cfg(overrides), run_dir)


def test_night2day_inference_then_augment_zero_share_the_segmenter(tmp_path, smoke_overrides):
    m = _run(smoke_overrides + ["strategy=night2day_inference"], tmp_path / "a")
    assert set(m) >= {"strategy", "night_count", "data", "seed", "results", "translation",
                      "stages", "timings_s", "precision", "device"}
    # trainer.precision=auto, as resolved here, in metrics.json and in every trained stage's key
    assert m["precision"] == auto_precision(cuda=False)[0] and "CPU class" in m["device"]
    for kind in ("translator", "segmenter"):
        spec = json.loads((Path(m["checkpoints"][kind]).parent / "spec.json").read_text())
        assert spec["trainer"] == {"precision": m["precision"]}
    written = read_metrics(tmp_path / "a")
    assert written["results"] == m["results"]
    conditions = {(r["test_set"], r["condition"]) for r in m["results"]}
    assert conditions == {("synthetic_day_val", "raw"), ("synthetic_night", "raw"),
                          ("synthetic_night", "night2day")}
    for r in m["results"]:
        assert 0 <= r["miou"] <= 100 and 0 <= r["pixel_acc"] <= 100
        assert set(r["per_class_iou"]) >= {"road", "sky", "car"}
    assert set(m["translation"]) >= {"psnr", "ssim"}
    assert m["stages"]["translator"] in ("trained", "cached")
    assert (tmp_path / "a" / "panels" / "synthetic_night_night2day.png").exists()
    # CSV logs: the stage is the directory, the keys those of every logger
    header = (tmp_path / "a" / "logs" / "eval_night2day" / "metrics.csv").read_text().split("\n")[0]
    assert "test/synthetic_night/night2day/miou" in header.split(",")

    again = _run(smoke_overrides + ["strategy=night2day_inference"], tmp_path / "b")
    assert again["stages"] == {"translator": "cached", "segmenter": "cached",
                               "generated_night": "unused"}
    assert again["results"] == m["results"]  # same checkpoints, same numbers

    zero = _run(smoke_overrides + ["strategy=augment", "night_count=0"], tmp_path / "c")
    assert zero["stages"]["translator"] == "unused"
    assert zero["stages"]["segmenter"] == "cached"  # the day-only segmenter of night2day
    assert zero["checkpoints"]["segmenter"] == m["checkpoints"]["segmenter"]


def test_night_count_larger_than_pool_fails_before_training(tmp_path, smoke_overrides):
    with pytest.raises(ConfigError, match=r"night_count=17 is larger than .* \(16 images\); use "
                       r"night_count<=16, or render a larger pool with data.counts.train=17"):
        _run(smoke_overrides + ["strategy=augment", "night_count=17",
                                f"paths.cache_dir={tmp_path}/c2"], tmp_path / "r")
    assert not (tmp_path / "c2" / "stages").exists()


def test_wandb_offline_run_is_written_and_closed(tmp_path, smoke_overrides, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in smoke_overrides if not o.startswith("logger=")]
    m = _run(overrides + ["logger=wandb", "strategy=night2day_inference"], tmp_path / "w")
    (run,) = offline_runs(tmp_path / "w")
    import wandb

    assert wandb.run is None  # closed, so the next job of a sweep starts a fresh run
    # The translated condition under the same set as the raw one (was eval_night2day-test_night2day/...)
    assert {k: run.config[k] for k in ("strategy", "night_count", "gate")} == {
        "strategy": "night2day_inference", "night_count": None, "gate": "none"}
    for r in m["results"]:
        assert run.summary[f"test/{r['test_set']}/{r['condition']}/miou"] == r["miou"]
    assert run.summary["test/synthetic_night/night2day/psnr"] == m["translation"]["psnr"]
    assert run.summary["test/synthetic_night/raw/psnr"] == m["translation"]["raw_psnr"]


class _Killed(RuntimeError):
    pass


def test_killed_stage_resumes_from_its_last_checkpoint(tmp_path, smoke_overrides, monkeypatch):
    """Killed in its third epoch, a stage keeps the end of its second; the rerun trains only
    what is left."""
    import torch

    from nightseg.models.segmentation import SegmentationModule

    overrides = smoke_overrides + ["strategy=augment", "night_count=0", f"paths.cache_dir={tmp_path}/c",
                                   "model.segmenter.max_epochs=4"]
    steps_per_epoch = 4  # 16 training images, batch 4
    real_step = SegmentationModule.training_step
    steps = []

    def dies_in_third_epoch(self, *a):
        if self.current_epoch == 2:
            raise _Killed
        steps.append(self.current_epoch)
        return real_step(self, *a)

    monkeypatch.setattr(SegmentationModule, "training_step", dies_in_third_epoch)
    with pytest.raises(_Killed):
        _run(overrides, tmp_path / "a")
    assert steps == [0] * steps_per_epoch + [1] * steps_per_epoch
    last = list((tmp_path / "c" / "stages" / "segmenter").glob("*/work/last.ckpt"))
    assert len(last) == 1
    saved = torch.load(last[0], map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and saved["global_step"] == 2 * steps_per_epoch

    steps.clear()
    monkeypatch.setattr(SegmentationModule, "training_step",
                        lambda self, *a: steps.append(self.current_epoch) or real_step(self, *a))
    m = _run(overrides, tmp_path / "b")  # the same command again: resumes at epoch 2
    assert steps == [2] * steps_per_epoch + [3] * steps_per_epoch
    assert m["stages"]["segmenter"] == "trained"
    final = torch.load(m["checkpoints"]["segmenter"], map_location="cpu", weights_only=False)
    assert final["global_step"] == 4 * steps_per_epoch
    assert not last[0].exists()  # published: the resume state is removed


def test_step_budget_validates_resumes_and_stops_at_its_step(tmp_path, smoke_overrides, monkeypatch):
    """max_steps=10 on 4 steps an epoch: validation and resume points come by steps (the
    default's 7000-image epoch is longer than its whole budget), and a kill mid-epoch loses at
    most one checkpoint interval."""
    import torch

    from nightseg.models.segmentation import SegmentationModule

    overrides = smoke_overrides + ["strategy=augment", "night_count=0", f"paths.cache_dir={tmp_path}/c",
                                   "model.segmenter.max_epochs=null", "model.segmenter.max_steps=10"]
    real_step, real_val = SegmentationModule.training_step, SegmentationModule.validation_step
    steps, validated_at = [], []

    def dies_at_step_7(self, *a):
        if self.global_step == 7:
            raise _Killed
        steps.append(self.global_step)
        return real_step(self, *a)

    def counting_val(self, batch, batch_idx, *a):
        if batch_idx == 0:
            validated_at.append(self.global_step)
        return real_val(self, batch, batch_idx, *a)

    monkeypatch.setattr(SegmentationModule, "training_step", dies_at_step_7)
    monkeypatch.setattr(SegmentationModule, "validation_step", counting_val)
    with pytest.raises(_Killed):
        _run(overrides, tmp_path / "a")
    assert steps == list(range(7)) and validated_at == [2, 4, 6]  # every 10 // 4 = 2 steps
    last = list((tmp_path / "c" / "stages" / "segmenter").glob("*/work/last.ckpt"))
    assert len(last) == 1  # written every 10 // 10 = 1 step
    assert torch.load(last[0], map_location="cpu", weights_only=False)["global_step"] == 7

    steps.clear()
    monkeypatch.setattr(SegmentationModule, "training_step",
                        lambda self, *a: steps.append(self.global_step) or real_step(self, *a))
    m = _run(overrides, tmp_path / "b")
    assert steps == [7, 8, 9]
    final = torch.load(m["checkpoints"]["segmenter"], map_location="cpu", weights_only=False)
    assert final["global_step"] == 10


def test_augment_under_ddp_on_two_cpu_processes(tmp_path):
    """Translator, generated images, segmenter and evaluation under DDP (gloo, 2 processes that
    Lightning starts, with trainer.devices=2 and the default strategy: auto): ranks follow rank
    zero's cache decisions, write their share of the generated images, one publishes."""
    cmd = [sys.executable, "-m", "nightseg.run", "experiment=smoke", "logger=csv",
           "strategy=augment", "night_count=8", f"paths.cache_dir={tmp_path}/cache",
           f"hydra.run.dir={tmp_path}/run", "trainer.accelerator=cpu", "trainer.devices=2",
           "data.counts.train=17"]  # odd: ranks get unequal shares
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_metrics(tmp_path / "run")
    assert m["stages"] == {"translator": "trained", "generated_night": "trained", "segmenter": "trained"}
    manifest = next((tmp_path / "cache" / "stages" / "night_images").glob("*/images/manifest.json"))
    assert [e["index"] for e in json.loads(manifest.read_text())] == list(range(17))


def test_non_finite_loss_stops_the_stage_and_publishes_nothing(tmp_path, smoke_overrides, monkeypatch):
    """A NaN loss at step 2 of the segmenter: the stage stops there with the stage, epoch and step
    named; no model is published; the resume checkpoint is not from the NaN step."""
    import torch

    from nightseg.core.errors import TrainingError
    from nightseg.models.segmentation import SegmentationModule

    real_step = SegmentationModule.training_step
    steps = []

    def nan_at_step_2(self, *a):
        steps.append(self.global_step)
        loss = real_step(self, *a)
        return loss * float("nan") if self.global_step == 2 else loss

    monkeypatch.setattr(SegmentationModule, "training_step", nan_at_step_2)
    overrides = smoke_overrides + ["strategy=augment", "night_count=0", f"paths.cache_dir={tmp_path}/c",
                                   "model.segmenter.max_epochs=null", "model.segmenter.max_steps=10"]
    with pytest.raises(TrainingError, match=r"stage segmenter: the training loss is not finite "
                                            r"\(train/loss=nan\) in epoch 0, by step 3"):
        _run(overrides, tmp_path / "r")
    assert steps == [0, 1, 2]  # stopped at once, not after the budget
    segmenters = tmp_path / "c" / "stages" / "segmenter"
    assert not list(segmenters.glob("*/model.ckpt"))
    last = list(segmenters.glob("*/work/last.ckpt"))
    assert len(last) == 1 and torch.load(last[0], map_location="cpu", weights_only=False)["global_step"] == 2


def test_non_finite_gan_loss_stops_the_translator(tmp_path, smoke_overrides, monkeypatch):
    """The GANs optimize manually: their logged losses are checked (one step late)."""
    from nightseg.core.errors import TrainingError
    from nightseg.models.cyclegan import CycleGANModule

    real_step = CycleGANModule.training_step

    def nan_from_step_4(self, batch, batch_idx):
        out = real_step(self, batch, batch_idx)
        if self.global_step >= 4:  # manual optimization: two optimizer steps per batch
            self.log("train/loss_probe", float("nan"))
        return out

    monkeypatch.setattr(CycleGANModule, "training_step", nan_from_step_4)
    with pytest.raises(TrainingError, match=r"stage translator: the training loss is not finite "
                                            r"\(train/loss_probe=nan\) in epoch 0"):
        _run(smoke_overrides + ["strategy=night2day_inference", f"paths.cache_dir={tmp_path}/c"],
             tmp_path / "r")
    assert not list((tmp_path / "c" / "stages" / "translator").glob("*/model.ckpt"))


_SLOW_TRAINING = '''
import os, runpy, sys, time
from pathlib import Path

from nightseg.models.segmentation import SegmentationModule

real_step = SegmentationModule.training_step


def slow_step(self, *args):
    if self.global_step == 3:  # the test sends SIGTERM while this step lasts
        Path(os.environ["NIGHTSEG_TEST_MARKER"]).touch()
        time.sleep(1.5)
    return real_step(self, *args)


SegmentationModule.training_step = slow_step
sys.argv[0] = "nightseg.run"
runpy.run_module("nightseg.run", run_name="__main__", alter_sys=True)
'''


def test_sigterm_stops_the_sweep_with_a_resume_checkpoint_and_the_rerun_finishes(tmp_path):
    """What a scheduler does before preemption: SIGTERM to every process of the job (the group),
    here during the segmenter of the first job of a two-job sweep. The sweep stops with exit
    status 143 and starts no other job; the stage keeps the step it reached; the same command
    resumes it and finishes both jobs."""
    import signal
    import time

    import torch

    from nightseg.run import EXIT_SIGTERM

    script, marker = tmp_path / "slow_run.py", tmp_path / "training"
    script.write_text(_SLOW_TRAINING)
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    args = ["-m", "experiment=smoke", "logger=csv", "strategy=augment", "night_count=0", "seed=0,1",
            "model.segmenter.max_epochs=null", "model.segmenter.max_steps=30",
            "data.counts.train=64",  # 16 steps an epoch
            "data.num_workers=2", f"paths.cache_dir={cache}", f"hydra.sweep.dir={sweep}"]
    env = dict(os.environ, NIGHTSEG_TEST_MARKER=str(marker), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_SIGTERM, err[-3000:]
    assert "stopped by SIGTERM: run the same command again to resume" in err
    assert not (sweep / "1").exists()  # Hydra did not go on to the second job
    assert not list(sweep.rglob("metrics.json"))
    last = list((cache / "stages" / "segmenter").glob("*/work/last.ckpt"))
    assert len(last) == 1
    stopped_at = torch.load(last[0], map_location="cpu", weights_only=False)["global_step"]
    # Saved on SIGTERM after the step it came in: the periodic checkpoints are at steps 3, 6, ...
    assert 4 <= stopped_at < 6

    rerun = subprocess.run([sys.executable, "-m", "nightseg.run", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in (sweep / "0" / "run.log").read_text()
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [m["seed"] for m in metrics] == [0, 1]
    for m in metrics:
        final = torch.load(m["checkpoints"]["segmenter"], map_location="cpu", weights_only=False)
        assert final["global_step"] == 30
