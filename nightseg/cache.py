"""The stage cache: trained translators, generated night images and trained segmenters, stored
under keys derived from the config that determines them and reused by later runs and sweep jobs.

Why it matters for correctness (DESIGN.md): every job of a ``night_count`` sweep must use the same
translator, or the ratio curve mixes GAN variance into the effect being measured. Artefacts appear
whole or not at all (built in a work directory, published with an atomic rename), and a file lock
keeps parallel jobs from building the same artefact twice. A killed build leaves its work
directory (with Lightning's last checkpoint) behind; the next run resumes from it.

Under DDP (several processes of one job, see nightseg.distributed) only global rank zero takes the
lock and decides "reuse or build"; every other rank follows that decision, so all ranks enter the
same Trainer calls. While rank zero waits for another job's lock, the ranks meet every few seconds
instead of in one long collective, which would time out during a long build elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from nightseg import distributed
from nightseg.utils import DataError, atomic_path, write_json

log = logging.getLogger(__name__)

# Bump when the meaning of a cached artefact changes, so old entries are not reused.
CACHE_VERSION = 1


def stage_key(spec: Mapping) -> str:
    """A short stable hash of a JSON-serialisable spec (keys sorted)."""
    blob = json.dumps({"v": CACHE_VERSION, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Seconds rank zero waits for another job's lock between two meetings with the other ranks.
LOCK_POLL_S = 2.0


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

    def obtain(self, kind: str, spec: Mapping, artefact: str,
               build: Callable[[Stage, Path], None]) -> tuple[Path, str]:
        """Return (path, "cached" | "trained"): reuse the artefact, or build it under the lock.

        ``build(stage, tmp_path)`` must create the artefact at ``tmp_path`` (on rank zero); it is
        then renamed into place. It may keep resumable state in ``stage.work_dir``. Under DDP every
        rank calls ``obtain`` and ``build`` (which runs the Trainer), rank zero alone publishes.
        """
        stage = self.stage(kind, spec, artefact)
        lock = FileLock(str(stage.dir) + ".lock") if distributed.is_rank_zero() else None
        try:
            if self._decide(stage, lock) == "cached":
                _check_visible(stage)
                return stage.path, "cached"
            if lock is not None:
                spec_file = stage.dir / "spec.json"
                if not spec_file.exists():
                    write_json(spec_file, _jsonable(spec))
            with atomic_path(stage.path) as tmp:
                build(stage, tmp)
                wrote = tmp.exists()
            if lock is not None and wrote:
                # Published: the resumable state is no longer needed.
                shutil.rmtree(stage.work_dir, ignore_errors=True)
            if not distributed.broadcast(wrote):  # only rank zero publishes under DDP
                raise RuntimeError(f"stage {kind} {stage.key}: the build wrote nothing")
            distributed.barrier()  # no rank reads the artefact before rank zero has published it
        finally:
            if lock is not None and lock.is_locked:
                lock.release()
        return stage.path, "trained"

    @staticmethod
    def _decide(stage: Stage, lock: FileLock | None) -> str:
        """Rank zero's "cached" or "build", on every rank. Rank zero holds the lock on "build"."""
        waited = False
        while True:
            decision = "wait"
            if lock is not None and not stage.exists():
                stage.dir.mkdir(parents=True, exist_ok=True)
                try:
                    lock.acquire(timeout=LOCK_POLL_S)
                    decision = "build"
                except Timeout:  # another job is building it: meet the other ranks, wait on
                    waited = True
            if lock is not None and stage.exists():
                if waited or decision == "build":  # built by another job while this one waited
                    log.info("%s %s was built by another job meanwhile", stage.kind, stage.key)
                decision = "cached"
            decision = distributed.broadcast(decision)
            if decision != "wait":
                return decision


def _check_visible(stage: Stage) -> None:
    """Every rank reads the artefact rank zero found: on several nodes the cache must be on a disk
    they all see."""
    seen = distributed.all_gather((socket.gethostname(), stage.exists()))
    missing = [f"rank {rank} ({host})" for rank, (host, found) in enumerate(seen) if not found]
    if missing:
        raise DataError(f"{stage.path} exists for rank 0 but not for {', '.join(missing)}: "
                        f"paths.cache_dir ({stage.root.parent}) must be a directory shared by every "
                        "node, e.g. on a network filesystem")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
