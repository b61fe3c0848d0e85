"""Reading image and label files into tensors, with errors that name the file.

Every dataset family goes through these readers, so bad files are reported the same way
everywhere: a corrupt or unreadable file, a label whose size differs from its image, label values
outside the dataset's classes. With ``on_error="skip"`` a bad sample is logged with its reason and
counted (the batch carries ``skipped``) instead of stopping the run; nothing is dropped silently.
Training sets replace a skipped sample with the next readable one, so every batch keeps its size:
under DDP a rank with an empty batch would take no step while the others wait for its gradients.

Samples leave the loader workers as uint8 (images (3, H, W), masks (H, W)): a quarter of the bytes
to copy between processes and to the GPU. :func:`batch_to_float` makes the model's float [0, 1]
images and long masks on the device, after the transfer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from nightseg.core.errors import DataError
from nightseg.data.catalog import IGNORE_INDEX, INVALID_LUT, ON_ERROR_CHOICES, Sample, SampleSet
from nightseg.data.prepared import PreparedArrays

log = logging.getLogger(__name__)

def read_image(path: Path) -> np.ndarray:
    """An RGB image as an (H, W, 3) uint8 array."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; check the dataset root and layout") from None
    except Exception as e:  # PIL raises many types for truncated or corrupt files
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e}); "
                        "replace or remove the file, or set data.on_error=skip") from None


def read_label(path: Path, label_lut: Sequence[int] | None = None,
               valid_max: int | None = None) -> np.ndarray:
    """A single-channel label image as an (H, W) uint8 array of class ids (IGNORE_INDEX = 255).

    ``label_lut`` (256 entries) maps raw values to class ids, -1 marking values the dataset does
    not define. Without a LUT, values above ``valid_max`` other than 255 are reported as unknown.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(f"{path}: label has mode {im.mode}; expected a single-channel "
                                "PNG of class ids (colour-coded labels must be converted first)")
            raw = np.array(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found; check the dataset root and layout") from None
    except Exception as e:
        raise DataError(f"{path}: cannot decode label ({type(e).__name__}: {e}); "
                        "replace or remove the file, or set data.on_error=skip") from None
    if raw.dtype != np.uint8:
        if raw.max(initial=0) > 255:
            bad = np.unique(raw[raw > 255])[:10].tolist()
            raise DataError(f"{path}: unknown label values {bad} (above 255)")
        raw = raw.astype(np.uint8)
    if label_lut is not None:
        lut = np.asarray(label_lut, dtype=np.int16)
        out = lut[raw]
        if (out < 0).any():
            bad = np.unique(raw[out < 0]).tolist()
            raise DataError(f"{path}: unknown label values {bad[:20]}; "
                            "the dataset's documented values are the only ones accepted")
        return out.astype(np.uint8)
    if valid_max is not None:
        bad_mask = (raw > valid_max) & (raw != IGNORE_INDEX)
        if bad_mask.any():
            bad = np.unique(raw[bad_mask]).tolist()
            raise DataError(f"{path}: unknown label values {bad[:20]}; expected class ids "
                            f"0..{valid_max} or {IGNORE_INDEX} (ignore)")
    return raw


def label_size_problem(label: Path, label_shape: Sequence[int], image: Path,
                       image_shape: Sequence[int]) -> str | None:
    """The one message for a label whose (rows, cols) differ from its image's, or None."""
    if tuple(label_shape[:2]) == tuple(image_shape[:2]):
        return None
    (lh, lw), (h, w) = label_shape[:2], image_shape[:2]
    return (f"{label}: label size {lw}x{lh} differs from its image {image} ({w}x{h}); "
            "regenerate the label at the image size")


def load_sample(sample: Sample, label_lut: Sequence[int] | None = None,
                valid_max: int | None = None) -> dict[str, np.ndarray]:
    """Read a sample's image, label and reference, checking that their sizes agree."""
    out = {"image": read_image(sample.image)}
    h, w = out["image"].shape[:2]
    if sample.label is not None:
        out["mask"] = read_label(sample.label, label_lut, valid_max)
        problem = label_size_problem(sample.label, out["mask"].shape, sample.image, (h, w))
        if problem:
            raise DataError(problem)
        if sample.invalid is not None:  # pixels the benchmark does not score (ACDC's invIds)
            invalid = read_label(sample.invalid, INVALID_LUT)
            problem = label_size_problem(sample.invalid, invalid.shape, sample.image, (h, w))
            if problem:
                raise DataError(problem)
            out["mask"][invalid == 1] = IGNORE_INDEX
    if sample.reference is not None:
        out["reference"] = read_image(sample.reference)
        if out["reference"].shape[:2] != (h, w):
            rh, rw = out["reference"].shape[:2]
            raise DataError(f"{sample.reference}: reference size {rw}x{rh} differs from "
                            f"{sample.image} ({w}x{h})")
    return out


