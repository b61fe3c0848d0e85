"""Nighttime Driving test set (Dai & Van Gool, ITSC 2018): 50 coarsely labelled night images in
the Cityscapes naming, the paper's second night test set (Table 2, "Nighttime Driving").

    <root>/leftImg8bit/test/night/<name>_leftImg8bit.png
    <root>/gtCoarse_daytime_trainvaltest/test/night/<name>_gtCoarse_labelTrainIds.png

Labels are Cityscapes train ids (255 ignore). The set has only a test role; combine it with a
training source (see conf/data/bdd100k_bdd10k.yaml).
"""

from __future__ import annotations

from pathlib import Path

from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, SampleSet
from nightseg.data.combine import empty, files, paired, require_dirs, strip_suffix

IMAGES = "leftImg8bit/test/night"
LABELS = "gtCoarse_daytime_trainvaltest/test/night"
EXPECTED = f"{IMAGES}/*_leftImg8bit.png and {LABELS}/*_gtCoarse_labelTrainIds.png"


def nighttime_driving_test(root: str | Path, on_missing: str = "raise") -> SampleSet:
    """The 50 labelled night test images as the set ``nighttime_driving``."""
    root = require_dirs(root, [IMAGES, LABELS], EXPECTED)

    def label_of(img: Path) -> Path:
        return root / LABELS / (strip_suffix(img.name, "_leftImg8bit.png")
                                + "_gtCoarse_labelTrainIds.png")

    samples = paired(files(root / IMAGES, "*_leftImg8bit.png"), label_of, on_missing, str(root))
    return SampleSet("nighttime_driving", samples)


def build_catalog(root: str | Path, on_missing: str = "raise") -> DataCatalog:
    """A catalog with only the test role filled."""
    return DataCatalog(
        name="nighttime_driving",
        class_names=CITYSCAPES_CLASSES,
        translate_day=empty("nighttime_driving_day"),
        translate_night=empty("nighttime_driving_night"),
        train=empty("nighttime_driving_train"),
        test=[nighttime_driving_test(root, on_missing)],
    )
