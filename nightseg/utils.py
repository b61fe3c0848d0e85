"""Small shared helpers: errors for bad input, atomic file writes."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and how to fix it."""


class DataError(RuntimeError):
    """A dataset file or layout is bad; the message names the file and what is wrong."""


class TrainingError(RuntimeError):
    """A stage's training went wrong in a way a rerun will not fix by itself (a NaN or infinite
    loss); the message names the stage, epoch, step and what to change. Nothing was published."""


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


def nan_to_none(x: float) -> float | None:
    """JSON has no NaN: classes absent from a test set are reported as null."""
    return None if x != x else float(x)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def storage_error(exc: BaseException, dirs: Iterable[str | os.PathLike]) -> DataError | None:
    """A full disk or an unwritable directory as one line naming the path and the fix, or None
    for any other error. ``dirs`` are where the job writes (cache, run directory): a writer that
    does not say which file failed (torch's checkpoint writer, a bare ENOSPC) is placed by the
    fullest of them. Every publication is atomic, so the line can promise nothing half-written."""
    seen, err = exc, None
    while seen is not None and err is None:  # the OSError may be wrapped (Lightning, loaders)
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE + _NOT_WRITABLE:
            err = seen
        seen = seen.__cause__ or seen.__context__
    torch_write = isinstance(exc, RuntimeError) and "write" in str(exc) and "file" in str(exc)
    if err is None and not torch_write:
        return None
    free = {Path(d): _free_bytes(d) for d in dirs}
    free = {d: b for d, b in free.items() if b is not None}
    fullest = min(free, key=free.get) if free else None
    if err is None or err.errno in _NO_SPACE:
        if err is None and (fullest is None or free[fullest] > 1 << 20):
            return None  # a failed write, but no disk is full: not ours to explain
        path = _within(getattr(err, "filename", None), free) or fullest
        room = f", {free[fullest] // 1024} KiB free under {fullest}" if fullest is not None else ""
        return DataError(f"no space left on the device writing {path}{room}: free space there (or set "
                         "paths.cache_dir / hydra.run.dir elsewhere) and run the same command again; "
                         "nothing was half-published")
    path = _within(err.filename, free) or fullest
    return DataError(f"cannot write {path} ({err.strerror}): make it writable, or set paths.cache_dir "
                     "(NIGHTSEG_CACHE_DIR) to a writable directory, and run the same command again")


def _within(filename, dirs) -> str | None:
    """``filename`` if it lies in one of ``dirs``: a writer that stages its file elsewhere first
    (fsspec, under Lightning's checkpoints, writes to /tmp and then copies) names its staging file,
    which is not where the space ran out."""
    if not filename:
        return None
    path = Path(os.fsdecode(filename)).absolute()
    return str(path) if any(path.is_relative_to(d.absolute()) for d in dirs) else None


def _free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the device of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


@contextmanager
def errors_as_one_line(dirs: Iterable[str | os.PathLike]) -> Iterator[None]:
    """For the entry points (run, evaluate, predict): bad input, a diverged stage, a full disk or
    an unwritable directory among ``dirs`` (where the command writes) leave with one line naming
    the key, file, stage or path and the fix, no traceback; anything else is a bug and keeps its
    traceback."""
    try:
        yield
    except (ConfigError, DataError, TrainingError) as e:
        raise SystemExit(f"error: {e}") from None
    except Exception as e:  # re-raised unless it is a storage error
        problem = storage_error(e, [d for d in dirs if d is not None])
        if problem is None:
            raise
        raise SystemExit(f"error: {problem}") from None
