"""CycleGANModule: unpaired day<->night translation (Zhu et al., ICCV 2017), as in Sun et al. 2019.

Names by domain: ``day2night`` is the paper's G (X=day -> Y=night), ``night2day`` is F,
``disc_day`` is D_X and ``disc_night`` is D_Y.
Least-squares GAN loss, cycle weight 10, identity weight 0.5 (times the cycle weight), a pool of
50 past fakes per discriminator, Adam (2e-4, beta1 0.5), a constant learning rate for
``epochs_constant`` epochs then a linear decay to zero over ``epochs_decay`` epochs. Manual
optimization: one generator step and one discriminator step per batch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from nightseg.models.speed import CompiledTraining, fused_if_cuda

DEFAULT_GENERATOR = {"_target_": "nightseg.nets.generator.ResnetGenerator", "ngf": 64, "n_blocks": 9}
DEFAULT_DISCRIMINATOR = {"_target_": "nightseg.nets.discriminator.PatchDiscriminator",
                         "ndf": 64, "n_layers": 3}


class ImagePool:
    """The history buffer of Shrivastava et al. (2017): discriminators see a mix of current fakes
    and up to ``size`` earlier ones, which damps oscillation."""

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif random.random() < 0.5:
                i = random.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out, 0)


def linear_decay(epochs_constant: int, epochs_decay: int):
    """CycleGAN's schedule as an epoch -> learning-rate factor function."""

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1)

    return factor


class Translator:
    """What strategies need from a translator module: ``day2night``/``night2day`` generators
    working in [-1, 1], and :meth:`translate` for images in [0, 1]."""

    day2night: nn.Module
    night2day: nn.Module

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def translate(self, image: torch.Tensor, direction: str = "night2day") -> torch.Tensor:
        """Translate images in [0, 1]; ``direction`` is "night2day" or "day2night"."""
        net = {"night2day": self.night2day, "day2night": self.day2night}[direction]
        return (net(self._in(image)).float() + 1) / 2


