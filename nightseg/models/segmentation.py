"""SegmentationModule: ERF-PSPNet trained with cross-entropy and poly learning-rate decay.

Evaluation follows the paper (Sun et al. 2019, Table 2): mIoU, pixel accuracy and mean class
accuracy per named test set, in percent, plus per-class IoU. When ``input_translator`` is set
(strategy night2day_inference), test images are translated night->day before segmenting, and on
sets with paired true day images the inputs (raw or translated) are scored against them with PSNR
and SSIM.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from nightseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX
from nightseg.metrics import OrderedPSNR, OrderedSSIM, scores_from_confusion
from nightseg.nets.erf_pspnet import ERFPSPNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModule(pl.LightningModule):
    """ERF-PSPNet segmenter. Batches: ``image`` (N,3,H,W) in [0,1], ``mask`` (N,H,W) long."""

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
        channels_last: bool = True,
    ):
        super().__init__()
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
        # Set by the strategy, not hyperparameters: a night->day generator applied to test inputs
        # ([0,1] in, [0,1] out) and the condition name it stands for.
        self.input_translator: nn.Module | None = None
        self.test_condition = "raw"
        self.num_panels = 0  # images per set kept in eval_panels for the strategy's panels
        self.eval_panels: dict[str, dict[str, torch.Tensor]] = {}
        self.eval_results: list[dict] = []
        self._eval_sets: list = []
        self._eval_metrics: list[dict] = []

    # ---- inference -------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) for images in [0, 1]."""
        x = (image - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    # ---- training --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Never empty: training sets replace skipped files (data.on_error=skip), so under DDP
        # every rank returns a loss and steps with the others.
        logits = self(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["mask"], weight=self.class_weight,
                               ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        self._log_skipped(batch, "train")
        return loss

    def _log_skipped(self, batch: dict, stage: str) -> None:
        if batch.get("skipped"):
            self.skipped_files = getattr(self, "skipped_files", 0) + int(batch["skipped"])
            self.log(f"{stage}/skipped_files", float(self.skipped_files), reduce_fx="max")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                               weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        power = self.hparams.poly_power
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / total) ** power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- evaluation ------------------------------------------------------------------------
    def _start_eval(self, sets) -> None:
        """One confusion matrix per evaluation set, in the set's own class space."""
        self._eval_sets = list(sets)
        self._eval_metrics = []
        self.eval_panels = {}
        for s in self._eval_sets:
            n = len(s.eval_classes) if s.eval_classes else self.hparams.num_classes
            m = {"cm": MulticlassConfusionMatrix(n, ignore_index=self.hparams.ignore_index,
                                                validate_args=False)}
            if s.has_reference:  # raw inputs give the untranslated baseline
                # Means over images, equal on any number of processes (see nightseg.metrics).
                m["psnr"] = OrderedPSNR(data_range=1.0)
                m["ssim"] = OrderedSSIM(data_range=1.0)
            if self._gated():  # the day/night gate's decisions, summed over ranks
                m["translated"], m["images"] = SumMetric(), SumMetric()
            self._eval_metrics.append({k: v.to(self.device) for k, v in m.items()})

    def _eval_step(self, batch: dict, batch_idx: int, dataloader_idx: int) -> None:
        if "image" not in batch:  # every file skipped (data.on_error=skip), or a DDP placeholder
            return
        image = batch["image"]
        metrics = self._eval_metrics[dataloader_idx]
        flags = None
        if self.input_translator is not None:
            image = self.input_translator(image).clamp(0, 1)
            if "translated" in metrics:
                flags = self.input_translator.last_translated
                metrics["translated"].update(flags.sum().float())
                metrics["images"].update(float(flags.numel()))
        if "psnr" in metrics:
            metrics["psnr"].update(image.float(), batch["reference"], batch["index"])
            metrics["ssim"].update(image.float(), batch["reference"], batch["index"])
        pred = self(image).argmax(1)
        s = self._eval_sets[dataloader_idx]
        if s.pred_lut is not None:
            pred = torch.as_tensor(s.pred_lut, device=pred.device)[pred]
        metrics["cm"].update(pred, batch["mask"])
        if batch_idx == 0 and self.num_panels > 0:
            k = self.num_panels
            self.eval_panels[s.name] = {
                "input": batch["image"][:k].cpu(), "pred": pred[:k].cpu(), "mask": batch["mask"][:k].cpu(),
                "translated": image[:k].float().cpu() if self.input_translator is not None else None,
                "gate": flags[:k].cpu() if flags is not None else None}

    def _end_eval(self, stage: str) -> list[dict]:
        results = []
        for s, metrics in zip(self._eval_sets, self._eval_metrics, strict=True):
            names = s.eval_classes or self.hparams.class_names
            res = {"test_set": s.name, "condition": self.test_condition}
            with warnings.catch_warnings():
                # Under DDP a rank whose share is only a placeholder batch has no updates of its
                # own; compute() still gathers every rank's.
                warnings.filterwarnings("ignore", message=".*before the ``update`` method")
                res.update(scores_from_confusion(metrics["cm"].compute(), names))
                if "psnr" in metrics:
                    res["psnr"] = round(float(metrics["psnr"].compute()), 4)
                    res["ssim"] = round(float(metrics["ssim"].compute()), 4)
                if "translated" in metrics:
                    res["gate"] = {"translated": int(metrics["translated"].compute()),
                                   "images": int(metrics["images"].compute()), "domain": s.domain}
            prefix = f"{stage}/{s.name}"
            for key in ("miou", "pixel_acc", "mean_acc", "psnr", "ssim"):
                if res.get(key) is not None:
                    self.log(f"{prefix}/{key}", res[key], add_dataloader_idx=False, rank_zero_only=True)
            results.append(res)
        return results

    def _gated(self) -> bool:
        return getattr(self.input_translator, "gate", None) is not None

    def _stage_name(self, base: str) -> str:
        return base if self.test_condition == "raw" else f"{base}_{self.test_condition}"

    def on_validation_epoch_start(self) -> None:
        self._start_eval(self.trainer.datamodule.val_sets)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.eval_results = self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval(self.trainer.datamodule.test_sets)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.eval_results = self._end_eval(self._stage_name("test"))