def to_tensor_image(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 (see :func:`batch_to_float`)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


IMAGE_KEYS = ("image", "reference", "day", "night")


def batch_to_float(batch: dict) -> dict:
    """uint8 images -> float in [0, 1] and uint8 masks -> long, where the batch now is (the device)."""
    for key in IMAGE_KEYS:
        if key in batch and batch[key].dtype == torch.uint8:
            batch[key] = batch[key].float().div_(255.0)
    if "mask" in batch and batch["mask"].dtype == torch.uint8:
        batch["mask"] = batch["mask"].long()
    return batch


class SegmentationDataset(Dataset):
    """Labelled images as ``{"image": (3,H,W) uint8, "mask": (H,W) uint8, "name": str,
    "index": int}``, plus ``"reference"`` (the paired other-domain image) where the set has one.

    ``transform`` is an albumentations pipeline applied jointly to image, mask and reference.
    ``replace_skipped`` (training sets): with on_error="skip" a bad sample is replaced by the next
    readable one (counted in the item's ``skipped``) instead of being dropped from its batch.
    A set with prepared arrays (``SampleSet.prepared``) is read from them instead of its files:
    the same arrays, the same errors for the same bad files, the same transform after.
    """

    def __init__(self, sample_set: SampleSet, transform: A.BasicTransform | None = None,
                 num_classes: int | None = None, on_error: str = "raise",
                 replace_skipped: bool = False):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.set = sample_set
        self.transform = transform
        self.valid_max = None if num_classes is None else num_classes - 1
        self.on_error = on_error
        self.replace_skipped = replace_skipped
        self.prepared = _open_prepared(sample_set, on_error)

    def __len__(self) -> int:
        return len(self.set.samples)

    def _load(self, j: int) -> dict[str, np.ndarray]:
        if self.prepared is None:
            return load_sample(self.set.samples[j], self.set.label_lut, self.valid_max)
        return self.prepared.read(self.set.prepared.rows[j])

    def _read(self, i: int) -> tuple[int, dict[str, np.ndarray] | None, int]:
        """(index read, arrays or None if skipped, bad files passed over on the way)."""
        n = len(self.set.samples)
        for skipped in range(n if self.replace_skipped else 1):
            j = (i + skipped) % n
            arrays = _read_or_skip(self.on_error, self._load, j)
            if arrays is not None:
                return j, arrays, skipped
        if not self.replace_skipped:
            return i, None, 1
        raise DataError(f"{self.set.name}: none of its {n} samples could be read (see the "
                        "warnings above); check the dataset root and layout")

    def __getitem__(self, i: int) -> dict | None:
        i, arrays, skipped = self._read(i)
        if arrays is None:
            return None
        if self.transform is not None:
            arrays = apply_transform(self.transform, arrays)
        out = {"image": to_tensor_image(arrays["image"]), "name": self.set.samples[i].name,
               "index": i}
        if "mask" in arrays:
            out["mask"] = torch.from_numpy(np.ascontiguousarray(arrays["mask"]))
        if "reference" in arrays:
            out["reference"] = to_tensor_image(arrays["reference"])
        if skipped:
            out["skipped"] = skipped
        return out

    def transforms(self) -> list[A.BaseCompose]:
        return [self.transform] if isinstance(self.transform, A.BaseCompose) else []


def _open_prepared(s: SampleSet, on_error: str) -> PreparedArrays | None:
    """The prepared arrays of ``s``, if it has them. With on_error=raise a file found unreadable
    when the set was prepared (under on_error=skip) stops the run here, before any training."""
    if s.prepared is None:
        return None
    arrays = PreparedArrays(s.prepared.path)
    if on_error == "raise":
        bad = [arrays.errors[r] for r in s.prepared.rows if r in arrays.errors]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DataError(bad[0] + more)
    return arrays


def _read_or_skip(on_error: str, read, *args):
    """``read(*args)``; with on_error="skip" a DataError is logged (naming the file) and None
    returned, so the collate function can drop and count the sample."""
    try:
        return read(*args)
    except DataError as e:
        if on_error == "skip":
            log.warning("skipped %s", e)
            return None
        raise


def apply_transform(transform: A.BasicTransform, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``transform`` applied jointly to a sample's image, mask and reference."""
    kwargs = {"image": arrays["image"]}
    if "mask" in arrays:
        kwargs["mask"] = arrays["mask"]
    if "reference" in arrays:
        kwargs["reference"] = arrays["reference"]
    res = transform(**kwargs)
    return {k: res[k] for k in kwargs}


class UnpairedDataset(Dataset):
    """Unpaired day and night images for CycleGAN: ``{"day": ..., "night": ...}`` (uint8).

    Item ``i`` pairs day image ``i`` with a random night image (as CycleGAN does), so an epoch
    covers every day image once; its length is the larger of the two sets. With on_error="skip" a
    bad image (day or night) is replaced by the next readable one of its set (counted in the
    item's ``skipped``), so no item is empty: CycleGAN trains on batches of 1.
    """

    def __init__(self, day: SampleSet, night: SampleSet, transform: A.BasicTransform | None = None,
                 on_error: str = "raise", night_transform: A.BasicTransform | None = None):
        if not day.samples or not night.samples:
            raise DataError(f"translation needs day and night images; found {len(day)} day "
                            f"({day.name}) and {len(night)} night ({night.name})")
        self.day, self.night = day.samples, night.samples
        self.names = day.name, night.name
        # Prepared arrays where a set has them (nightseg.data.prepared), else its files.
        self.prepared = _open_prepared(day, on_error), _open_prepared(night, on_error)
        self.rows = (day.prepared.rows if day.prepared else None,
                     night.prepared.rows if night.prepared else None)
        self.transform = transform
        # The night images' own transform (another size), else the same as the day images'.
        self.night_transform = night_transform if night_transform is not None else transform
        self.on_error = on_error
        # The night image's draw: seeded with the transforms (set_random_state), per sample in
        # training (nightseg.data.datamodules.ResumableSampler), per worker otherwise.
        self.py_random = random.Random(0)

    def __len__(self) -> int:
        return max(len(self.day), len(self.night))

    def set_random_state(self, random_generator: np.random.Generator, py_random: random.Random) -> None:
        """albumentations' seeding interface, so seed_transforms seeds the night draw as well."""
        self.py_random = py_random

    def _image(self, domain: int, k: int) -> np.ndarray:
        """Image ``k`` of the day (0) or night (1) set."""
        prepared = self.prepared[domain]
        if prepared is None:
            return read_image((self.day, self.night)[domain][k].image)
        return prepared.read(self.rows[domain][k], ("image",))["image"]

    def _load(self, domain: int, pick, transform: A.BasicTransform | None) -> tuple[torch.Tensor, int]:
        """The first readable image among ``pick(0), pick(1), ...`` (positions modulo the set's
        size) of the day (0) or night (1) set, and the number of bad files passed over."""
        samples, name = (self.day, self.night)[domain], self.names[domain]
        for skipped in range(len(samples)):
            img = _read_or_skip(self.on_error, self._image, domain, pick(skipped) % len(samples))
            if img is not None:
                if transform is not None:
                    img = transform(image=img)["image"]
                return to_tensor_image(img), skipped
        raise DataError(f"{name}: no readable image found in {len(samples)} tries (see the "
                        "warnings above); check the dataset root and layout")

    def __getitem__(self, i: int) -> dict:
        day, bad_day = self._load(0, lambda k: i + k, self.transform)
        r = self.py_random.randrange(len(self.night))
        night, bad_night = self._load(1, lambda k: r + k, self.night_transform)
        out = {"day": day, "night": night}
        if bad_day + bad_night:
            out["skipped"] = bad_day + bad_night
        return out

    def transforms(self) -> list:
        """What seed_transforms seeds: the albumentations pipelines, then this dataset's draw."""
        return [*(t for t in {id(t): t for t in (self.transform, self.night_transform)}.values()
                  if isinstance(t, A.BaseCompose)), self]


def collate_skipping(batch: list[dict | None]) -> dict:
    """Collate, dropping samples a dataset skipped (None) and counting them, with the bad files
    that replaced samples passed over, in ``batch["skipped"]``."""
    kept = [b for b in batch if b is not None]
    skipped = len(batch) - len(kept) + sum(b.pop("skipped", 0) for b in kept)
    out = default_collate(kept) if kept else {}
    out["skipped"] = skipped
    return out
