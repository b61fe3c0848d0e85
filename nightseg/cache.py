"""The stage cache: trained translators, generated night images and trained segmenters, stored
under keys derived from the config that determines them and reused by later runs and sweep jobs.

Why it matters for correctness (DESIGN.md): every job of a ``night_count`` sweep must use the same
translator, or the ratio curve mixes GAN variance into the effect being measured. Artefacts appear
whole or not at all (built in a work directory, published with an atomic rename), and a file lock
keeps parallel jobs from building the same artefact twice. A killed build leaves its work
directory (with Lightning's last checkpoint) behind; the next run resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from nightseg.utils import atomic_path, write_json

log = logging.getLogger(__name__)

# Bump when the meaning of a cached artefact changes, so old entries are not reused.
CACHE_VERSION = 1


def stage_key(spec: Mapping) -> str:
    """A short stable hash of a JSON-serialisable spec (keys sorted)."""
    blob = json.dumps({"v": CACHE_VERSION, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_launcher_child() -> bool:
    """True in processes that a distributed launcher started for ranks other than global zero.

    Those processes are started by rank zero while it holds the stage lock, so they must not wait
    for it; they also never publish artefacts (Lightning saves checkpoints on rank zero only).
    """
    return int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0


@dataclass(frozen=True)
class Stage:
    """One cached artefact: ``path`` is the published file or directory."""

    kind: str
    key: str
    root: Path
    artefact: str

    @property
    def dir(self) -> Path:
        return self.root / self.kind / self.key

    @property
    def path(self) -> Path:
        return self.dir / self.artefact

    @property
    def work_dir(self) -> Path:
        """Where a build keeps its intermediate state (checkpoints to resume from)."""
        return self.dir / "work"

    def exists(self) -> bool:
        return self.path.exists()


class StageCache:
    """Artefacts under ``<root>/<kind>/<key>/``, with the spec that determined them beside them."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def stage(self, kind: str, spec: Mapping, artefact: str) -> Stage:
        return Stage(kind, stage_key(spec), self.root, artefact)

    @contextmanager
    def lock(self, stage: Stage) -> Iterator[None]:
        stage.dir.mkdir(parents=True, exist_ok=True)
        ctx = nullcontext() if is_launcher_child() else FileLock(str(stage.dir) + ".lock")
        with ctx:
            yield

    def obtain(self, kind: str, spec: Mapping, artefact: str,
               build: Callable[[Stage, Path], None]) -> tuple[Path, str]:
        """Return (path, "cached" | "trained"): reuse the artefact, or build it under the lock.

        ``build(stage, tmp_path)`` must create the artefact at ``tmp_path``; it is then renamed
        into place. It may keep resumable state in ``stage.work_dir``.
        """
        stage = self.stage(kind, spec, artefact)
        if stage.exists():
            return stage.path, "cached"
        with self.lock(stage):
            if stage.exists():  # another job built it while this one waited for the lock
                log.info("%s %s was built by another job meanwhile", kind, stage.key)
                return stage.path, "cached"
            spec_file = stage.dir / "spec.json"
            if not spec_file.exists():
                write_json(spec_file, _jsonable(spec))
            with atomic_path(stage.path) as tmp:
                build(stage, tmp)
                wrote = tmp.exists()
            if wrote:
                # Published: the resumable state is no longer needed.
                shutil.rmtree(stage.work_dir, ignore_errors=True)
            elif not is_launcher_child():  # only rank zero publishes under DDP
                raise RuntimeError(f"stage {kind} {stage.key}: the build wrote nothing")
        _barrier()  # under DDP, no rank reads the artefact before rank zero has published it
        return stage.path, "trained"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
