"""Frames to predict on: the images and videos named by an ``input`` (a file, a folder or a glob),
read in loader workers or decoded (PyAV), resized as evaluation resizes, batched by size."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from nightseg.core.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Item:
    """One input file and the name its outputs take below ``output_dir`` (no suffix)."""

    path: Path
    name: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def find_inputs(spec: str) -> list[Item]:
    """The images and videos named by ``input``: a file, a folder (recursively) or a glob."""
    path = Path(spec)
    if path.is_file():
        return [Item(path, path.stem)]
    if path.is_dir():
        files, base = [p for p in path.rglob("*") if p.is_file()], path
    else:
        files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        if not files:
            raise ConfigError(f"input={spec}: no such file or folder, and no file matches it as a "
                              "pattern; give a folder, a glob such as 'frames/**/*.png', or a video")
        base = Path(os.path.commonpath([str(p.parent) for p in files]))
    files = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise ConfigError(f"input={spec}: no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
                          f"({', '.join(VIDEO_SUFFIXES)}) in it")
    return [Item(p, p.relative_to(base).with_suffix("").as_posix()) for p in files]


def _resized(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """As evaluation resizes (nightseg.data.datamodules.build_transform: area interpolation)."""
    if size is None or img.shape[:2] == tuple(size):
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _as_is(sample: dict) -> dict:
    """Samples leave the workers as they are (numpy arrays, no tensors): a module-level function,
    so that spawned workers (macOS, Windows) can unpickle it."""
    return sample


class _Images(Dataset):
    """Reads images in loader workers; a file that cannot be read comes back as its error."""

    def __init__(self, items: list[Item], size: tuple[int, int] | None):
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:
            with Image.open(item.path) as im:
                frame = np.array(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for truncated or corrupt files
            return {"index": i, "error": f"{type(e).__name__}: {e}"}
        return {"index": i, "frame": frame, "input": _resized(frame, self.size)}


@dataclass
class Frame:
    """A frame to segment: ``frame`` as read (H, W, 3) uint8, ``input`` as the models see it, and
    ``out`` the outputs' name below ``output_dir`` (no suffix)."""

    frame: np.ndarray
    input: np.ndarray
    out: str


def say(console: Console, line: str) -> None:
    """One line as it is: no wrapping, no markup (paths may hold brackets)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def image_frames(items: list[Item], size, num_workers: int, skipped: list[str],
                 console: Console) -> Iterator[Frame]:
    loader = DataLoader(_Images(items, size), batch_size=None, num_workers=num_workers,
                        collate_fn=_as_is)
    for sample in loader:
        item = items[sample["index"]]
        if "error" in sample:
            say(console, f"skipped {item.path}: cannot read it as an image ({sample['error']})")
            skipped.append(str(item.path))
            continue
        yield Frame(sample["frame"], sample["input"], item.name)


def batched(frames: Iterable[Frame], batch_size: int) -> Iterator[list[Frame]]:
    """Consecutive frames of one input size, at most ``batch_size`` at a time."""
    batch: list[Frame] = []
    for f in frames:
        if batch and (len(batch) == batch_size or f.input.shape != batch[0].input.shape):
            yield batch
            batch = []
        batch.append(f)
    if batch:
        yield batch


class NotAVideo(Exception):
    """A file PyAV opens but that has no video stream."""


def video_frames(item: Item, size, state: dict) -> Iterator[Frame]:
    """Decoded frames of a video; ``state`` gets its frame rate and frame count first."""
    import av

    with av.open(str(item.path)) as container:
        if not container.streams.video:
            raise NotAVideo("it has no video stream")
        stream = container.streams.video[0]
        state["rate"] = stream.average_rate or stream.guessed_rate or Fraction(25)
        state["frames"] = stream.frames or None
        for i, vf in enumerate(container.decode(stream)):
            frame = vf.to_ndarray(format="rgb24")
            yield Frame(frame, _resized(frame, size), f"{item.name}/{i:06d}")
