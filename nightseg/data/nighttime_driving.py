"""Nighttime Driving test set (Dai & Van Gool, ITSC 2018): 50 coarsely labelled night images of
Zurich in the Cityscapes naming, the paper's second night test set (Table 2, "Nighttime Driving").

    <root>/leftImg8bit/test/night/<name>_leftImg8bit.png
    <root>/gtCoarse_daytime_trainvaltest/test/night/<name>_gtCoarse_labelTrainIds.png

Labels are Cityscapes train ids (255 ignore). The set is labelled for testing only; it can also
lend real night images to a translator (``translate_count``): the first ``translate_count`` images
in name order (frame order) become the translator's unlabelled night domain and are never scored.
The test set is every image under ``test_root`` (``root`` by default) whose file name is not
among them, so pointing ``test_root`` at another folder of the same layout re-scores cached models
on it while the translator's images stay those of ``root``.

``classes``: ``cityscapes19`` scores in the 19 train ids; ``camvid11`` reads the labels as CamVid's
11 classes (``camvid.cityscapes_to_camvid_lut``) for a CamVid-trained segmenter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nightseg.core.errors import ConfigError
from nightseg.data.camvid import CAMVID_CLASSES, cityscapes_to_camvid_lut
from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, SampleSet
from nightseg.data.folders import empty, files, paired, require_dirs, strip_suffix, unlabelled

IMAGES = "leftImg8bit/test/night"
LABELS = "gtCoarse_daytime_trainvaltest/test/night"
IMAGE_SUFFIX = "_leftImg8bit.png"
EXPECTED = f"{IMAGES}/*{IMAGE_SUFFIX} and {LABELS}/*_gtCoarse_labelTrainIds.png"
CLASS_CHOICES = ("cityscapes19", "camvid11")


def night_images(root: str | Path) -> list[Path]:
    """The night images under ``root``, sorted by file name (the frame order)."""
    root = require_dirs(root, [IMAGES], EXPECTED)
    return files(root / IMAGES, f"*{IMAGE_SUFFIX}")


def split_night(images: Sequence[Path], translate_count: int) -> tuple[list[Path], list[Path]]:
    """(translator's images, scored images): the first ``translate_count`` in name order, and
    the rest. Deterministic (sorted by name, whatever order ``images`` came in) and disjoint."""
    ordered = sorted(images, key=lambda p: p.name)
    if isinstance(translate_count, bool) or not isinstance(translate_count, int) \
            or not 0 <= translate_count < len(ordered):
        raise ConfigError(f"Nighttime Driving translate_count={translate_count!r} "
                          f"(data.night_translate_count): must be an integer "
                          f"from 0 to {len(ordered) - 1}, leaving at least one of the "
                          f"{len(ordered)} night images to score")
    return ordered[:translate_count], ordered[translate_count:]


def nighttime_driving_test(root: str | Path, on_missing: str = "raise",
                           exclude: Sequence[str] = (), label_lut: list[int] | None = None,
                           resize: Sequence[int] | None = None) -> SampleSet:
    """The labelled night test images under ``root`` (those named in ``exclude`` left out)."""
    root = require_dirs(root, [IMAGES, LABELS], EXPECTED)

    def label_of(img: Path) -> Path:
        return root / LABELS / (strip_suffix(img.name, IMAGE_SUFFIX) + "_gtCoarse_labelTrainIds.png")

    excluded = set(exclude)
    images = [p for p in night_images(root) if p.name not in excluded]
    samples = paired(images, label_of, on_missing, str(root))
    return SampleSet("nighttime_driving", samples, label_lut, domain="night",
                     resize=tuple(int(v) for v in resize) if resize else None)


def build_catalog(root: str | Path, on_missing: str = "raise", test_root: str | Path | None = None,
                  translate_count: int = 0, classes: str = "cityscapes19",
                  resize: Sequence[int] | None = None) -> DataCatalog:
    """Test role: the night images of ``test_root`` (default ``root``) not given to the
    translator; translate_night role: the first ``translate_count`` images of ``root``, unlabelled.
    ``resize`` = [rows, cols] keeps these images' own size in a catalog combined with others."""
    if classes not in CLASS_CHOICES:
        raise ConfigError(f"data.catalog classes={classes!r} for Nighttime Driving: choose one of "
                          f"{', '.join(CLASS_CHOICES)}")
    size = tuple(int(v) for v in resize) if resize else None
    translate, _ = split_night(night_images(root), translate_count)
    class_names, lut = CITYSCAPES_CLASSES, None
    if classes == "camvid11":
        class_names, lut = CAMVID_CLASSES, cityscapes_to_camvid_lut()
    test = nighttime_driving_test(test_root if test_root is not None else root, on_missing,
                                  exclude=[p.name for p in translate], label_lut=lut, resize=size)
    night = SampleSet("nighttime_driving_translate", unlabelled(translate), resize=size) \
        if translate else empty("nighttime_driving_night")
    return DataCatalog(
        name="nighttime_driving",
        class_names=class_names,
        translate_day=empty("nighttime_driving_day"),
        translate_night=night,
        train=empty("nighttime_driving_train"),
        test=[test],
    )
