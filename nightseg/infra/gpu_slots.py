"""One GPU per sweep job: ``hydra/launcher=gpus`` runs the jobs of a sweep in parallel on one node,
each on a GPU of its own (README: Many GPUs, one translator).

The launcher (conf/hydra/launcher/gpus.yaml) is Hydra's joblib launcher with one worker process
per visible GPU. At the start of its first job each worker claims a GPU that no other process of
this user on this node holds (a file lock per GPU, held until the worker ends and released by the
OS should it die) and narrows ``CUDA_VISIBLE_DEVICES`` to it before anything initialises CUDA; its
later jobs run on the same GPU. So at most one job trains on each GPU, whatever order the jobs
finish in, and the jobs share the stage cache (the translator and its generated night images are
trained once and reused, under the cache's own locks).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from omegaconf import OmegaConf

from nightseg.core.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCHER = "gpus"  # the hydra/launcher choice that asks for one GPU per job
_NO_DEVICES = ("", "-1", "none", "void", "nodevfiles")
_held: tuple[str, FileLock] | None = None  # this process's GPU and its lock


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs), or
    ``0..n-1`` for torch's count (read through NVML: no CUDA initialisation)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [] if env.strip().lower() in _NO_DEVICES else [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def slots_dir() -> Path:
    """Where the GPU locks of this user on this node live (node-local: the GPUs are)."""
    return Path(tempfile.gettempdir()) / f"nightseg-gpu-slots-{os.getuid()}"


def claim(gpus: list[str], directory: Path) -> tuple[str, FileLock] | None:
    """The first of ``gpus`` whose lock no other process holds, with that lock; None if all are."""
    directory.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        lock = FileLock(str(directory / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu)}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        return gpu, lock
    return None


def one_gpu_per_job(launcher: str | None, devices: Any, directory: Path | None = None) -> str | None:
    """Under ``hydra/launcher=gpus``, this job's GPU (claimed by this worker's first job) set as
    its only visible device; None under any other launcher or where no GPU is visible."""
    global _held
    if launcher != LAUNCHER:
        return None
    if devices != 1:
        raise ConfigError(f"hydra/launcher=gpus runs each job on one GPU; trainer.devices={devices} "
                          "asks for more (set trainer.devices=1, or drop the launcher and use DDP)")
    if _held is not None:
        return _held[0]
    gpus = visible_gpus()
    if not gpus:
        log.warning("hydra/launcher=gpus: no GPU visible, the jobs run on the CPU")
        return None
    import torch

    if torch.cuda.is_initialized():  # CUDA_VISIBLE_DEVICES would no longer apply
        raise ConfigError("hydra/launcher=gpus: CUDA was initialised before the job chose its GPU; "
                          "run the sweep from python -m nightseg.run -m")
    got = claim(gpus, directory or slots_dir())
    if got is None:
        raise ConfigError(
            f"hydra/launcher=gpus: every visible GPU ({', '.join(gpus)}) is held by another job of "
            f"this node (locks in {directory or slots_dir()}); set hydra.launcher.n_jobs to at most "
            f"{len(gpus)}, or wait for the other sweep")
    _held = got
    os.environ["CUDA_VISIBLE_DEVICES"] = got[0]
    log.info("hydra/launcher=gpus: this job runs on GPU %s", got[0])
    return got[0]


def _gpu_count() -> int:
    """The launcher's n_jobs: one worker per visible GPU (at least one)."""
    return max(1, len(visible_gpus()))


if not OmegaConf.has_resolver("nightseg_gpu_count"):
    OmegaConf.register_new_resolver("nightseg_gpu_count", _gpu_count)
