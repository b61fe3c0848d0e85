"""Translate only at night: a per-image day/night gate in front of the night->day translator.

night2day_inference pushes every test image through the night->day generator, which damages
images that are already daytime (experiments/camvid_dusk: -12.6 mIoU on CamVid's day test). A
deployed system sees both and must decide per frame. The gate is the simplest thing that can work:
an image's mean luma (ITU-R BT.601) against a threshold fitted on the translator's own unlabelled
day and night training images (the threshold with the best balanced accuracy there), so nothing
labelled and nothing of a test set is used to fit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

# BT.601 luma weights for R, G, B.
LUMA = (0.299, 0.587, 0.114)


def mean_luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] -> (N,) mean luma in [0, 1]."""
    w = torch.tensor(LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.float() * w).sum(1).mean((1, 2))


def fit_threshold(day: Sequence[float], night: Sequence[float]) -> tuple[float, float, float]:
    """(threshold, day accuracy, night accuracy): "night" below the threshold.

    Candidates are the midpoints between neighbouring sorted values; the one with the best
    balanced accuracy wins (the lowest such midpoint on ties, so the gate translates only what is
    clearly dark).
    """
    if not day or not night:
        raise ValueError(f"the gate needs day and night images; got {len(day)} day and "
                         f"{len(night)} night")
    values = sorted(set(day) | set(night))
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)] or [values[0]]
    best = None
    for t in candidates:
        day_acc = sum(v >= t for v in day) / len(day)
        night_acc = sum(v < t for v in night) / len(night)
        score = (day_acc + night_acc) / 2
        if best is None or score > best[0]:
            best = (score, t, day_acc, night_acc)
    _, t, day_acc, night_acc = best
    return float(t), float(day_acc), float(night_acc)


@dataclass(frozen=True)
class BrightnessGate:
    """Night when the mean luma is below ``threshold``; ``fit_*`` are its accuracies on the
    images it was fitted on (the translator's day and night training images)."""

    threshold: float
    fit_day_acc: float
    fit_night_acc: float
    fit_images: int

    def decide(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) booleans, True for night: the images to translate (SegmentationPipeline's gate)."""
        return mean_luma(images) < self.threshold

    def to_dict(self) -> dict:
        return {"kind": "mean_luma", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> BrightnessGate:
        return cls(**{k: v for k, v in d.items() if k != "kind"})
