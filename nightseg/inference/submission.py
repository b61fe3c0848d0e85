"""A benchmark's submission, written by ``python -m nightseg.predict format=acdc|dark_zurich``.

Both servers score the 19 Cityscapes classes from one PNG per test image, named as the image
(``<sequence>_frame_<n>_rgb_anon.png``), in a zip (README, Benchmarks, cites the instructions
followed):

- ``acdc``: ``labelTrainIds/<name>.png``, train ids 0-18 (``submission.ids=label``:
  ``labelIds/<name>.png`` with Cityscapes label ids 0-33 instead);
- ``dark_zurich``: ``labelTrainIds/<name>.png`` (train ids), ``labelTrainIds_invalid/<name>.png``
  (the same, with 255 where the confidence is below ``submission.invalid_below``; none without
  it) and ``confidence/<name>.png`` (the winning class's softmax probability as uint16,
  0-65535), the three folders the UIoU challenge reads.

Label PNGs are plain 8-bit grey (no palette: a reader that applies palettes still sees the ids),
at the image's own size; each file and the zip are written atomically.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from nightseg.core.errors import ConfigError
from nightseg.core.files import PngPool, atomic_path
from nightseg.data.catalog import CITYSCAPES_CLASSES
from nightseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from nightseg.inference.frames import Frame, Item

FORMATS = ("files", "acdc", "dark_zurich")
ID_SPACES = ("train", "label")
IMAGE_SUFFIX = "_rgb_anon"  # both benchmarks' test images end with it


def train_to_label_ids() -> np.ndarray:
    """256-entry LUT: train id 0-18 -> its Cityscapes label id (cityscapesScripts' labels.py)."""
    lut = np.zeros(256, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[train_id] = label_id
    return lut


def check_options(fmt: str, ids: str, invalid_below) -> None:
    """One-line errors for the format options, before anything is read."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: choose files (masks, overlays), acdc or dark_zurich "
                          "(a benchmark's submission)")
    if ids not in ID_SPACES:
        raise ConfigError(f"submission.ids={ids}: choose train (train ids 0-18) or label "
                          "(Cityscapes label ids 0-33)")
    if fmt == "dark_zurich" and ids != "train":
        raise ConfigError("submission.ids=label: the Dark Zurich server reads train ids "
                          "(labelTrainIds/); use submission.ids=train")
    if invalid_below is not None and not (isinstance(invalid_below, float | int)
                                          and 0 <= invalid_below <= 1):
        raise ConfigError(f"submission.invalid_below={invalid_below}: a confidence from 0 to 1, "
                          "or null")


def check_inputs(fmt: str, items: Sequence[Item]) -> None:
    """A submission is one PNG per benchmark test image: no videos, every name ``*_rgb_anon``,
    no name twice (the zip's folders are flat)."""
    videos = [it for it in items if it.is_video]
    if videos:
        raise ConfigError(f"format={fmt}: {videos[0].path} is a video; give the benchmark's test "
                          "images (e.g. input=<acdc>/rgb_anon/night/test)")
    other = [it for it in items if not PurePosixPath(it.name).name.endswith(IMAGE_SUFFIX)]
    if other:
        raise ConfigError(f"format={fmt}: {other[0].path} is not a test image (*{IMAGE_SUFFIX}.png); "
                          "give the test folder, e.g. input=<acdc>/rgb_anon/night/test or "
                          "input=<dark_zurich>/rgb_anon/test/night (not the *_ref references)")
    seen: dict[str, Path] = {}
    for it in items:
        base = PurePosixPath(it.name).name
        if base in seen:
            raise ConfigError(f"format={fmt}: {it.path} and {seen[base]} have the same name; "
                              "give one benchmark's test images once")
        seen[base] = it.path


def check_classes(fmt: str, names: Sequence[str]) -> None:
    if tuple(names) != tuple(CITYSCAPES_CLASSES):
        raise ConfigError(f"format={fmt}: the segmenter predicts {len(names)} classes, not the 19 "
                          "Cityscapes classes the benchmark scores; name a 19-class segmenter")


class SubmissionWriter:
    """Writes each frame's submission files below ``out_dir``; :meth:`close` waits for them,
    :meth:`package` packs them into ``<out_dir>/<format>_submission.zip``."""

    MAX_PENDING = 64

    def __init__(self, out_dir: Path, fmt: str, ids: str = "train", zip: bool = True,
                 invalid_below: float | None = None, threads: int = 2):
        self.out_dir, self.fmt, self.zip = out_dir, fmt, zip
        self.invalid_below = invalid_below
        self.lut = train_to_label_ids() if ids == "label" else None
        self.label_dir = "labelIds" if ids == "label" else "labelTrainIds"
        self.folders = [self.label_dir]
        if fmt == "dark_zurich":
            self.folders += ["labelTrainIds_invalid", "confidence"]
        self.needs_confidence = fmt == "dark_zurich"
        self.names: list[str] = []
        self.pngs = PngPool(threads, self.MAX_PENDING)

    def _submit(self, img: Image.Image, folder: str, name: str) -> None:
        self.pngs.save(img, self.out_dir / folder / name)

    def write(self, frame: Frame, pred: np.ndarray, translated: np.ndarray | None,
              confidence: np.ndarray | None = None) -> None:
        name = f"{PurePosixPath(frame.out).name}.png"
        self.names.append(name)
        ids = pred.astype(np.uint8)
        self._submit(Image.fromarray(ids if self.lut is None else self.lut[ids], mode="L"),
                     self.label_dir, name)
        if self.fmt == "dark_zurich":
            invalid = ids.copy()
            if self.invalid_below is not None:
                invalid[confidence < self.invalid_below] = 255
            self._submit(Image.fromarray(invalid, mode="L"), "labelTrainIds_invalid", name)
            conf = np.round(np.clip(confidence, 0, 1) * 65535).astype(np.uint16)
            self._submit(Image.fromarray(conf), "confidence", name)

    def close(self) -> None:
        """Wait for the last files (and raise what failed)."""
        self.pngs.close()

    def package(self) -> Path | None:
        """The zip of the written folders (after :meth:`close`), or None without ``zip``."""
        if not self.zip or not self.names:
            return None
        path = self.out_dir / f"{self.fmt}_submission.zip"
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for folder in self.folders:
                for name in sorted(self.names):
                    archive.write(self.out_dir / folder / name, f"{folder}/{name}")
        return path
