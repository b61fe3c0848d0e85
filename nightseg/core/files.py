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
