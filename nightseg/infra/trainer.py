"""The Trainer every stage and every evaluation runs in (:func:`make_trainer`): ``cfg.trainer``
as the device resolved it, a rich progress bar, the stage's logger, nightseg's signal handling,
and the process layout each kind of stage needs under DDP."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

from nightseg.core.errors import ConfigError
from nightseg.infra import distributed, preemption
from nightseg.infra.job import Job

GAN_STAGES = ("translator", "teacher")
TRAINING_STAGES = (*GAN_STAGES, "segmenter")


def _no_litlogger_ad(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence what Lightning prints at every Trainer that a user of nightseg can do nothing about:
    the FutureWarning of torch's deprecated LeafSpec, which pytorch-lightning 2.6 still builds in
    its pytree helper (pyproject.toml filters it in tests too), and the advertisement for a hosted
    logger. Called by :func:`make_trainer`, not at import."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_litlogger_ad)


class _ProgressBar(RichProgressBar):
    """Lightning's rich bar, saying "Epoch 0 (budget 500 steps)" where a step budget leaves the
    epochs open (max_epochs=-1), instead of "Epoch 0/-2", and showing the module's
    ``progress_bar_keys`` (its training losses) as of the last batch Lightning logged: a value
    logged with prog_bar=True is read to the host at every batch, a wait for the device at every
    training step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shown: dict[str, float] = {}

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        keys = getattr(pl_module, "progress_bar_keys", ())
        if keys and trainer.training and trainer._logger_connector.should_update_logs:
            metrics = trainer.callback_metrics
            self._shown = {k.rpartition("/")[2]: float(metrics[k]) for k in keys if k in metrics}
        return {**items, **self._shown}

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs < 0 and trainer.max_steps > 0:
            return f"Epoch {current_epoch} (budget {trainer.max_steps} steps)"
        return super()._get_train_description(current_epoch)


def make_trainer(job: Job, stage: str, max_epochs: int | None = None,
                 callbacks: Sequence[pl.Callback] = (), **overrides) -> pl.Trainer:
    """A Trainer from ``cfg.trainer`` with a rich progress bar and the stage's logger."""
    quiet_lightning()
    if stage in TRAINING_STAGES and job.world.spawns and job.world.ddp == "ddp_fork" \
            and torch.cuda.is_initialized():
        # Lightning would stop with a RuntimeError of its own: a process that used CUDA cannot fork.
        raise ConfigError(
            f"trainer.strategy={job.trainer_args().get('strategy')} cannot fork the {stage} stage's "
            "workers: this process already used the GPU (generating night images or evaluating); "
            "use trainer.strategy=ddp (or ddp_spawn), or run the same command again, which takes "
            "the finished stages from the cache and forks before using the GPU")
    kwargs = job.trainer_args()
    kwargs.update(overrides)
    if stage in GAN_STAGES:
        kwargs["strategy"] = distributed.gan_strategy(kwargs.get("strategy"), job.world)
    elif stage not in TRAINING_STAGES and job.world.spawns:
        # ddp_spawn/ddp_fork workers keep their scores and images to themselves: evaluate and
        # generate in this process, on one device.
        kwargs.update(devices=1, num_nodes=1, strategy="auto")
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=job.tracker.stage_logger(stage),
        callbacks=[_ProgressBar(leave=True), preemption.StopOnSignal(), *callbacks],
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=str(job.run_dir),
        enable_model_summary=False,
        **kwargs,
    )
