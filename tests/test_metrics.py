"""Scores against a hand-computed example, through the torchmetrics confusion matrix."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from nightseg.metrics import scores_from_confusion


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
