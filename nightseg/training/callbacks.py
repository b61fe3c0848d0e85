"""The callbacks of every training stage's Trainer beyond Lightning's own: the resume checkpoint
at a stop signal, and a stop at a non-finite loss."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nightseg.core.errors import TrainingError
from nightseg.infra import preemption

log = logging.getLogger(__name__)


class CheckpointOnSigterm(pl.Callback):
    """SIGTERM (what Slurm and other schedulers send before preemption or at the time limit), or
    USR1/USR2 (the requeue signals, nightseg.infra.preemption): Lightning stops training after the
    current step with SIGTERMException; this saves that step as the stage's resume checkpoint, so
    the rerun or requeued job loses nothing (run.main then exits 128 + the signal). Other
    exceptions keep the last periodic checkpoint: the state that raised them (a NaN loss, a bug)
    is not one to resume from. Nor is a stop before training started: the module is not restored
    from the resume checkpoint yet, and saving it would overwrite that checkpoint."""

    def __init__(self, path: Path, stage: str = ""):
        self.path = path
        self.stage = stage
        self.started = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
        if trainer.global_step > 0:
            log.info("stage %s: resumed at step %d", self.stage, trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self.started:
            trainer.save_checkpoint(self.path)
            sig = preemption.pending()
            log.warning("%s: training stopped at step %d; resume checkpoint saved to %s",
                        sig.name if sig else "SIGTERM", trainer.global_step, self.path)


class StopOnNonFiniteLoss(preemption.StopFlag):
    """A NaN or infinite training loss stops the stage, naming the stage, epoch and step: training
    on would publish NaN weights that every later stage and score silently uses.

    Watched on the device (:class:`nightseg.infra.preemption.StopFlag`): each training loss's
    first non-finite value is kept there, and read only where the ranks agree on stopping (every
    ``trainer.log_every_n_steps`` steps, before every checkpoint is saved, at the end of training:
    nightseg.infra.preemption.StopOnSignal), so a non-finite loss stops the stage before its weights
    are published or any checkpoint is written after it, and the resume checkpoint stays the last
    one from before it. Every rank takes part in the decision (a rank that stopped alone would
    leave the others waiting in DDP's next all-reduce)."""

    def __init__(self, stage: str):
        self.stage = stage
        self._first: dict[str, torch.Tensor] = {}  # per loss: its first non-finite value, else its last

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first = {}

    def update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs) -> None:
        if isinstance(outputs, dict) and torch.is_tensor(outputs.get("loss")):
            losses = {"train/loss": outputs["loss"]}  # this step's loss
        else:  # manual optimization (the GANs): the losses it logged
            losses = {k: v for k, v in trainer.callback_metrics.items()
                      if k.startswith("train/loss") and torch.is_tensor(v)}
        for key, value in losses.items():
            value = value.detach().float()
            first = self._first.get(key)
            self._first[key] = value if first is None else torch.where(torch.isfinite(first), value, first)

    def local_flag(self, device: torch.device) -> torch.Tensor:
        if not self._first:
            return torch.zeros((), device=device)
        return torch.stack([~torch.isfinite(v).all() for v in self._first.values()]).any().to(device)

    def stop(self, trainer: pl.Trainer) -> None:
        bad = {k: float(v) for k, v in self._first.items() if not torch.isfinite(v).all()}
        what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "on another rank"
        raise TrainingError(
            f"stage {self.stage}: the training loss is not finite ({what}) in epoch "
            f"{trainer.current_epoch}, by step {trainer.global_step}; nothing was published and the "
            "resume checkpoint is from before that step. Lower the learning rate, or check the "
            "training images and labels")
