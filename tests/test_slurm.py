"""Requeue on Slurm's warning signals (nightseg.infra.preemption), on a local run: USR1 under a faked Slurm
job with a fake ``scontrol``, USR2 under hydra/launcher=submitit_local (submitit's own requeue);
plus the launcher config and the node-local cache warning."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

SLOW = "+hydra.callbacks.slow_steps._target_=tests.slow_steps.SlowSegmenterSteps"
# The segmenter alone (night_count=0: no translator), 40 steps: resume checkpoints every 4 steps, and
# the signal comes at step 1 or 2 (tests/slow_steps.py), so a checkpoint at step 2 or 3 was saved
# at the signal. Two loader workers, as they also get Slurm's signals.
MAX_STEPS = 40
TRAINING = ["experiment=smoke", "logger=csv", "strategy=augment", "night_count=0",
            "model.segmenter.max_epochs=null", f"model.segmenter.max_steps={MAX_STEPS}",
            "data.num_workers=2"]


@pytest.fixture
def cache(tmp_path, smoke_overrides) -> Path:
    """A fresh stage cache holding the smoke synthetic images, rendered once per session (in the
    cache smoke_overrides shares) instead of once per test."""
    from hydra.utils import instantiate

    from tests.conftest import compose_cfg

    shared = Path(compose_cfg(smoke_overrides).paths.cache_dir)
    instantiate(compose_cfg(smoke_overrides).data.catalog)  # renders, unless done already
    cache = tmp_path / "cache"
    shutil.copytree(shared / "synthetic", cache / "synthetic", ignore=shutil.ignore_patterns("*.lock"))
    return cache


def _fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of task 0 of a one-task Slurm job 4242, with an ``scontrol`` on PATH that
    records its arguments, one call a line."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "nightseg", "SLURM_NTASKS": "1",
           "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, calls


def _child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "NIGHTSEG_TEST_MARKER": str(tmp_path / "training"),
           "NIGHTSEG_TEST_SLOW_WHILE": str(tmp_path / "slow")}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra)
    return env


def _signal_during_training(tmp_path: Path, proc: subprocess.Popen, sig: int, group: bool) -> None:
    """Wait for segmenter step 1, send ``sig`` to the process that wrote the marker (or to the
    whole process group, as Slurm signals every process of a job step), then let training run at
    full speed."""
    marker = tmp_path / "training"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1][-3000:] if proc.stderr else "no marker"
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(int(marker.read_text()), sig)
    (tmp_path / "slow").unlink()


def _global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_usr1_under_slurm_saves_the_step_requeues_once_and_the_requeued_job_resumes(tmp_path, cache):
    """``#SBATCH --signal=USR1@120`` in a plain sbatch script: the signal reaches every process of
    the step during segmenter training. The stage stops after its step and saves it; rank zero runs
    ``scontrol requeue 4242`` once (Lightning's own USR1 requeue, which would write an hpc_ckpt into
    the run directory and requeue again, stays out); exit status 138. The requeued job (the same
    command) resumes at the saved step and ends at exactly the step budget."""
    from nightseg.run import EXIT_SIGTERM

    slurm, calls = _fake_slurm(tmp_path)
    env = _child_env(tmp_path, **slurm)
    (tmp_path / "slow").touch()
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "nightseg.run", *TRAINING, SLOW, f"paths.cache_dir={cache}",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _signal_during_training(tmp_path, proc, signal.SIGUSR1, group=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1 != EXIT_SIGTERM, err[-3000:]
    assert "stopped by SIGUSR1: Slurm job 4242 requeued; it resumes this stage from the saved step" in err
    assert calls.read_text().splitlines() == ["requeue 4242"]
    log = (run_dir / "run.log").read_text()
    from nightseg.infra.preemption import node_local_reason

    if node_local_reason(cache):  # pytest's temporary directory is usually under /tmp: said in one line
        assert f"paths.cache_dir={cache} is {node_local_reason(cache)}, local to this node" in log
    assert not list(run_dir.rglob("hpc_ckpt_*")) and not list(cache.rglob("hpc_ckpt_*"))
    last = list((cache / "stages" / "segmenter").glob("*/work/last.ckpt"))
    assert len(last) == 1
    stopped_at = _global_step(last[0])
    assert 2 <= stopped_at < 4, stopped_at  # the first periodic checkpoint is at step 4
    assert f"SIGUSR1: training stopped at step {stopped_at}" in log

    requeued = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert f"stage segmenter: resumed at step {stopped_at}" in (run_dir / "run.log").read_text()
    assert calls.read_text().splitlines() == ["requeue 4242"]  # not requeued again
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert _global_step(Path(metrics["checkpoints"]["segmenter"])) == MAX_STEPS


@pytest.mark.slow
def test_usr2_under_submitit_local_is_requeued_by_submitit_and_resumes(tmp_path, cache):
    """hydra/launcher=submitit_local runs the job as a submitit task, with submitit's USR2 handler
    (the one hydra/launcher=slurm gets on a cluster). USR2 during segmenter training: the stage
    saves its step, then submitit's handler checkpoints the job and requeues it (locally: the
    controller starts the task again), once; the requeued task resumes at that step and the
    sweep finishes with exactly the step budget."""
    env = _child_env(tmp_path)
    (tmp_path / "slow").touch()
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "nightseg.run", "-m", "hydra/launcher=submitit_local", *TRAINING, SLOW,
           f"paths.cache_dir={cache}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _signal_during_training(tmp_path, proc, signal.SIGUSR2, group=False)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # The task's output (both starts of it): submitit's own log lines begin with "submitit".
    out, task_err = ("".join(p.read_text() for p in sorted((sweep / ".submitit").rglob(f"*_log.{ext}")))
                     for ext in ("out", "err"))
    assert proc.returncode == 0, err[-2000:] + task_err[-3000:]
    submitit_log = [line for line in out.splitlines() if line.startswith("submitit ")]
    assert sum("Caught signal SIGUSR2" in line for line in submitit_log) == 1, out[-3000:]
    assert sum("Requeued job" in line for line in submitit_log) == 1
    assert "stopped by SIGUSR2: resume checkpoint saved; submitit requeues the job" in task_err
    log = (sweep / "0" / "run.log").read_text()
    stopped = [line for line in log.splitlines() if "SIGUSR2: training stopped at step" in line]
    assert len(stopped) == 1, log[-3000:]
    stopped_at = int(stopped[0].split("at step ")[1].split(";")[0])
    assert 2 <= stopped_at < 4, stopped_at
    assert f"stage segmenter: resumed at step {stopped_at}" in log
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert _global_step(Path(metrics["checkpoints"]["segmenter"])) == MAX_STEPS


def test_slurm_launcher_config_makes_the_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes onto hydra-submitit-launcher's submitit_slurm and, through the
    plugin's own parameter mapping and submitit's Slurm executor, gives an sbatch script with one
    task and one GPU per trainer device on trainer.num_nodes nodes, USR2 ahead of the time limit,
    --requeue, and three time-limit requeues."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit import AutoExecutor

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2",
                                           "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    params = dict(instantiate(cfg.hydra.launcher).params)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # submitit's executor insists on one
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    # As BaseSubmititLauncher.launch hands them to submitit:
    executor = AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                            slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    assert executor._executor.max_num_timeout == 3
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --signal=USR2@120", "#SBATCH --requeue", "#SBATCH --time=240",
                 "#SBATCH --partition=gpu", "#SBATCH --open-mode=append"):
        assert line in sbatch.splitlines(), (line, sbatch)


def test_node_local_cache_is_named(tmp_path, monkeypatch, caplog):
    from nightseg.infra import preemption

    assert preemption.node_local_reason("/dev/shm/nightseg") is not None
    assert preemption.node_local_reason("/tmp/nightseg") is not None
    assert preemption.node_local_reason(REPO) is None or str(REPO).startswith("/tmp")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    preemption.warn_if_cache_is_node_local("/tmp/nightseg")  # not a Slurm job: nothing to say
    assert "local to this node" not in caplog.text
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    preemption.warn_if_cache_is_node_local("/tmp/nightseg")
    assert "paths.cache_dir=/tmp/nightseg is under /tmp, local to this node" in caplog.text


def test_array_task_is_requeued_by_its_own_id(monkeypatch):
    from nightseg.infra import preemption

    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert preemption.slurm_job_id() == "4242_1"



# ---- the handler itself, in this process ------------------------------------------------------
@pytest.fixture
def preemption(monkeypatch):
    """nightseg.infra.preemption with fresh state; this process's USR1/USR2 handlers restored after."""
    from nightseg.infra import preemption

    saved = {sig: signal.getsignal(sig) for sig in preemption.REQUEUE_SIGNALS}
    monkeypatch.setattr(preemption, "_state", preemption._State())
    yield preemption
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _deliver(sig: int) -> None:
    signal.raise_signal(sig)
    time.sleep(0.01)  # the Python handler runs at the next bytecode boundary: here at the latest


