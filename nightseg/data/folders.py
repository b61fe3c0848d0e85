"""Dataset layouts: the checks and image/label pairing every dataset family's reader shares.

A root that is absent or not in the expected layout, a missing label or image: each gets one
error naming the path and the fix, or (``on_missing=skip``) a logged, counted omission.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from nightseg.core.errors import ConfigError, DataError
from nightseg.data.catalog import ON_ERROR_CHOICES, Sample, SampleSet

log = logging.getLogger(__name__)

# What a family does with an image whose label (or a listed image itself) is missing: the run's
# data.on_error choices (raise, the default; skip: log each one and leave it out), or keep (leave
# the sample as is so the dataset inspector reports the missing file with every other problem).
ON_MISSING_CHOICES = (*ON_ERROR_CHOICES, "keep")


def layout_error(root: Path, expected: str, missing: Path | str | None = None) -> DataError:
    """The one-line error for a dataset root that is absent or not in the expected layout."""
    what = f" ({missing} not found)" if missing is not None else ""
    return DataError(f"{root}: expected {expected}{what}; set data.catalog.root (or "
                     "NIGHTSEG_DATA_DIR, the parent of all dataset roots) to where the dataset is")


def require_dirs(root: str | Path, subdirs: Iterable[str], expected: str) -> Path:
    """``root`` as a Path, after checking it and each of ``subdirs`` exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(root, expected, root)
    for sub in subdirs:
        if not (root / sub).is_dir():
            raise layout_error(root, expected, root / sub)
    return root


def check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING_CHOICES:
        raise ConfigError(f"data.catalog.on_missing={on_missing!r}: choose one of "
                          f"{', '.join(ON_MISSING_CHOICES)}")


def files(folder: Path, pattern: str) -> list[Path]:
    """Files under ``folder`` matching ``pattern`` (may contain ``*/``), sorted for a fixed order."""
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def strip_suffix(name: str, suffix: str) -> str:
    """``name`` without ``suffix`` (e.g. ``_leftImg8bit.png``); the name itself if it lacks it."""
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def complete(samples: list[Sample], on_missing: str, what: str) -> list[Sample]:
    """``samples`` after checking every image and label file exists.

    A missing file is never dropped silently: it raises (naming the first few and the count),
    is logged and left out (``skip``), or kept for the inspector to report (``keep``).
    """
    check_on_missing(on_missing)
    if on_missing == "keep":
        return samples
    missing: list[str] = []
    kept: list[Sample] = []
    for s in samples:
        bad = [f"{p} not found" + (f" ({what} of {s.image.name})" if what else "")
               for p, what in ((s.image, ""), (s.label, "label"), (s.invalid, "invalid mask"))
               if p is not None and not p.is_file()]
        missing.extend(bad)
        if not bad:
            kept.append(s)
    if not missing:
        return samples
    if on_missing == "raise":
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{what}: {len(missing)} missing file(s): {shown}. Restore them, or set "
                        "data.on_error=skip to leave those images out (python -m "
                        "nightseg.data.inspect_dataset lists every problem)")
    for m in missing:
        log.warning("skipped %s: %s", what, m)
    log.warning("%s: skipped %d of %d images with missing files", what, len(samples) - len(kept),
                len(samples))
    return kept


def paired(images: list[Path], label_of, on_missing: str, what: str) -> list[Sample]:
    """Samples pairing each image with the label path ``label_of(image)``, checked by
    :func:`complete`."""
    return complete([Sample(img, label_of(img)) for img in images], on_missing, what)


def unlabelled(images: list[Path]) -> list[Sample]:
    return [Sample(img) for img in images]


def empty(name: str) -> SampleSet:
    """A role the dataset does not provide (e.g. Cityscapes has no night images)."""
    return SampleSet(name, [])
