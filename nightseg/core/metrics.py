"""Segmentation scores as the paper reports them, from a torchmetrics confusion matrix.

torchmetrics accumulates the confusion matrix (ignoring label 255, synchronised across DDP
processes; counted by :class:`ConfusionMatrix`, never by torchmetrics' dense deterministic-mode
path); the scores follow the Cityscapes convention: a class that neither occurs in the ground
truth nor is predicted has no IoU (NaN, reported as null) and is left out of the mean, and mean
class accuracy averages over the classes present in the ground truth. Values are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.utilities import dim_zero_cat


def nan_to_none(x: float) -> float | None:
    """JSON has no NaN: classes absent from a test set are reported as null."""
    return None if x != x else float(x)


class ConfusionMatrix(MulticlassConfusionMatrix):
    """torchmetrics' multiclass confusion matrix (states, DDP reduction, ``compute``), counted with
    ``torch.bincount`` whatever ``torch.use_deterministic_algorithms`` says.

    Under deterministic algorithms (``trainer.deterministic=warn``, recommended on CUDA)
    torchmetrics' ``_bincount`` replaces bincount by comparing every pixel with every one of the
    C**2 bins: an int64 tensor of N x C**2, about 6 GB for 16 images of 270x480 with 19 classes.
    Counting integers gives the same result in any order, and torch's bincount without weights is
    not among the operations deterministic mode refuses or warns about, so it is used here always.
    Ignored pixels go to a bin of their own before the matrix's (no boolean indexing, which would
    wait for the GPU). As in torchmetrics without ``validate_args``, predictions are trusted to be
    class indices below ``num_classes`` (argmax or a class LUT); a value past the matrix's end
    raises.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        target = target.flatten().long()
        bins = 1 + target * n + preds.flatten().long()  # bin 0: ignored pixels
        if self.ignore_index is not None:
            bins = torch.where(target == self.ignore_index, 0, bins)
        counts = torch.bincount(bins, minlength=n * n + 1)
        if counts.numel() != n * n + 1:  # its shape: no further wait for the GPU
            raise ValueError(f"ConfusionMatrix({n}): a prediction or label is not a class index "
                             f"below {n} (nor ignore_index={self.ignore_index})")
        self.confmat += counts[1:].reshape(n, n)


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