def test_requeue_signal_between_stages_stops_at_once_and_requeues_once(preemption, tmp_path, monkeypatch):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    slurm, calls = _fake_slurm(tmp_path)
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    preemption.install()
    with pytest.raises(SIGTERMException):  # no Trainer running: nothing to finish first
        _deliver(signal.SIGUSR1)
    _deliver(signal.SIGUSR1)  # Slurm or a user sending it again: one request is enough
    assert preemption.pending() == signal.SIGUSR1
    with pytest.raises(SIGTERMException):
        preemption.check()  # between stages
    assert preemption.finish_stop() == 128 + signal.SIGUSR1
    assert preemption.finish_stop() == 128 + signal.SIGUSR1
    assert calls.read_text().splitlines() == ["requeue 4242"]


def test_submitit_handler_requeues_after_the_stop(preemption):
    """Under submitit the USR2 handler found at install is submitit's: called once, after the stage
    stopped (it requeues and exits), never from the signal itself."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    seen = []

    def submitit_handler(signum, frame):
        seen.append(signum)
        raise SystemExit(-1)

    signal.signal(signal.SIGUSR2, submitit_handler)
    preemption.install()
    with pytest.raises(SIGTERMException):
        _deliver(signal.SIGUSR2)
    assert seen == []
    with pytest.raises(SystemExit):
        preemption.finish_stop()
    assert seen == [signal.SIGUSR2]


def test_sigterm_stops_without_requeue(preemption, tmp_path, monkeypatch):
    slurm, calls = _fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", slurm["PATH"])
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    preemption.install()
    assert preemption.finish_stop() == 143  # what scancel and a preemption send: stop, no requeue
    assert not calls.exists()


@pytest.mark.slow
def test_sigterm_as_a_trainer_ends_stops_before_the_next_stage(preemption, tmp_path):
    """SIGTERM after a Trainer's loops (here in on_train_end): Lightning sets its flag but no loop
    acts on it any more; the job must still stop between stages, with 143, instead of going on."""
    import os

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class TermAtEnd(pl.Callback):
        def on_train_end(self, trainer, pl_module):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    preemption.install()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[preemption.StopOnSignal(), TermAtEnd()])
    trainer.fit(Tiny(), data)  # finishes normally: the stage's artefact may be published
    assert preemption.pending() == signal.SIGTERM
    with pytest.raises(SIGTERMException):
        preemption.check()  # Job.record, before the next stage
    assert preemption.finish_stop() == 143
