"""The ``prepared`` stage: every set a stage trains, validates or is scored on, decoded and resized
once into the uint8 arrays of nightseg.data.prepared, which the loaders then memory-map
(``data.prepared=true``, the default; ``false`` reads the files in every epoch as before).

A prepared set's key holds only what it is made from: the set's files (their fingerprint, see
``SampleSet.fingerprint``: moving a dataset root keeps it), the resize and its interpolations, the
label checks, and the format version. So the translator's sets are prepared once for every
translator config, the day pool once for every segmenter of a sweep, and a test set once for every
job that scores on it. Like every stage it is built by rank zero under the cache lock while other
ranks and jobs wait, published whole with checksums, and built again when found corrupt.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from nightseg.core.errors import DataError
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import build_transform, init_worker
from nightseg.data.io import apply_transform, load_sample, read_image
from nightseg.data.prepared import FORMAT_VERSION, PreparedRef, PreparedWriter
from nightseg.infra import distributed
from nightseg.infra.cache import ARTEFACTS
from nightseg.infra.hardware import usable_cores
from nightseg.infra.job import Job

log = logging.getLogger(__name__)

# How every image and label is resized (nightseg.data.datamodules.build_transform), in the key:
# a change of interpolation must not reuse arrays made by another.
INTERPOLATION = {"image": "area", "label": "nearest"}


def enabled(job: Job) -> bool:
    return bool(job.cfg.data.get("prepared", False)) and job.cache is not None


def prepared_spec(s: SampleSet, resize: Sequence[int] | None, labels: bool, references: bool,
                  num_classes: int | None) -> dict:
    """What a prepared set is made from (its cache key): not its name, root or use."""
    spec = {"format": FORMAT_VERSION, "set": s.fingerprint(),
            "resize": [int(v) for v in resize] if resize is not None else None,
            "interpolation": INTERPOLATION, "labels": labels, "references": references}
    if labels and s.label_lut is None:  # labels checked against the class count (read_label)
        spec["valid_max"] = None if num_classes is None else num_classes - 1
    return spec


def prepare_sets(job: Job, sets: Sequence[SampleSet], segmentation: bool = True,
                 num_classes: int | None = None) -> list[SampleSet]:
    """``sets`` with their prepared arrays attached (``SampleSet.prepared``), each obtained through
    the cache; unchanged when ``data.prepared=false`` or a set cannot be stacked (some samples
    labelled and others not). ``segmentation``: images with their labels and reference images,
    as SegmentationDataset reads them; else images only (the translator's and the gate's sets).
    ``num_classes``: the class count labels are checked against where a set has no label map
    and no classes of its own (eval_classes)."""
    if not enabled(job):
        return list(sets)
    return [_prepared(job, s, segmentation, num_classes) for s in sets]


def scored_sets(job: Job, sets: Sequence[SampleSet]) -> list[SampleSet]:
    """The validation and test sets a job scores, prepared as the evaluation loaders read them."""
    return prepare_sets(job, sets, num_classes=job.catalog.num_classes)


def _prepared(job: Job, s: SampleSet, segmentation: bool, num_classes: int | None) -> SampleSet:
    if not s.samples or s.prepared is not None:
        return s
    labels = segmentation and any(x.label is not None for x in s.samples)
    references = segmentation and any(x.reference is not None for x in s.samples)
    if (labels and not s.labelled) or (references and not s.has_reference):
        log.info("prepared: %s left as files (only some of its samples have labels or references)",
                 s.name)
        return s
    data = job.cfg.data
    resize = s.resize or data.resize
    classes = len(s.eval_classes) if s.eval_classes else num_classes
    spec = prepared_spec(s, resize, labels, references, classes)

    def build(stage, out: Path) -> None:
        if distributed.is_rank_zero():
            build_prepared(s, out, resize, labels, references, classes, data.on_error,
                           decode_workers(len(s)))

    with job.timed("prepare"):
        path, status = job.cache.obtain("prepared", spec, ARTEFACTS["prepared"], build)
    # A set prepared by this job's training and found again when it is scored was built here.
    job.prepared[s.name] = "trained" if job.prepared.get(s.name) == "trained" else status
    log.info("prepared %s: %s (%s)", s.name, status, path)
    return s.with_prepared(PreparedRef(path, tuple(range(len(s)))))


# Sets smaller than this are decoded in the main process: starting workers would cost more.
MIN_PARALLEL = 256
MAX_DECODE_WORKERS = 16


def decode_workers(n: int) -> int:
    """Processes that decode a set of ``n`` samples: every core this process may use (up to 16).
    Nothing trains meanwhile (the other ranks wait for rank zero), so unlike data.num_workers the
    decode does not share the cores with a training step."""
    return 0 if n < MIN_PARALLEL else min(usable_cores(), MAX_DECODE_WORKERS)


class _Decode(Dataset):
    """Sample ``i`` of a set decoded, checked and resized as the evaluation loader reads it before
    any random transform, and written into its row by ``writer`` in the process that decoded it
    (no pixels travel between processes). Item: (i, None) when written, else (i, the one-line
    reason the sample could not be read), or (i, OSError arguments) when the write failed."""

    def __init__(self, s: SampleSet, resize, labels: bool, references: bool, valid_max: int | None,
                 shapes: list[tuple[int, int]], writer: PreparedWriter):
        self.s, self.labels, self.references, self.valid_max = s, labels, references, valid_max
        self.transform = build_transform(resize)
        self.shapes, self.writer = shapes, writer

    def __len__(self) -> int:
        return len(self.s)

    def __getitem__(self, i: int):
        x = self.s.samples[i]
        try:
            if self.labels or self.references:
                arrays = load_sample(Sample(x.image, x.label if self.labels else None,
                                            x.reference if self.references else None,
                                            x.invalid if self.labels else None),
                                     self.s.label_lut, self.valid_max)
            else:
                arrays = {"image": read_image(x.image)}
        except DataError as e:
            return i, str(e)
        arrays = apply_transform(self.transform, arrays)
        h, w = arrays["image"].shape[:2]
        if (h, w) != self.shapes[i]:  # unresized sets: the header said one size, the pixels another
            sh, sw = self.shapes[i]
            return i, f"{x.image}: decoded as {w}x{h}, its header says {sw}x{sh}"
        try:
            self.writer.write(i, arrays)
        except OSError as e:  # re-raised whole in the main process (a worker's would lose errno)
            return i, (e.errno, e.strerror, e.filename)
        return i, None

    def transforms(self) -> list:
        return []  # deterministic: nothing for init_worker to seed


def _shapes(s: SampleSet, resize) -> list[tuple[int, int]]:
    """Each sample's (rows, cols) once prepared: ``resize``, or the size in its file's header
    (a file whose header cannot be read gets (0, 0): it will be reported when decoded)."""
    if resize is not None:
        h, w = (int(v) for v in resize)
        return [(h, w)] * len(s)
    shapes = []
    for x in s.samples:
        try:
            with Image.open(x.image) as im:
                shapes.append((im.height, im.width))
        except Exception:  # noqa: BLE001  (decoding reports it, naming the file)
            shapes.append((0, 0))
    return shapes


def build_prepared(s: SampleSet, out: Path, resize, labels: bool, references: bool,
                   num_classes: int | None, on_error: str, num_workers: int = 0) -> None:
    """Decode, check and resize every sample of ``s`` into a prepared set at ``out``.

    With ``on_error=raise`` the first bad file stops the build (nothing is published); with
    ``skip`` it is recorded with its reason and its row left empty.
    """
    keys = ["image"] + (["mask"] if labels else []) + (["reference"] if references else [])
    shapes = _shapes(s, resize)
    need = PreparedWriter.nbytes(shapes, keys)
    free = shutil.disk_usage(out.parent).free
    if need > free:  # before decoding anything
        raise DataError(f"{out.parent}: preparing {s.name} needs {need / 2**30:.2f} GiB, "
                        f"{free / 2**30:.2f} GiB free; free space, point paths.cache_dir at a larger "
                        "disk, or set data.prepared=false")
    valid_max = None if num_classes is None else num_classes - 1
    writer = PreparedWriter(out, shapes, keys)
    # The loader's own generator: an iterator over it draws a seed, which must not come from the
    # global generator (a stage prepares its sets after seed_everything, before its Trainer).
    loader = DataLoader(_Decode(s, resize, labels, references, valid_max, shapes, writer),
                        batch_size=None, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator(), worker_init_fn=init_worker if num_workers else None)
    errors: dict[int, str] = {}
    try:
        for i, error in loader:
            if isinstance(error, (tuple, list)):  # the loader may hand a tuple over as a list
                raise OSError(*error)
            if error is not None:
                if on_error != "skip":
                    raise DataError(error)
                log.warning("skipped %s", error)
                errors[i] = error
        writer.close([x.name for x in s.samples],
                     [{"image": str(x.image), **({"label": str(x.label)} if labels else {}),
                       **({"reference": str(x.reference)} if references else {})}
                      for x in s.samples], errors)
    finally:
        writer.abort()
    log.info("prepared %s: %d samples, %.1f MiB%s", s.name, len(s), need / 2**20,
             f", {len(errors)} unreadable" if errors else "")
