"""Time limits and preemption on a cluster: the signals that ask a job to stop and come back.

Slurm warns a job ``--signal=<SIG>@<seconds>`` before its time limit (and at preemption, where the
cluster sets ``SlurmctldParameters=preempt_send_user_signal``). The signal is USR2 under
``hydra/launcher=slurm`` (submitit's choice, ``hydra.launcher.signal_delay_s`` ahead) and USR1 in a
plain sbatch script (Lightning's convention). nightseg answers both alike:

1. the stage in training stops after its current step and saves that step as its resume checkpoint
   (the path SIGTERM takes, :class:`nightseg.training.callbacks.CheckpointOnSigterm`); outside
   training the job stops where it is (the stage cache publishes atomically, so nothing is half-written);
2. the job is requeued once: by submitit where submitit started it (its handler, which this module
   calls after the checkpoint is saved, rewrites the job pickle and counts time limits against
   ``hydra.launcher.max_num_timeout``), else by ``scontrol requeue $SLURM_JOB_ID`` from global rank zero;
3. the requeued job runs the same command: finished stages come from the cache, the interrupted one
   resumes from the saved step.

Lightning's own requeue (``SLURMEnvironment(auto_requeue=True)``: on USR1 an ``hpc_ckpt_N.ckpt`` into the
Trainer's root directory and ``scontrol requeue`` from inside the signal handler, while training goes on)
is kept out: its checkpoint is taken mid-step, lands in the run directory rather than the stage's work
directory, and every later Trainer of the job under Slurm resumes from it (the segmenter's state loaded
into the evaluation pipeline: the job fails); its handler is inherited by forked loader workers, which
requeue the job once each. Lightning installs that handler only where the signal has none, and this
module holds USR1 and USR2 from the start of the job. Submitit's USR2 handler, which would requeue
mid-step and exit without a checkpoint, is wrapped the same way.

SIGTERM keeps its meaning: stop, save, exit 143, no requeue. It is also what ``scancel`` sends, and a job
preempted under ``PreemptMode=REQUEUE`` is requeued by Slurm itself.

Under DDP the ranks must stop at the same step, or the first to stop leaves the others waiting in
their next collective for ever. A signal reaches each rank at its own moment, so here a signal only
records the request (:func:`pending`); the ranks agree on it every ``trainer.log_every_n_steps``
batches, before every checkpoint and at the end of training (one all-reduce that also carries the
on-device :class:`StopFlag` s, such as the non-finite loss check: :class:`StopOnSignal`) and between
stages (:func:`check`), and only then is Lightning's stop flag set, on every rank at once. (A job of
one process needs no agreement: it stops after the step the signal came in.) Each agreement is a wait
for the device, which drains a GPU's queue of work: at every step it cost a GPU job a few percent.
Lightning's own SIGTERM handler is replaced
in every nightseg Trainer: it runs a ``broadcast`` from inside the signal handler (pytorch-lightning
2.6), which pairs with whatever collective the other rank is in at that moment (why that hangs, and
how it was found: experiments/reliability/README.md). Global rank zero alone requeues.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nightseg.infra import distributed

log = logging.getLogger(__name__)

REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Filesystems and directories that live on one node: a requeued job on another node would not see
# what the first one cached.
NODE_LOCAL_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "overlay"}
NODE_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass
class _State:
    installed: bool = False
    previous: dict[int, Any] = field(default_factory=dict)  # handlers found at install (submitit's USR2)
    pending: signal.Signals | None = None  # the first requeue signal received
    trainer: pl.Trainer | None = None  # the Trainer running now, if any
    requeued: bool = False


_state = _State()


def install() -> None:
    """Hold USR1 and USR2 for the rest of this process (again: no-op). Call at the start of the job,
    in the main thread, before the first Trainer."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in REQUEUE_SIGNALS:
        _state.previous[sig] = signal.getsignal(sig)
        signal.signal(sig, _on_signal)
    _state.installed = True


def pending() -> signal.Signals | None:
    """The requeue signal this process received, if any."""
    return _state.pending


