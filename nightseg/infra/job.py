"""The context of one job (a run, a sweep point, an evaluation): :class:`Job`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf, open_dict

from nightseg.infra import preemption
from nightseg.infra.cache import StageCache
from nightseg.infra.distributed import World
from nightseg.infra.hardware import (
    AUTO,
    loader_workers,
    resolve_channels_last,
    resolve_trainer,
    usable_cores,
    uses_cuda,
)
from nightseg.infra.tracking import Tracker

if TYPE_CHECKING:  # annotations only: the job context sits below the data layer
    from nightseg.data.catalog import DataCatalog

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What every stage and every evaluation of one job needs: the config, the run directory, the
    tracker, the dataset catalog, the stage cache (training only), the processes and Trainer
    arguments, and the record of which stages were trained, reused or loaded and how long they took
    (metrics.json's stages, timings_s and checkpoints) and which data sets were prepared (prepared)."""

    cfg: DictConfig
    run_dir: Path
    tracker: Tracker
    catalog: DataCatalog
    cache: StageCache | None = None  # None where nothing is trained (python -m nightseg.evaluate)
    stages: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    prepared: dict[str, str] = field(default_factory=dict)  # data set -> "cached" | "trained" (built)
    gate: dict | None = None  # the gate used at test time and its fit, for metrics.json
    world: World = World()  # the processes training runs on (nightseg.infra.distributed.start)
    trainer_kwargs: dict | None = None  # cfg.trainer after the device's choices (hardware.resolve_trainer)

    def __post_init__(self) -> None:
        # model.segmenter.channels_last=auto: the bool it resolves to here goes into the stage's key.
        if OmegaConf.select(self.cfg, "model.segmenter.channels_last") == AUTO:
            cuda = uses_cuda(self.trainer_args().get("accelerator", "auto"))
            with open_dict(self.cfg):
                self.cfg.model.segmenter.channels_last = resolve_channels_last(AUTO, cuda)
        # data.num_workers=auto: resolved once for this machine (nightseg.infra.hardware.loader_workers)
        # before any stage builds a loader. Batches do not depend on it, so no key does either.
        if self.cfg.data.get("num_workers") == AUTO:
            trainer = self.trainer_args()
            devices = trainer.get("devices")  # processes per node, where it is a number
            workers = loader_workers(AUTO, uses_cuda(trainer.get("accelerator", "auto")),
                                     devices if isinstance(devices, int) and devices > 0 else 1)
            with open_dict(self.cfg):
                self.cfg.data.num_workers = workers
            log.info("data.num_workers=auto: %d (%d usable cores)", workers, usable_cores())

    def trainer_args(self) -> dict:
        """The arguments every stage's Trainer starts from."""
        if self.trainer_kwargs is not None:
            return dict(self.trainer_kwargs)
        return resolve_trainer(OmegaConf.to_container(self.cfg.trainer, resolve=True))

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 2)

    def record(self, stage: str, status: str, path: Path | None = None) -> None:
        self.stages[stage] = status
        if path is not None:
            self.checkpoints[stage] = str(path)
        where = f" ({path})" if path is not None else ""
        log.info("stage %s: %s%s", stage, status, where)
        preemption.check()  # a requeue signal during a Trainer's last step: stop between stages
