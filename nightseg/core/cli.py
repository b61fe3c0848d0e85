"""The commands' error handling: bad input, a diverged stage, a full disk or an unwritable
directory leave a command with one line naming the key, file, stage or path and the fix."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nightseg.core.errors import ConfigError, DataError, TrainingError

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
