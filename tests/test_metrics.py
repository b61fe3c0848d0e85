"""Scores against a hand-computed example, through the torchmetrics confusion matrix."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from nightseg.core.metrics import scores_from_confusion


def test_scores_match_hand_computation():
    # 3 classes; class 2 never occurs nor is predicted; 255 is ignored.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])
    cm = MulticlassConfusionMatrix(3, ignore_index=255)(pred, target)
    # Valid pixels: 6. class 0: gt 3, pred 3, tp 2 -> IoU 2/4. class 1: gt 3, pred 3, tp 2 -> 2/4.
    s = scores_from_confusion(cm, ["a", "b", "c"])
    assert s["per_class_iou"]["a"] == pytest.approx(50.0)
    assert s["per_class_iou"]["b"] == pytest.approx(50.0)
    assert s["per_class_iou"]["c"] is None  # absent: left out of the mean, null in JSON
    assert s["miou"] == pytest.approx(50.0)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6, abs=1e-3)
    assert s["mean_acc"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 2, abs=1e-3)


def test_predicted_but_absent_class_counts_as_zero_iou():
    target = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 1, 1])
    cm = MulticlassConfusionMatrix(2)(pred, target)
    s = scores_from_confusion(cm, ["a", "b"])
    assert s["per_class_iou"]["b"] == 0.0
    assert s["miou"] == pytest.approx(25.0)  # (2/4 + 0) / 2
    assert s["mean_acc"] == pytest.approx(50.0)  # only class a is in the ground truth
    assert not math.isnan(s["pixel_acc"])


def _batches(n_images=7, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    preds, target = torch.rand(n_images, 3, 40, 48, generator=g), torch.rand(n_images, 3, 40, 48, generator=g)
    return [(preds[s:s + batch], target[s:s + batch], torch.arange(s, min(s + batch, n_images)))
            for s in range(0, n_images, batch)]


def test_ordered_psnr_and_ssim_equal_torchmetrics_bit_for_bit():
    """One process, batches in order: the same numbers as torchmetrics' PeakSignalNoiseRatio
    (per image) and StructuralSimilarityIndexMeasure, to the last bit, so single-process results
    do not move."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    from nightseg.core.metrics import OrderedPSNR, OrderedSSIM

    theirs = (PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
              StructuralSimilarityIndexMeasure(data_range=1.0))
    ours = OrderedPSNR(), OrderedSSIM()
    for p, t, index in _batches():
        for m in theirs:
            m.update(p, t)
        for m in ours:
            m.update(p, t, index)
    for a, b in zip(ours, theirs, strict=True):
        assert a.compute().item() == b.compute().item()


def test_ordered_metrics_do_not_depend_on_the_order_of_updates():
    """Under DDP the batches of rank 1 are gathered after those of rank 0; in index order again,
    the result is the one-process result exactly."""
    from nightseg.core.metrics import OrderedPSNR, OrderedSSIM

    batches = _batches(n_images=11, batch=2, seed=1)
    results = []
    for order in (batches, batches[0::2] + batches[1::2], batches[::-1]):
        ours = OrderedPSNR(), OrderedSSIM()
        for p, t, index in order:
            for m in ours:
                m.update(p, t, index)
        results.append([m.compute().item() for m in ours])
    assert results[0] == results[1] == results[2]


def test_confusion_matrix_never_takes_the_dense_deterministic_fallback(monkeypatch):
    """Under deterministic algorithms (trainer.deterministic=warn) torchmetrics' _bincount compares
    every pixel with all C**2 bins (about 6 GB for 16 images of 270x480, 19 classes); nightseg's
    ConfusionMatrix counts with torch.bincount instead and gets torchmetrics' matrix exactly."""
    import importlib

    from nightseg.core.metrics import ConfusionMatrix

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 19, (3, 20, 24), generator=g)
    target[:, :4] = 255
    preds = [torch.randint(0, 19, (3, 20, 24), generator=g) for _ in range(2)]
    reference = MulticlassConfusionMatrix(19, ignore_index=255)
    for p in preds:
        reference.update(p, target)

    dense = []
    tm_cm = importlib.import_module("torchmetrics.functional.classification.confusion_matrix")
    real = tm_cm._bincount
    monkeypatch.setattr(tm_cm, "_bincount",
                        lambda x, minlength=None: dense.append(x.numel()) or real(x, minlength))
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        ours = ConfusionMatrix(19, ignore_index=255, validate_args=False)
        for p in preds:
            ours.update(p, target)
        assert not dense, "torchmetrics' _bincount (dense under deterministic algorithms) was used"
        assert torch.equal(ours.compute(), reference.compute())
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
    with pytest.raises(ValueError, match="not a class index below 19"):
        ours.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 19))  # a label 19 of 0..18
