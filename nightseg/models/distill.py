"""DistillationModule: a light day<->night translator trained to reproduce a trained CycleGAN.

The teacher's two generators are frozen; for every day image the student's ``day2night`` learns
the teacher's day->night output, for every night image the student's ``night2day`` the teacher's
night->day output (an L1 loss in the generators' [-1, 1] range, plus an optional L1 on 2x
downsampled images that weighs low-frequency colour and brightness, which dominate night->day).
Knowledge distillation for image-to-image GANs as in Aguinaldo et al. 2019 / Li et al. 2020
(GAN Compression), without the adversarial term. The teacher is given at fit time and never
saved with the student, so the student loads alone and translates like a CycleGANModule.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from nightseg.models.cyclegan import CycleGANModule, Translator, linear_decay
from nightseg.models.speed import CompiledTraining, fused_if_cuda


class DistillationModule(Translator, CompiledTraining, pl.LightningModule):
    """Student generators ``day2night``/``night2day``; batches ``day``, ``night`` in [0, 1]."""

    progress_bar_keys = ("train/loss",)  # shown as of the last logged step (nightseg.infra.trainer)
    TRAINED_NETS = ("day2night", "night2day")  # the students, compiled with model.compile

    def __init__(
        self,
        generator: Mapping,
        lr: float = 1e-3,
        epochs_constant: int = 5,
        epochs_decay: int = 5,
        lowres_weight: float = 1.0,
        channels_last: bool = True,
        teacher: Mapping | None = None,
    ):
        """``teacher`` is the teacher's translator config; it determines the cache key (the
        teacher stage) and is kept in the hyperparameters for the record."""
        super().__init__()
        generator = dict(generator)
        self.save_hyperparameters({"generator": generator} | {
            k: v for k, v in locals().items() if k not in ("self", "generator", "__class__")})
        self.day2night = instantiate(generator)
        self.night2day = instantiate(generator)
        if channels_last:
            for net in (self.day2night, self.night2day):
                net.to(memory_format=torch.channels_last)
        # Not a registered submodule: the teacher is neither trained nor saved with the student.
        self._teacher: list[CycleGANModule] = []

    def set_teacher(self, teacher: CycleGANModule) -> None:
        teacher.eval().requires_grad_(False)
        self._teacher = [teacher]

    @property
    def max_epochs(self) -> int:
        return self.hparams.epochs_constant + self.hparams.epochs_decay

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self._teacher:
            raise RuntimeError("DistillationModule needs a teacher: call set_teacher() before fit")
        self._teacher[0].to(self.device)

    def _loss(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        student, target = student.float(), target.float()
        loss = F.l1_loss(student, target)
        if self.hparams.lowres_weight > 0:
            loss = loss + self.hparams.lowres_weight * F.l1_loss(
                F.avg_pool2d(student, 2), F.avg_pool2d(target, 2))
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Never empty: UnpairedDataset replaces skipped files (data.on_error=skip).
        teacher = self._teacher[0]
        day, night = self._in(batch["day"]), self._in(batch["night"])
        with torch.no_grad():
            target_night = teacher.day2night(day)
            target_day = teacher.night2day(night)
        loss_d2n = self._loss(self.train_net("day2night")(day), target_night)
        loss_n2d = self._loss(self.train_net("night2day")(night), target_day)
        n = batch["day"].shape[0]
        self.log_dict({"train/loss_day2night": loss_d2n, "train/loss_night2day": loss_n2d},
                      batch_size=n)
        loss = loss_d2n + loss_n2d
        self.log("train/loss", loss, batch_size=n)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=(0.9, 0.999),
                               **fused_if_cuda(self.parameters()))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(hp.epochs_constant, hp.epochs_decay))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
