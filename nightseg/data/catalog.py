"""The one format every dataset family produces: named lists of image (and label) files by role.

A dataset family (synthetic, camvid, bdd, ...) is a function that reads its published layout and
returns a :class:`DataCatalog`. The strategies only ever see catalogs, so every family works with
both strategies. Roles follow the paper: unpaired day and night images for the translator,
labelled day images to train and validate the segmenter, labelled night test sets.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from nightseg.core.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, ON_ERROR_CHOICES
from nightseg.data.prepared import PreparedRef

__all__ = ["CITYSCAPES_CLASSES", "IGNORE_INDEX", "ON_ERROR_CHOICES", "DataCatalog", "Sample", "SampleSet"]

@dataclass(frozen=True)
class Sample:
    """One image file, its label file (None when unlabelled) and, where one exists, the file of
    the same scene in the other domain (the synthetic night test set's true day rendering).
    ``invalid``: a mask of the label's pixels the benchmark does not score (ACDC's
    ``*_gt_invIds.png``: 1 invalid, 0 valid), read as IGNORE_INDEX (:data:`INVALID_LUT`)."""

    image: Path
    label: Path | None = None
    reference: Path | None = None
    invalid: Path | None = None

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass
class SampleSet:
    """A named list of samples with how to read its labels and how to score on it.

    ``label_lut`` maps raw label values to class ids (256 entries, ``IGNORE_INDEX`` for ignored
    values); None means the files already hold class ids. ``eval_classes`` and ``pred_lut`` let a
    model with other classes be scored on this set: predictions are mapped through ``pred_lut``
    (model class -> set class) and metrics are reported over ``eval_classes``. Both None means the
    set uses the model's classes. ``resize`` = [rows, cols] is the set's own size, used instead
    of ``data.resize`` (a source whose aspect ratio differs from the others keeps its own).
    ``domain`` ("day", "night", "dusk" or None when unknown) is what the images show; the
    day/night gate's accuracy is reported on day and night sets. ``prepared``: where the set's
    decoded and resized arrays are (nightseg.data.prepared), when a stage has prepared them.
    """

    name: str
    samples: list[Sample]
    label_lut: list[int] | None = None
    eval_classes: tuple[str, ...] | None = None
    pred_lut: list[int] | None = None
    resize: tuple[int, int] | None = None
    domain: str | None = None
    prepared: PreparedRef | None = field(default=None, compare=False)
    # fingerprint() once per set: several stages key on the same training set (the pool: the
    # generated images and the segmenter; the translator's sets: the translator and the gate).
    # Sets are never changed in place (head/reordered/replace make new ones without it).
    _fingerprint: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labelled(self) -> bool:
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    @property
    def has_reference(self) -> bool:
        return bool(self.samples) and all(s.reference is not None for s in self.samples)

    def head(self, n: int | None) -> SampleSet:
        """The first ``n`` samples (all when ``n`` is None), other fields kept."""
        if n is None:
            return self
        return replace(self, samples=self.samples[:n],
                       prepared=self.prepared.head(n) if self.prepared else None)

    def reordered(self, order: list[int]) -> SampleSet:
        """The samples in ``order`` (positions into this set), other fields kept."""
        return replace(self, samples=[self.samples[i] for i in order],
                       prepared=self.prepared.reordered(order) if self.prepared else None)

    def with_prepared(self, prepared: PreparedRef | None) -> SampleSet:
        """This set read from prepared arrays (its fingerprint, and so every key, unchanged)."""
        out = replace(self, prepared=prepared)
        out._fingerprint = self._fingerprint
        return out

    def fingerprint(self) -> dict:
        """What identifies this set's training content, for stage cache keys.

        Each file counts by its path relative to the parent of the set's common folder (so
        moving a dataset root elsewhere keeps the key) and its size in bytes; the bytes of the
        first and last sample's files are hashed too (a re-rendered or replaced dataset of the same
        names and sizes). With the label mapping and the set's own size. The set's name and its
        test-time fields are left out: they do not change what a model learns from it.
        """
        if self._fingerprint is not None:
            return dict(self._fingerprint)
        digest = hashlib.sha256()
        files = [p for s in self.samples for p in _files(s) if p is not None]
        if files:
            base = Path(os.path.commonpath([str(p.parent) for p in files])).parent
            for s in self.samples:
                for p in _files(s):
                    rel = "-" if p is None else p.relative_to(base).as_posix()
                    digest.update(f"{rel}\t{_file_size(p)}\n".encode())
            for s in {id(x): x for x in (self.samples[0], self.samples[-1])}.values():
                for p in _files(s):
                    if p is not None and p.is_file():
                        digest.update(p.read_bytes())
        lut = None if self.label_lut is None else hashlib.sha256(
            ",".join(map(str, self.label_lut)).encode()).hexdigest()[:16]
        self._fingerprint = {"count": len(self.samples), "files": digest.hexdigest()[:16],
                             "label_lut": lut, "resize": list(self.resize) if self.resize else None}
        return dict(self._fingerprint)


def _files(s: Sample) -> tuple[Path | None, ...]:
    """A sample's files that training reads; an invalid mask only where there is one (so the keys
    of sets without masks are what they were before masks existed)."""
    return (s.image, s.label) if s.invalid is None else (s.image, s.label, s.invalid)


def _file_size(path: Path | None) -> int:
    """A file's size in bytes with one stat call; -1 for no path, a missing file or a folder."""
    if path is None:
        return -1
    try:
        st = path.stat()
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


@dataclass
class DataCatalog:
    """Everything a run needs from one dataset configuration.

    - ``translate_day`` / ``translate_night``: unpaired images for the CycleGAN (labels unused);
    - ``train``: labelled day images for the segmenter (and the pool that ``augment`` translates);
    - ``val``: labelled day validation sets (the paper's "day" column);
    - ``test``: labelled night (or dusk) test sets, the paper's night columns;
    - ``predict``: images without labels, for prediction only (a benchmark's withheld test split,
      scored by its server: ``python -m nightseg.predict predict.format=...``); never in a run.
    """

    name: str
    class_names: tuple[str, ...]
    translate_day: SampleSet
    translate_night: SampleSet
    train: SampleSet
    val: list[SampleSet] = field(default_factory=list)
    test: list[SampleSet] = field(default_factory=list)
    predict: list[SampleSet] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, int]:
        """Image counts per role, for logs and the dataset inspector."""
        out = {
            "translate_day": len(self.translate_day),
            "translate_night": len(self.translate_night),
            "train": len(self.train),
        }
        out.update({f"val/{s.name}": len(s) for s in self.val})
        out.update({f"test/{s.name}": len(s) for s in self.test})
        out.update({f"predict/{s.name}": len(s) for s in self.predict})
        return out


def identity_lut(valid_ids: range | list[int], ignore_values: tuple[int, ...] = ()) -> list[int]:
    """A 256-entry LUT that keeps ``valid_ids``, maps ``ignore_values`` to IGNORE_INDEX and marks
    every other value as invalid (-1, reported as an unknown label value when read)."""
    lut = [-1] * 256
    for v in valid_ids:
        lut[v] = v
    for v in ignore_values:
        lut[v] = IGNORE_INDEX
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


# A benchmark's invalid-pixel mask (ACDC, Dark Zurich: *_gt_invIds.png): 0 valid, 1 invalid.
INVALID_LUT = [0, 1] + [-1] * 254
