"""Segmentation scores as the paper reports them, from a torchmetrics confusion matrix.

torchmetrics accumulates the confusion matrix (ignoring label 255, synchronised across DDP
processes); the scores follow the Cityscapes convention: a class that neither occurs in the ground
truth nor is predicted has no IoU (NaN, reported as null) and is left out of the mean, and mean
class accuracy averages over the classes present in the ground truth. Values are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nightseg.utils import nan_to_none


def scores_from_confusion(cm: torch.Tensor, class_names: Sequence[str]) -> dict:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU (percent) from ``cm``.

    ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``.
    """
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(1)
    pred = cm.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
    total = cm.sum()
    return {
        "miou": _pct(torch.nanmean(iou)),
        "pixel_acc": _pct(tp.sum() / total) if total > 0 else None,
        "mean_acc": _pct(torch.nanmean(acc)),
        "per_class_iou": {name: _pct(v) for name, v in zip(class_names, iou, strict=True)},
    }


def _pct(x: torch.Tensor) -> float | None:
    return nan_to_none(round(float(x) * 100.0, 4))
