"""Dark Zurich (Sakaridis, Dai & Van Gool, ICCV 2019): unlabelled day, twilight and night
drives through Zurich, plus 50 labelled night validation images.

    <root>/rgb_anon/train/{day,night,twilight}/<sequence>/<name>_rgb_anon.png
    <root>/rgb_anon/val/night/<sequence>/<name>_rgb_anon.png
    <root>/gt/val/night/<sequence>/<name>_gt_labelTrainIds.png      (Cityscapes train ids)
    <root>/rgb_anon/test/night/<sequence>/<name>_rgb_anon.png        (no labels: the server scores)

The train, val and test parts are separate downloads; any may be present. The test images are the
prediction-only set ``dark_zurich_test`` (``python -m nightseg.predict format=dark_zurich``).
Twilight images are not used unless ``twilight_as_night`` (the paper's translator sees only day
and night).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, SampleSet
from nightseg.data.folders import (
    check_on_missing,
    empty,
    files,
    layout_error,
    paired,
    require_dirs,
    strip_suffix,
    unlabelled,
)

EXPECTED = ("rgb_anon/train/{day,night}/<sequence>/*_rgb_anon.png and/or rgb_anon/val/night/"
            "<sequence>/*_rgb_anon.png with gt/val/night/<sequence>/*_gt_labelTrainIds.png")
PATTERN = "*/*_rgb_anon.png"


def dark_zurich_val(root: Path, on_missing: str = "raise",
                    resize: tuple[int, int] | None = None) -> SampleSet:
    """The labelled night validation images as the test set ``dark_zurich_val``."""

    def label_of(img: Path) -> Path:
        return (root / "gt/val/night" / img.parent.name
                / (strip_suffix(img.name, "_rgb_anon.png") + "_gt_labelTrainIds.png"))

    images = files(root / "rgb_anon/val/night", PATTERN)
    return SampleSet("dark_zurich_val", paired(images, label_of, on_missing, f"{root} (val night)"),
                     domain="night", resize=resize)


def build_catalog(root: str | Path, twilight_as_night: bool = False,
                  on_missing: str = "raise", resize: Sequence[int] | None = None) -> DataCatalog:
    """translate_day/translate_night from the train part, test = [dark_zurich_val], predict =
    [dark_zurich_test]. ``resize`` = [rows, cols] keeps the val set's own size beside other sources."""
    check_on_missing(on_missing)
    root = require_dirs(root, [], EXPECTED)
    size = tuple(int(v) for v in resize) if resize else None
    train = root / "rgb_anon/train"
    has_val = (root / "rgb_anon/val/night").is_dir()
    test = files(root / "rgb_anon/test/night", PATTERN)
    if not train.is_dir() and not has_val and not test:
        raise layout_error(root, EXPECTED, root / "rgb_anon/train")
    night = files(train / "night", PATTERN)
    if twilight_as_night:
        night += files(train / "twilight", PATTERN)
    return DataCatalog(
        name="dark_zurich",
        class_names=CITYSCAPES_CLASSES,
        translate_day=SampleSet("dark_zurich_day", unlabelled(files(train / "day", PATTERN))),
        translate_night=SampleSet("dark_zurich_night", unlabelled(night)),
        train=empty("dark_zurich_train"),
        test=[dark_zurich_val(root, on_missing, size)] if has_val else [],
        predict=[SampleSet("dark_zurich_test", unlabelled(test), domain="night", resize=size)]
        if test else [],
    )