class _InIndexOrder(Metric):
    """A mean over images that comes out the same, bit for bit, on any number of processes.

    torchmetrics' PSNR and SSIM add up per-process sums, so under DDP the same images are summed
    in another order and the last digits move. These keep each batch's contribution with the
    dataset index of its first image and reduce in index order, which is the order of a
    one-process evaluation (and, with nightseg's EvalShards, the batches are the same ones).
    States are float32 lists (indices and pixel counts too, exact below 2**24): torchmetrics fills
    the states of a rank without images with float32 placeholders, and the ranks must agree.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("first", default=[], dist_reduce_fx="cat")

    def _ordered(self, *states) -> list[torch.Tensor]:
        order = torch.argsort(dim_zero_cat(self.first), stable=True)
        return [dim_zero_cat(s)[order] for s in states]


class OrderedPSNR(_InIndexOrder):
    """Mean per-image PSNR in dB, as torchmetrics' PeakSignalNoiseRatio(dim=(1, 2, 3)) computes it."""

    def __init__(self, data_range: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("sse", default=[], dist_reduce_fx="cat")
        self.add_state("n_obs", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        diff = preds.float() - target.float()
        self.sse.append(torch.sum(diff * diff, dim=(1, 2, 3)))
        # float32, as the int64 count becomes when sse / count is promoted in torchmetrics
        self.n_obs.append(torch.full_like(self.sse[-1], preds[0].numel()))
        self.first.append(index.reshape(-1).to(self.sse[-1]))  # one entry per image

    def compute(self) -> torch.Tensor:
        sse, n_obs = self._ordered(self.sse, self.n_obs)
        data_range = torch.tensor(float(self.data_range), device=sse.device)
        psnr = 2 * torch.log(data_range) - torch.log(sse / n_obs)
        return torch.mean(psnr * (10 / torch.log(torch.tensor(10.0))))


class OrderedSSIM(_InIndexOrder):
    """Mean SSIM (Gaussian window 11, sigma 1.5), as torchmetrics' StructuralSimilarityIndexMeasure
    computes it: per-batch sums added up in batch order, divided by the number of images."""

    def __init__(self, data_range: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("batch_sum", default=[], dist_reduce_fx="cat")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        ssim = structural_similarity_index_measure(preds, target, data_range=self.data_range,
                                                   reduction="none")
        self.batch_sum.append(ssim.sum().reshape(1))
        self.first.append(index.reshape(-1)[:1].to(ssim))  # one entry per batch
        self.total += preds.shape[0]

    def compute(self) -> torch.Tensor:
        (sums,) = self._ordered(self.batch_sum)
        acc = torch.tensor(0.0, device=sums.device)
        for value in sums:  # one addition per batch, as a one-process running sum
            acc += value
        return acc / self.total


class SetScores:
    """Scores of one validation or test set, accumulated batch by batch on any number of processes.

    The confusion matrix in the set's own class space (``SampleSet.eval_classes``, predictions
    mapped there through ``SampleSet.pred_lut``), and where the set has true day references
    (``SampleSet.has_reference``) PSNR and SSIM of the images the segmenter saw against them;
    with ``gated``, how many images a day/night gate sent through the translator.
    """

    def __init__(self, sample_set, num_classes: int, class_names: Sequence[str], ignore_index: int,
                 device: torch.device | str = "cpu", gated: bool = False):
        from torchmetrics.aggregation import SumMetric

        self.set = sample_set
        self.class_names = list(sample_set.eval_classes or class_names)
        n = len(sample_set.eval_classes) if sample_set.eval_classes else num_classes
        metrics = {"cm": ConfusionMatrix(n, ignore_index=ignore_index, validate_args=False)}
        if sample_set.has_reference:  # raw inputs give the untranslated baseline
            # Means over images, equal on any number of processes (see _InIndexOrder).
            metrics["psnr"] = OrderedPSNR(data_range=1.0)
            metrics["ssim"] = OrderedSSIM(data_range=1.0)
        if gated:  # the day/night gate's decisions, summed over ranks
            metrics["translated"], metrics["images"] = SumMetric(), SumMetric()
        self.metrics = {k: v.to(device) for k, v in metrics.items()}
        self.pred_lut = (None if sample_set.pred_lut is None
                         else torch.as_tensor(sample_set.pred_lut, device=device))

    def update(self, inputs: torch.Tensor, logits: torch.Tensor, batch: dict,
               translated: torch.Tensor | None = None) -> torch.Tensor:
        """Add a batch: ``inputs`` the images the segmenter saw, ``logits`` its output, ``batch``
        the loader's (``mask``, and ``reference``/``index`` on sets with references),
        ``translated`` the gate's per-image decisions. Returns the predictions in the set's
        class space."""
        m = self.metrics
        if "translated" in m and translated is not None:
            m["translated"].update(translated.sum().float())
            m["images"].update(float(translated.numel()))
        if "psnr" in m:
            m["psnr"].update(inputs.float(), batch["reference"], batch["index"])
            m["ssim"].update(inputs.float(), batch["reference"], batch["index"])
        pred = logits.argmax(1)
        if self.pred_lut is not None:
            pred = self.pred_lut.to(pred.device)[pred]
        m["cm"].update(pred, batch["mask"])
        return pred

    def compute(self) -> dict:
        """mIoU, pixel and mean accuracy, per-class IoU (percent); ``psnr``/``ssim`` where
        measured, rounded to 4 digits; ``gate`` = {translated, images, domain} when gated."""
        import warnings

        m = self.metrics
        with warnings.catch_warnings():
            # Under DDP a rank whose share is only a placeholder batch has no updates of its own;
            # compute() still gathers every rank's.
            warnings.filterwarnings("ignore", message=".*before the ``update`` method")
            out = scores_from_confusion(m["cm"].compute(), self.class_names)
            if "psnr" in m:
                out["psnr"] = round(float(m["psnr"].compute()), 4)
                out["ssim"] = round(float(m["ssim"].compute()), 4)
            if "translated" in m:
                out["gate"] = {"translated": int(m["translated"].compute()),
                               "images": int(m["images"].compute()), "domain": self.set.domain}
        return out
