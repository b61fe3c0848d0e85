"""SegmentationModule: ERF-PSPNet trained with cross-entropy and poly learning-rate decay, and
validated on the named validation sets with the scores of the paper (Sun et al. 2019, Table 2:
mIoU, pixel accuracy, mean class accuracy; nightseg.core.metrics.SetScores). Test-time evaluation, raw
or translated night->day first, is nightseg.inference.evaluation's: this module holds no test-time state.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from nightseg.core.metrics import SetScores
from nightseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX
from nightseg.infra.hardware import resolve_channels_last
from nightseg.models.speed import CompiledTraining, fused_if_cuda
from nightseg.nets.erf_pspnet import ERFPSPNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModule(CompiledTraining, pl.LightningModule):
    """ERF-PSPNet segmenter. Batches: ``image`` (N,3,H,W) in [0,1], ``mask`` (N,H,W) long."""

    progress_bar_keys = ("train/loss",)  # shown as of the last logged step (nightseg.infra.trainer)
    TRAINED_NETS = ("net",)  # compiled with model.compile

    def __init__(
        self,
        num_classes: int = 19,
        class_names: Sequence[str] | None = None,
        pool_bins: Sequence[int] = (1, 2, 4, 8),
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        poly_power: float = 0.9,
        max_epochs: int | None = 10,
        max_steps: int | None = None,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        channels_last: bool | str = True,
    ):
        super().__init__()
        # "auto" (conf/model/segmenter/erf_pspnet.yaml) as a job resolves it before keying the stage;
        # resolved here too for modules built outside a job, and saved as the bool it became.
        channels_last = resolve_channels_last(channels_last)
        if class_names is None:
            class_names = CITYSCAPES_CLASSES[:num_classes] if num_classes <= 19 else [
                f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"model.segmenter.class_weights has {len(class_weights)} values; "
                             f"give one per class ({num_classes}) or null")
        self.save_hyperparameters({"class_names": list(class_names)} | {
            k: v for k, v in locals().items() if k not in ("self", "class_names", "__class__")})
        self.net = ERFPSPNet(num_classes=num_classes, pool_bins=tuple(pool_bins))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weight", weight, persistent=False)
        self._val_scores: list[SetScores] = []

    # ---- inference -------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) for images in [0, 1]."""
        return self._logits(image, self.net)

    def _logits(self, image: torch.Tensor, net) -> torch.Tensor:
        x = (image - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return net(x)

    # ---- training --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Never empty: training sets replace skipped files (data.on_error=skip), so under DDP
        # every rank returns a loss and steps with the others.
        logits = self._logits(batch["image"], self.train_net("net"))
        loss = F.cross_entropy(logits.float(), batch["mask"], weight=self.class_weight,
                               ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, batch_size=batch["image"].shape[0])
        self._log_skipped(batch, "train")
        return loss

    def _log_skipped(self, batch: dict, stage: str) -> None:
        if batch.get("skipped"):
            self.skipped_files = getattr(self, "skipped_files", 0) + int(batch["skipped"])
            self.log(f"{stage}/skipped_files", float(self.skipped_files), reduce_fx="max")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                               weight_decay=self.hparams.weight_decay, **fused_if_cuda(self.parameters()))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        power = self.hparams.poly_power
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / total) ** power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        hp = self.hparams
        self._val_scores = [SetScores(s, hp.num_classes, hp.class_names, hp.ignore_index, self.device)
                            for s in self.trainer.datamodule.val_sets]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "image" not in batch:  # every file skipped (data.on_error=skip), or a DDP placeholder
            return
        image = batch["image"]
        self._val_scores[dataloader_idx].update(image, self(image), batch)

    def on_validation_epoch_end(self) -> None:
        for scores in self._val_scores:
            res = scores.compute()
            for key in ("miou", "pixel_acc", "mean_acc", "psnr", "ssim"):
                if res.get(key) is not None:
                    self.log(f"val/{scores.set.name}/{key}", res[key], add_dataloader_idx=False,
                             rank_zero_only=True)