def _on_signal(signum: int, frame: Any) -> None:
    sig = signal.Signals(signum)
    if _state.pending is not None:
        log.warning("%s: a stop was already requested (%s); nothing more to do", sig.name,
                    _state.pending.name)
        return
    _state.pending = sig
    if _state.trainer is not None:
        log.warning("%s: stopping after the current step to save it and requeue", sig.name)
    else:
        log.warning("%s: stopping now to requeue (no stage is training)", sig.name)
        raise SIGTERMException


def _on_sigterm(trainer: pl.Trainer, signum: int, frame: Any) -> None:
    """In place of Lightning's SIGTERM handler while a Trainer runs: record the request (the batch
    hooks of StopOnSignal act on it) and, as Lightning does, pass the signal on to the
    processes its launcher started; no collective here."""
    log.info("rank %d: received SIGTERM; stopping after the current step", trainer.global_rank)
    if _state.pending is None:
        _state.pending = signal.SIGTERM
        if trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)


def check() -> None:
    """Stop now if a signal came while a Trainer was finishing its last step (Lightning then
    completes it normally), on this rank or any other. Called between stages, on every rank."""
    if any(distributed.all_gather(_state.pending is not None)):
        raise SIGTERMException


class StopFlag(pl.Callback):
    """A reason to stop training that every rank must agree on, watched on the device: updated
    after every training batch without reading anything back to the host, and read only in
    :class:`StopOnSignal`'s agreement, together with the stop request (one collective)."""

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        """Take in this training batch (on the device only)."""

    def local_flag(self, device: torch.device) -> torch.Tensor:
        """This rank's flag: a 0-dim tensor on ``device``, non-zero to stop."""
        return torch.zeros((), device=device)

    def stop(self, trainer: pl.Trainer) -> None:
        """Called on every rank once any rank's flag was set: raise."""