class CycleGANModule(Translator, CompiledTraining, pl.LightningModule):
    """Batches: ``day``, ``night`` (N,3,H,W) in [0,1]. Networks work in [-1,1] internally."""

    progress_bar_keys = ("train/loss_g",)  # shown as of the last logged step (nightseg.infra.trainer)
    TRAINED_NETS = ("day2night", "night2day", "disc_day", "disc_night")  # compiled with model.compile

    def __init__(
        self,
        generator: Mapping | None = None,
        discriminator: Mapping | None = None,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        lr: float = 2e-4,
        beta1: float = 0.5,
        epochs_constant: int = 100,
        epochs_decay: int = 100,
        channels_last: bool = True,
        num_sample_images: int = 4,
    ):
        super().__init__()
        generator = dict(generator or DEFAULT_GENERATOR)
        discriminator = dict(discriminator or DEFAULT_DISCRIMINATOR)
        self.save_hyperparameters({"generator": generator, "discriminator": discriminator} | {
            k: v for k, v in locals().items()
            if k not in ("self", "generator", "discriminator", "__class__")})
        self.automatic_optimization = False
        self.day2night = instantiate(generator)
        self.night2day = instantiate(generator)
        self.disc_day = instantiate(discriminator)
        self.disc_night = instantiate(discriminator)
        if channels_last:
            for net in (self.day2night, self.night2day, self.disc_day, self.disc_night):
                net.to(memory_format=torch.channels_last)
        self.pool_day = ImagePool(pool_size)
        self.pool_night = ImagePool(pool_size)
        self.sample_batch: dict[str, torch.Tensor] | None = None

    @property
    def max_epochs(self) -> int:
        return self.hparams.epochs_constant + self.hparams.epochs_decay

    # ---- training --------------------------------------------------------------------------
    @staticmethod
    def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        pred = pred.float()
        return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        # Never empty: UnpairedDataset replaces skipped files (data.on_error=skip), so under DDP
        # every rank runs both backward passes with the others.
        if self.sample_batch is None:
            n = self.hparams.num_sample_images
            self.sample_batch = {k: batch[k][:n].detach().clone() for k in ("day", "night")}
        opt_g, opt_d = self.optimizers()
        day, night = self._in(batch["day"]), self._in(batch["night"])
        hp = self.hparams
        day2night, night2day = self.train_net("day2night"), self.train_net("night2day")
        disc_day, disc_night = self.train_net("disc_day"), self.train_net("disc_night")

        # Generators: fool both discriminators, reconstruct through the cycle, keep identity.
        self.toggle_optimizer(opt_g)
        fake_night = day2night(day)
        fake_day = night2day(night)
        loss_gan = self._lsgan(disc_night(fake_night), True) + self._lsgan(disc_day(fake_day), True)
        loss_cycle = (F.l1_loss(night2day(fake_night).float(), day.float())
                      + F.l1_loss(day2night(fake_day).float(), night.float())) * hp.lambda_cycle
        loss_g = loss_gan + loss_cycle
        if hp.lambda_identity > 0:
            loss_idt = (F.l1_loss(night2day(day).float(), day.float())
                        + F.l1_loss(day2night(night).float(), night.float()))
            loss_idt = loss_idt * hp.lambda_cycle * hp.lambda_identity
            loss_g = loss_g + loss_idt
        else:
            loss_idt = torch.zeros((), device=self.device)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        # Discriminators: real -> 1, pooled fakes -> 0; halved so they learn slower than G.
        self.toggle_optimizer(opt_d)
        pooled_night = self.pool_night.query(fake_night.detach())
        pooled_day = self.pool_day.query(fake_day.detach())
        loss_d_night = 0.5 * (self._lsgan(disc_night(night), True)
                              + self._lsgan(disc_night(pooled_night), False))
        loss_d_day = 0.5 * (self._lsgan(disc_day(day), True)
                            + self._lsgan(disc_day(pooled_day), False))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d_night + loss_d_day)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        n = batch["day"].shape[0]
        self.log_dict({"train/loss_gan": loss_gan, "train/loss_cycle": loss_cycle,
                       "train/loss_identity": loss_idt, "train/loss_d_day": loss_d_day,
                       "train/loss_d_night": loss_d_night}, batch_size=n)
        self.log("train/loss_g", loss_g, batch_size=n)

    def on_train_epoch_end(self) -> None:
        for sched in self.lr_schedulers():
            sched.step()
        self.log("train/lr", self.optimizers()[0].param_groups[0]["lr"])
        self._log_samples()

    def _log_samples(self) -> None:
        """An image grid of the fixed samples: day | day->night | night | night->day."""
        if self.sample_batch is None or self.logger is None:
            return
        from nightseg.core.visualize import panel, to_uint8
        from nightseg.infra.tracking import log_image

        was_training = self.training
        self.eval()
        with torch.no_grad():
            day = self.sample_batch["day"].to(self.device)
            night = self.sample_batch["night"].to(self.device)
            d2n, n2d = self.translate(day, "day2night"), self.translate(night, "night2day")
        self.train(was_training)
        rows = [[to_uint8(a), to_uint8(b), to_uint8(c), to_uint8(d)]
                for a, b, c, d in zip(day, d2n, night, n2d, strict=True)]
        log_image(self.logger, "samples", panel(rows), step=self.global_step,
                  caption="day | day->night | night | night->day")

    def configure_optimizers(self):
        hp = self.hparams
        gen_params = list(self.day2night.parameters()) + list(self.night2day.parameters())
        disc_params = list(self.disc_day.parameters()) + list(self.disc_night.parameters())
        opt_g = torch.optim.Adam(gen_params, lr=hp.lr, betas=(hp.beta1, 0.999), **fused_if_cuda(gen_params))
        opt_d = torch.optim.Adam(disc_params, lr=hp.lr, betas=(hp.beta1, 0.999), **fused_if_cuda(disc_params))
        factor = linear_decay(hp.epochs_constant, hp.epochs_decay)
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], scheds
