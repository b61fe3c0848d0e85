"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis, Dai & Van Gool, ICCV
2021): fog, night, rain and snow drives, each adverse image with fine Cityscapes labels (train and
val; test labels are withheld for the benchmark's server) and a daytime image of the same place.

    <root>/rgb_anon/<condition>/<split>/<sequence>/<name>_rgb_anon.png          split: train, val, test
    <root>/rgb_anon/<condition>/<split>_ref/<sequence>/<name>_rgb_ref_anon.png  the daytime references
    <root>/gt/<condition>/<split>/<sequence>/<name>_gt_labelTrainIds.png        (Cityscapes train ids)
    <root>/gt/<condition>/<split>/<sequence>/<name>_gt_invIds.png               (1: invalid pixel)

``rgb_anon_trainvaltest.zip`` and ``gt_trainval.zip`` extracted into one root. Roles: the
translator's night domain is the train images of ``conditions`` (unlabelled), its day domain their
daytime references (``day="ref"``); the val images are the labelled test sets ``acdc_<condition>_val``;
the test images (no labels) are prediction-only sets ``acdc_<condition>_test``. ACDC has no labelled
day images: combine it with Cityscapes (conf/data/acdc.yaml).

``invalid``: ``ignore`` reads the pixels an invalid mask marks as IGNORE_INDEX, so they are not
scored; ``score`` scores them with their labels (the annotators labelled them with the help of the
reference image). README, Benchmarks, says which one published code uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nightseg.core.errors import ConfigError
from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, Sample, SampleSet
from nightseg.data.folders import (
    check_on_missing,
    complete,
    empty,
    files,
    layout_error,
    require_dirs,
    strip_suffix,
    unlabelled,
)

CONDITIONS = ("fog", "night", "rain", "snow")
INVALID_CHOICES = ("ignore", "score")
DAY_CHOICES = ("ref", "none")
IMAGE_SUFFIX = "_rgb_anon.png"
REF_SUFFIX = "_rgb_ref_anon.png"
LABEL_SUFFIX = "_gt_labelTrainIds.png"
INVALID_SUFFIX = "_gt_invIds.png"
EXPECTED = ("rgb_anon/<condition>/{train,val,test}/<sequence>/*_rgb_anon.png (and {train,val,test}"
            "_ref/ with *_rgb_ref_anon.png), gt/<condition>/{train,val}/<sequence>/"
            "*_gt_labelTrainIds.png and *_gt_invIds.png")


def _conditions(conditions: str | Sequence[str]) -> list[str]:
    picked = [conditions] if isinstance(conditions, str) else list(conditions)
    bad = [c for c in picked if c not in CONDITIONS]
    if bad or not picked:
        raise ConfigError(f"data.conditions={picked}: ACDC's conditions are {', '.join(CONDITIONS)}; "
                          "give one or a list, e.g. data.conditions=[night]")
    return picked


def _size(resize: Sequence[int] | None) -> tuple[int, int] | None:
    return tuple(int(v) for v in resize) if resize else None


def images(root: Path, condition: str, split: str) -> list[Path]:
    """One condition's images of ``split`` (train, val, test or <split>_ref), in name order."""
    suffix = REF_SUFFIX if split.endswith("_ref") else IMAGE_SUFFIX
    return files(root / "rgb_anon" / condition / split, f"*/*{suffix}")


def labelled_split(root: Path, condition: str, split: str, on_missing: str = "raise",
                   invalid: str = "ignore", resize: Sequence[int] | None = None) -> SampleSet:
    """``acdc_<condition>_<split>``: images with their labels and, with ``invalid=ignore``,
    their invalid masks."""
    gt = root / "gt" / condition / split
    found = images(root, condition, split)
    if found and not gt.is_dir():
        raise layout_error(root, EXPECTED + " (gt_trainval.zip)", gt)

    def sample(img: Path) -> Sample:
        stem = gt / img.parent.name / strip_suffix(img.name, IMAGE_SUFFIX)
        mask = Path(f"{stem}{INVALID_SUFFIX}") if invalid == "ignore" else None
        return Sample(img, Path(f"{stem}{LABEL_SUFFIX}"), invalid=mask)

    samples = complete([sample(p) for p in found], on_missing, f"{root} ({condition} {split})")
    return SampleSet(f"acdc_{condition}_{split}", samples, resize=_size(resize),
                     domain="night" if condition == "night" else None)


def build_catalog(root: str | Path, conditions: str | Sequence[str] = ("night",),
                  invalid: str = "ignore", day: str = "ref", on_missing: str = "raise",
                  resize: Sequence[int] | None = None) -> DataCatalog:
    """translate_night: the train images of ``conditions``; translate_day: their daytime
    references (``day=ref``) or none; test: each condition's labelled val set; predict: each
    condition's test images. ``resize`` = [rows, cols] keeps ACDC's own size beside other sources."""
    check_on_missing(on_missing)
    if invalid not in INVALID_CHOICES:
        raise ConfigError(f"data.invalid_pixels={invalid!r}: choose ignore (ACDC's invalid pixels "
                          "are not scored) or score")
    if day not in DAY_CHOICES:
        raise ConfigError(f"ACDC day={day!r}: choose ref (the daytime references of the train "
                          "images) or none")
    picked = _conditions(conditions)
    root = require_dirs(root, [f"rgb_anon/{c}" for c in picked], EXPECTED)
    size = _size(resize)
    night = [p for c in picked for p in images(root, c, "train")]
    refs = [p for c in picked for p in images(root, c, "train_ref")] if day == "ref" else []
    test = [labelled_split(root, c, "val", on_missing, invalid, resize) for c in picked]
    predict = [SampleSet(f"acdc_{c}_test", unlabelled(images(root, c, "test")), resize=size,
                         domain="night" if c == "night" else None) for c in picked]
    test, predict = [s for s in test if s.samples], [s for s in predict if s.samples]
    if not (night or test or predict):
        raise layout_error(root, EXPECTED, root / "rgb_anon" / picked[0] / "train")
    tag = "_".join(picked)
    return DataCatalog(
        name="acdc",
        class_names=CITYSCAPES_CLASSES,
        translate_day=SampleSet(f"acdc_{tag}_ref", unlabelled(refs), resize=size) if refs
        else empty(f"acdc_{tag}_day"),
        translate_night=SampleSet(f"acdc_{tag}_train", unlabelled(night), resize=size),
        train=empty("acdc_train"),
        test=test,
        predict=predict,
    )