def _multiprocess() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class StopOnSignal(pl.Callback):
    """In every nightseg Trainer: takes over SIGTERM from Lightning (:func:`_on_sigterm`), tells the
    requeue signals' handler which Trainer runs, and acts on a stop request and on the Trainer's
    :class:`StopFlag` callbacks.

    One process: a stop request stops the Trainer after the batch it came in (a host flag, no
    wait). Several: the ranks agree on it, and on the flags, in one all-reduce every
    ``trainer.log_every_n_steps`` batches of each loop (the training batches Lightning logs, where
    the logged values are read to the host anyway), at the start of each loop (a request that came
    before Lightning armed its signal handling, which clears its flag, included). The flags are
    also read before every checkpoint is saved (so none holds a state that a flag condemns) and at
    the end of training. A request that comes as the Trainer finishes its last batch stays
    pending: Job.record stops the job before its next stage (check())."""

    def __init__(self):
        self._flags: list[StopFlag] = []
        self._unchecked = 0  # training batches since the flags were last read

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _state.trainer = trainer
        self._flags = [c for c in trainer.callbacks if isinstance(c, StopFlag)]
        self._unchecked = 0
        # Read when Lightning registers its handlers, after this hook and before the loops.
        trainer._signal_connector._sigterm_notifier_fn = partial(_on_sigterm, trainer)
        # Lightning 2.6 broadcasts rank zero's stop flag and reads it back before every training
        # batch under DDP: a collective and a wait per step. The agreement here sets that flag on
        # every rank at once, so the broadcast never finds anything to do.
        loop = trainer.fit_loop.epoch_loop
        if hasattr(loop, "_broadcast_sigterm_tensor"):
            loop._broadcast_sigterm_tensor = _no_broadcast

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _state.trainer = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        _state.trainer = None

    def _agree(self, trainer: pl.Trainer, read_flags: bool) -> None:
        """Every rank at the same point of the same loop: if any rank's flag is set, stop (the
        flag raises); if any rank was asked to stop, set Lightning's stop flag on all of them, so
        that all raise SIGTERMException after this very batch (training: after its step;
        evaluation: before the next batch) and save the same step."""
        requested = _state.pending is not None
        if not _multiprocess() and not read_flags:
            if requested:
                trainer._signal_connector.received_sigterm = True
            return
        device = trainer.strategy.root_device
        flags = self._flags if read_flags else []
        local = torch.stack([torch.full((), float(requested), device=device),
                             *(f.local_flag(device).float() for f in flags)])
        if _multiprocess():
            dist.all_reduce(local, op=dist.ReduceOp.MAX)
        agreed = local.tolist()  # the one wait for the device
        if read_flags:
            self._unchecked = 0
        for flag, value in zip(flags, agreed[1:], strict=True):
            if value:
                flag.stop(trainer)
        if agreed[0]:
            trainer._signal_connector.received_sigterm = True

    def _every(self, trainer: pl.Trainer) -> int:
        return max(1, trainer.log_every_n_steps)

    def _at_loop_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._agree(trainer, read_flags=False)

    on_train_start = on_validation_start = on_test_start = _at_loop_start

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        for flag in self._flags:
            flag.update(trainer, pl_module, outputs)
        self._unchecked += 1
        # Lightning's own rule for the batches it logs (this batch counted).
        due = (trainer.fit_loop.epoch_loop._batches_that_stepped + 1) % self._every(trainer) == 0
        if due or (_state.pending is not None and not _multiprocess()):
            self._agree(trainer, read_flags=due or bool(self._flags))

    def _on_eval_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not _multiprocess() or (batch_idx + 1) % self._every(trainer) == 0:
            self._agree(trainer, read_flags=False)

    on_validation_batch_end = on_test_batch_end = _on_eval_batch_end

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Every rank saves at the same step (the periodic checkpoint, the agreed stop's).
        if self._unchecked:
            self._agree(trainer, read_flags=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unchecked:
            self._agree(trainer, read_flags=True)


def _no_broadcast() -> None:
    return None


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def finish_stop() -> int:
    """After a stop (SIGTERMException reached the entry point): requeue if a requeue signal asked for
    it, say what happens next, and return the exit status (128 + the signal, as a shell reports it)."""
    sig = _state.pending or signal.SIGTERM
    status = 128 + int(sig)
    if sig == signal.SIGTERM:
        what = "run the same command again to resume"
    else:
        what = _requeue(sig)
    print(f"stopped by {sig.name}: {what} (exit status {status})", file=sys.stderr, flush=True)
    return status


def _requeue(sig: signal.Signals) -> str:
    if _state.requeued:
        return "the job was requeued already"
    _state.requeued = True
    previous = _state.previous.get(sig)
    if callable(previous):
        # submitit's handler (hydra/launcher=slurm or submitit_local): on the first task it saves the
        # job's next submission, requeues it and exits; on the others it returns.
        print(f"stopped by {sig.name}: resume checkpoint saved; submitit requeues the job (after a "
              "time limit at most hydra.launcher.max_num_timeout times)", file=sys.stderr, flush=True)
        previous(int(sig), None)
        return "submitit requeues the job from its first task"
    job = slurm_job_id()
    if job is None:
        return "not a Slurm job, so not requeued: run the same command again to resume"
    if not distributed.is_rank_zero():
        return f"global rank zero requeues Slurm job {job}"
    cmd = ["scontrol", "requeue", job]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{' '.join(cmd)}` failed ({e}): submit the same command again to resume"
    if done.returncode != 0:
        return (f"`{' '.join(cmd)}` failed with status {done.returncode} ({done.stderr.strip()}): "
                "submit the same command again to resume")
    return f"Slurm job {job} requeued; it resumes this stage from the saved step"


def node_local_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` looks local to this node (a tmpfs, /tmp, ...), or None. Network filesystems and
    ordinary disks pass: whether a disk is shared is not visible from one node."""
    p = Path(path).resolve()
    best, fstype = "", ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            if (p == Path(mount) or Path(mount) in p.parents) and len(mount) > len(best):
                best, fstype = mount, fields[2]
    except OSError:
        pass
    if fstype in NODE_LOCAL_FILESYSTEMS:
        return f"on a {fstype} filesystem ({best})"
    for local in NODE_LOCAL_DIRS:
        if p == Path(local) or Path(local) in p.parents:
            return f"under {local}"
    return None


def warn_if_cache_is_node_local(cache_dir: str | os.PathLike) -> None:
    """Under Slurm, one line when ``paths.cache_dir`` looks local to the node: a requeued job (or the
    next job of a sweep) may start on another node and would not find the resume checkpoints or the
    finished stages there."""
    if slurm_job_id() is None:
        return
    reason = node_local_reason(cache_dir)
    if reason is not None:
        log.warning("paths.cache_dir=%s is %s, local to this node: a requeued Slurm job on another node "
                    "starts its stages again; put the cache on storage every node sees", cache_dir, reason)
