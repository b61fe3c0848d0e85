"""The class tables every dataset family maps its labels to."""

from __future__ import annotations

IGNORE_INDEX = 255  # label value of unlabelled pixels in every dataset's masks
# data.on_error: raise (stop at a bad file) or skip (log, count and leave it out).
ON_ERROR_CHOICES = ("raise", "skip")

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
