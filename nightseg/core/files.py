"""Atomic file writes: whatever nightseg publishes appears whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` atomically.

    Works for files and directories alike: whatever the body creates at the temporary path
    appears at ``path`` whole, or not at all if the body raises (or creates nothing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "item"
    try:
        yield target
        if not target.exists() and not target.is_symlink():
            return
        if path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty directory; move the old one aside first.
            old = tmp / "old"
            os.replace(path, old)
        os.replace(target, path)
    finally:
        _rmtree(tmp)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


class PngPool:
    """Saves PIL images as PNG files, each whole or not at all, from a few threads (zlib releases
    the GIL) with at most ``max_pending`` files queued, so a fast producer does not pile images up
    in memory. :meth:`close` waits for the last files and raises what failed."""

    def __init__(self, threads: int = 2, max_pending: int = 64):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.max_pending = max_pending
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png")
        self.pending = deque()

    @staticmethod
    def _save(img, path: Path, compress_level: int) -> None:
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", compress_level=compress_level)

    def save(self, img, path: str | os.PathLike, compress_level: int = 6) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._save, img, Path(path), compress_level))

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
