"""The stage cache: trained translators, generated night images and trained segmenters, stored
under keys derived from the config that determines them and reused by later runs and sweep jobs.

Why it matters for correctness (DESIGN.md): every job of a ``night_count`` sweep must use the same
translator, or the ratio curve mixes GAN variance into the effect being measured. Artefacts appear
whole or not at all (built in a work directory, published with an atomic rename), and a file lock
keeps parallel jobs from building the same artefact twice. A killed build leaves its work
directory (with Lightning's last checkpoint) behind; the next run resumes from it.

Every published stage carries ``checksums.json`` (size and sha256 of each file of the artefact and
of spec.json), written before the artefact is renamed into place, so an artefact never exists
without them. A reuse checks every size (one stat per file) and, once per process and stage, every
hash: a truncated, zeroed, edited or deleted file is named in one log line, the stage is moved
aside to ``<key>.corrupt-<n>/`` (kept for inspection) and built again; it is never used silently.
(A stage published by an older nightseg, without checksums, is trusted once and gets them.)

Under DDP (several processes of one job, see nightseg.infra.distributed) only global rank zero takes the
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

from nightseg.core.errors import DataError
from nightseg.core.files import atomic_path, write_json
from nightseg.infra import distributed

log = logging.getLogger(__name__)

# Bump when the meaning of a cached artefact changes, so old entries are not reused.
CACHE_VERSION = 1

# The layout, said here only: <paths.cache_dir>/stages/<kind>/<key>/<artefact>, with spec.json and
# checksums.json beside the artefact and work/ (the resume checkpoint) while it is being built. The
# generated night images (stage "generated_night" in metrics.json and the log) are kind night_images;
# the decoded and resized arrays of a data set (nightseg.data.prepared) kind prepared.
STAGES_DIR = "stages"
ARTEFACTS = {"translator": "model.ckpt", "night_images": "images", "segmenter": "model.ckpt",
             "gate": "gate.json", "onnx": "graphs", "prepared": "arrays"}


def is_stage_key(text: str) -> bool:
    """Whether ``text`` has the form of a stage key (:func:`stage_key`: 16 hex digits)."""
    return len(text) == 16 and all(ch in "0123456789abcdef" for ch in text)


def stage_cache(cache_dir: str | os.PathLike) -> StageCache:
    """The stage cache of ``paths.cache_dir``."""
    return StageCache(Path(cache_dir) / STAGES_DIR)


def stage_key(spec: Mapping) -> str:
    """A short stable hash of a JSON-serialisable spec (keys sorted)."""
    blob = json.dumps({"v": CACHE_VERSION, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Beside each published artefact: what it held when it was published (see verify_stage).
CHECKSUMS = "checksums.json"
# Stages whose hashes this process has verified (a sweep under Hydra's basic launcher runs all
# its jobs in one process: the 7000 generated images are hashed once, not once per job).
_HASHED: set[tuple[str, int]] = set()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sizes(artefact: Path) -> dict[str, int]:
    """Size of every file of a directory artefact by its path inside it ("" for a file artefact):
    one scandir and one stat per file, so the 7000-image set is listed in a fraction of a second."""
    out = {}
    if artefact.is_dir():
        stack = [(str(artefact), "")]
        while stack:
            where, rel = stack.pop()
            with os.scandir(where) as entries:
                for e in entries:
                    name = f"{rel}/{e.name}" if rel else e.name
                    if e.is_dir(follow_symlinks=False):
                        stack.append((e.path, name))
                    elif e.is_file():
                        out[name] = e.stat().st_size
    elif artefact.is_file():
        out[""] = artefact.stat().st_size
    return out


def _files(stage: Stage, artefact: Path) -> dict[str, int]:
    """Sizes by published relative path: ``<artefact>[/<inside>]`` and ``spec.json``."""
    files = {(f"{stage.artefact}/{rel}" if rel else stage.artefact): size
             for rel, size in _sizes(artefact).items()}
    spec = stage.dir / "spec.json"
    if spec.is_file():
        files["spec.json"] = spec.stat().st_size
    return files


def record_checksums(stage: Stage, artefact: Path) -> None:
    """Write ``checksums.json`` for ``artefact`` (the build's temporary path, about to be renamed
    to ``stage.path``), with paths relative to the stage directory as they will be published."""
    files = {}
    for rel, size in sorted(_files(stage, artefact).items()):
        if rel == "spec.json":
            path = stage.dir / rel
        elif rel == stage.artefact:
            path = artefact
        else:
            path = artefact / rel[len(stage.artefact) + 1:]
        files[rel] = {"size": size, "sha256": file_sha256(path)}
    write_json(stage.dir / CHECKSUMS, {"artefact": stage.artefact, "files": files})


def verify_stage(stage: Stage) -> str | None:
    """None if the published stage holds what was recorded at publication, else one line naming
    the first file that differs. Sizes are checked at every call, hashes once per process."""
    record = stage.dir / CHECKSUMS
    try:
        files = json.loads(record.read_text())["files"]
    except FileNotFoundError:
        # Published by a nightseg older than checksums (every newer stage has them before its
        # artefact appears): trust it once rather than retrain hours of work, and record them.
        log.info("cache: %s has no %s (published before checksums); recording them now",
                 stage.dir, CHECKSUMS)
        record_checksums(stage, stage.path)
        return None
    except (ValueError, KeyError, TypeError) as e:
        return f"{record} is unreadable ({e.__class__.__name__})"
    present = _files(stage, stage.path)
    for rel in sorted(set(present) - set(files)):
        return f"{stage.dir / rel} was not there at publication"
    for rel, meta in files.items():
        if rel not in present:
            return f"{stage.dir / rel} is missing"
        if present[rel] != meta["size"]:
            return f"{stage.dir / rel} has {present[rel]} bytes, {meta['size']} at publication"
    memo = (str(stage.dir), record.stat().st_mtime_ns)
    if memo in _HASHED:
        return None
    for rel, meta in files.items():
        if file_sha256(stage.dir / rel) != meta["sha256"]:
            return f"{stage.dir / rel} does not match its sha256 recorded at publication"
    _HASHED.add(memo)
    return None


def _quarantine(stage: Stage, problem: str) -> Path:
    """Move a corrupt stage aside (kept for inspection, never read again) and say so in one line."""
    n = 0
    while (aside := stage.dir.with_name(f"{stage.key}.corrupt-{n}")).exists():
        n += 1
    os.replace(stage.dir, aside)
    log.warning("cache: %s; moved %s aside to %s and building the %s stage again",
                problem, stage.dir, aside, stage.kind)
    return aside


def _remove_stale_temporaries(stage: Stage) -> None:
    """Temporaries of atomic writes in the stage directory left by a killed build (the caller
    holds the stage lock, so nobody is writing them)."""
    for tmp in stage.dir.glob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


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

    def published(self, kind: str, key: str) -> Path:
        """Where the artefact of a ``kind`` stage (one of :data:`ARTEFACTS`) with ``key`` is."""
        return Stage(kind, key, self.root, ARTEFACTS[kind]).path

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
                _remove_stale_temporaries(stage)
                log.info("building %s %s", kind, stage.key)
                write_json(stage.dir / "spec.json", _jsonable(spec))
            with atomic_path(stage.path) as tmp:
                build(stage, tmp)
                wrote = tmp.exists()
                if lock is not None and wrote:  # before the rename: no artefact without them
                    record_checksums(stage, tmp)
            if lock is not None and wrote:
                # Published: the resumable state is no longer needed.
                shutil.rmtree(stage.work_dir, ignore_errors=True)
            if not distributed.broadcast(wrote):  # only rank zero publishes under DDP
                raise RuntimeError(f"stage {kind} {stage.key}: the build wrote nothing")
            distributed.barrier()  # no rank reads the artefact before rank zero has published it
            _check_visible(stage)
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
            if lock is not None and stage.exists() and verify_stage(stage) is None:
                decision = "cached"
                if waited:
                    log.info("%s %s was built by another job meanwhile", stage.kind, stage.key)
            elif lock is not None:
                stage.dir.mkdir(parents=True, exist_ok=True)
                try:
                    lock.acquire(timeout=LOCK_POLL_S)
                except Timeout:  # another job is building it: meet the other ranks, wait on
                    waited = True
                else:
                    decision = _decide_locked(stage, lock, waited)
            decision = distributed.broadcast(decision)
            if decision != "wait":
                return decision


def _decide_locked(stage: Stage, lock: FileLock, waited: bool) -> str:
    """Holding the lock: "build" (keeping the lock) unless another job published the stage whole
    meanwhile. A corrupt stage is checked again here (another job may have rebuilt it already)
    and moved aside before the build."""
    if not stage.exists():
        return "build"
    problem = verify_stage(stage)
    if problem is None:
        lock.release()
        if waited:
            log.info("%s %s was built by another job meanwhile", stage.kind, stage.key)
        return "cached"
    _quarantine(stage, problem)
    stage.dir.mkdir(parents=True, exist_ok=True)
    return "build"


def resume_checkpoint(path: Path) -> Path | None:
    """``path`` if it is a checkpoint to resume from, None if there is none or it does not load
    (torn by a full disk or a kill while Lightning wrote it): then it is moved aside, named in
    one log line, and the stage starts over rather than failing at every rerun."""
    if not path.exists():
        return None
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (whatever makes it unreadable, it cannot be resumed)
        aside = path.with_name(path.name + ".torn")
        os.replace(path, aside)
        log.warning("cache: the resume checkpoint %s does not load (%s); moved it to %s and training "
                    "the stage from its start", path, e.__class__.__name__, aside)
        return None
    return path


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
