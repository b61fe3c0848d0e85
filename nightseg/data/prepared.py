"""Prepared data: a sample set decoded and resized once, stored as plain uint8 arrays that loaders
memory-map (the stage ``prepared``, built by nightseg.training.prepare).

Decoding a 1280x720 JPEG and its label and resizing them costs 20-30 ms a sample, done again in
every epoch; a GPU trains on a sample in about 1 ms. A prepared set holds what the loaders would
make of each file before any random transform: the image resized by exactly the evaluation resize
(:func:`nightseg.data.datamodules.build_transform`: area for images, nearest for labels), the label
through its class map and checks, the paired reference image where the set has one. A loader then
reads a slice of a memory-mapped file, and the same random crop and flip as before make the same
batches, bit for bit.

The format (version :data:`FORMAT_VERSION`), in one directory:

- ``images.npy``: every image's (H, W, 3) pixels, one after another, as one flat uint8 array
  (sizes may differ between samples when a set is not resized); ``labels.npy`` (H, W) and
  ``references.npy`` (H, W, 3) likewise where the set has them;
- ``rows.npy``: int64 (N, 3), per sample its first pixel's position and its (H, W);
- ``index.json``: the format version, the sample names and source files, and the samples that
  could not be read, each with the one-line reason (a bad file is never silently dropped: a loader
  with ``on_error=raise`` stops on it before training, ``skip`` passes over it as it would the file).

numpy's own ``.npy`` needs nothing beyond numpy to read, and ``np.load(mmap_mode="r")`` maps it:
the pages are shared by every loader worker and every process of a node through the page cache.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nightseg.core.errors import DataError

FORMAT_VERSION = 1
INDEX = "index.json"
ROWS = "rows.npy"
# array file -> channels per pixel
ARRAYS = {"images.npy": 3, "labels.npy": 1, "references.npy": 3}
_KEY_FILES = {"image": "images.npy", "mask": "labels.npy", "reference": "references.npy"}


@dataclass(frozen=True)
class PreparedRef:
    """Where a sample set's prepared arrays are (``path``) and which of their rows are the set's
    samples, in the set's order (``rows``: positions into the prepared set)."""

    path: Path
    rows: tuple[int, ...]

    def head(self, n: int) -> PreparedRef:
        return PreparedRef(self.path, self.rows[:n])

    def reordered(self, order: Sequence[int]) -> PreparedRef:
        return PreparedRef(self.path, tuple(self.rows[i] for i in order))


class PreparedArrays:
    """Read access to one prepared set, opened lazily in each process.

    The memory maps are opened at the first read and never pickled: a dataset handed to spawned
    or forkserver loader workers carries the path only, and each worker maps the files itself.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index = json.loads((self.path / INDEX).read_text())
        if index.get("format") != FORMAT_VERSION:
            raise DataError(f"{self.path / INDEX}: prepared-data format {index.get('format')}, this "
                            f"nightseg reads {FORMAT_VERSION}; delete {self.path.parent} to prepare "
                            "it again")
        self.names: list[str] = index["names"]
        self.errors: dict[int, str] = {int(k): v for k, v in index.get("errors", {}).items()}
        self.has = {key: (self.path / f).exists() for key, f in _KEY_FILES.items()}
        self._maps: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

    def _open(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            maps = {"rows": np.load(self.path / ROWS)}
            for key, f in _KEY_FILES.items():
                if self.has[key]:
                    maps[key] = np.load(self.path / f, mmap_mode="r")
            self._maps = maps
        return self._maps

    def read(self, row: int, keys: Sequence[str] = ("image", "mask", "reference")) -> dict[str, np.ndarray]:
        """The arrays of one row (copies, writable), as load_sample and the resize make them;
        a row whose file could not be read raises the DataError it raised when prepared."""
        if row in self.errors:
            raise DataError(self.errors[row])
        maps = self._open()
        start, h, w = (int(v) for v in maps["rows"][row])
        out = {}
        for key in keys:
            if key in maps:
                c = ARRAYS[_KEY_FILES[key]]
                flat = maps[key][start * c:(start + h * w) * c]
                out[key] = np.array(flat).reshape((h, w, 3) if c == 3 else (h, w))
        return out


class PreparedWriter:
    """Writes a prepared set into ``path`` (a new directory): the array files are created at their
    full size first (``posix_fallocate``: a disk without room fails there, before any decoding),
    then each row is written at its own offset with ``os.pwrite``, from whichever process decoded
    it (the writer pickles without its open files; each process opens them itself). Plain writes,
    not a memory map: a full disk raises OSError (ENOSPC) where a map would end the process with
    SIGBUS."""

    def __init__(self, path: Path, shapes: Sequence[tuple[int, int]], keys: Sequence[str]):
        self.path = path
        path.mkdir(parents=True)
        pixels = np.array([h * w for h, w in shapes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(pixels)[:-1]]).astype(np.int64)
        self.rows = np.stack([starts, [h for h, _ in shapes], [w for _, w in shapes]], axis=1) \
            if len(shapes) else np.zeros((0, 3), dtype=np.int64)
        self.total = int(pixels.sum())
        self.keys = list(keys)
        self.data_offset: dict[str, int] = {}
        for key in self.keys:
            c = ARRAYS[_KEY_FILES[key]]
            with open(path / _KEY_FILES[key], "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "|u1", "fortran_order": False, "shape": (self.total * c,)})
                self.data_offset[key] = f.tell()
                size = f.tell() + self.total * c
                try:
                    os.posix_fallocate(f.fileno(), 0, size)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # ENOSPC and the like
                        raise
                    f.truncate(size)  # a filesystem without fallocate: ENOSPC comes at a write
        self._fds: dict[str, int] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = None
        return state

    @staticmethod
    def nbytes(shapes: Sequence[tuple[int, int]], keys: Sequence[str]) -> int:
        pixels = sum(h * w for h, w in shapes)
        return pixels * sum(ARRAYS[_KEY_FILES[k]] for k in keys)

    def write(self, row: int, arrays: dict[str, np.ndarray]) -> None:
        """Row ``row``'s arrays, in any order and from any process (a row not written, a sample
        that could not be read, stays zero, and the index says why)."""
        if self._fds is None:
            self._fds = {k: os.open(self.path / _KEY_FILES[k], os.O_WRONLY) for k in self.keys}
        start, h, w = (int(v) for v in self.rows[row])
        for key, fd in self._fds.items():
            c = ARRAYS[_KEY_FILES[key]]
            a = np.ascontiguousarray(arrays[key], dtype=np.uint8)
            if a.shape[:2] != (h, w):
                raise ValueError(f"row {row}: {key} is {a.shape[:2]}, expected {(h, w)}")
            data, offset = memoryview(a).cast("B"), self.data_offset[key] + start * c
            while data:  # pwrite may write less than asked
                n = os.pwrite(fd, data, offset)
                data, offset = data[n:], offset + n

    def close(self, names: Sequence[str], sources: Sequence[dict], errors: dict[int, str]) -> None:
        """Flush the arrays to disk, then write rows.npy and index.json."""
        self.abort()
        for key in self.keys:
            fd = os.open(self.path / _KEY_FILES[key], os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        np.save(self.path / ROWS, self.rows)
        index = {"format": FORMAT_VERSION, "count": len(names), "names": list(names),
                 "sources": list(sources), "errors": {str(k): v for k, v in sorted(errors.items())}}
        (self.path / INDEX).write_text(json.dumps(index, indent=1) + "\n")

    def abort(self) -> None:
        """Close this process's files."""
        for fd in (self._fds or {}).values():
            os.close(fd)
        self._fds = None
