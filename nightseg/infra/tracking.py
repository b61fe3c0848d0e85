"""Experiment tracking for a job: one Lightning logger per stage, plus the job's final results.

``logger=wandb`` (the default) keeps one wandb run per job, offline unless ``logger.mode=online``
(sync later with ``wandb sync <run_dir>/wandb/offline-run-*``); every stage logs into it under its
own prefix (``translator/...``, ``segmenter/...``). Sweep jobs share a group (the sweep directory),
are named from their overrides and tagged with strategy and night_count. ``logger=csv`` writes
CSV files and PNGs only. Either way nothing needs an account.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from nightseg.core.visualize import save_png
from nightseg.infra import distributed

log = logging.getLogger(__name__)


def log_image(logger: Logger | None, key: str, image: np.ndarray, step: int | None = None,
              caption: str | None = None) -> None:
    """Log one (H, W, 3) uint8 image: to wandb when the logger is wandb, else as a PNG file in
    the logger's directory."""
    if logger is None:
        return
    if isinstance(logger, WandbLogger):
        logger.log_image(key, [image], step=step, caption=[caption or key])
    elif getattr(logger, "log_dir", None):
        name = key.replace("/", "_") + (f"_{step:04d}" if step is not None else "") + ".png"
        if distributed.is_rank_zero():
            save_png(image, Path(logger.log_dir) / "images" / name)


class _StageWandbLogger(WandbLogger):
    """A WandbLogger that nests a stage's hyperparameters under the stage name, so the
    translator's and the segmenter's ``lr`` do not overwrite each other in the run config."""

    def __init__(self, stage: str, **kwargs):
        super().__init__(prefix=stage, **kwargs)
        self._stage = stage

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        params = dict(params) if isinstance(params, Mapping) else vars(params)
        super().log_hyperparams({self._stage: params})


class Tracker:
    """Base tracker: CSV logs per stage; results and images as files in the run directory."""

    def __init__(self, save_dir: str | os.PathLike, **_: Any):
        self.save_dir = Path(save_dir)

    def stage_logger(self, stage: str) -> Logger:
        return CSVLogger(self.save_dir, name="logs", version=stage)

    def log_results(self, results: Sequence[Mapping], summary: Mapping[str, float]) -> None:
        """Final metrics of the job (the CSV tracker has them in metrics.json already)."""

    def log_image(self, key: str, image: np.ndarray, caption: str | None = None) -> None:
        """Final image panels (already saved as PNG files by the strategy)."""

    def finish(self) -> None:
        """Close the job's run."""


class CSVTracker(Tracker):
    """``logger=csv``: Lightning CSV logs in ``<run_dir>/logs/<stage>/metrics.csv``."""


class WandbTracker(Tracker):
    """``logger=wandb``: one wandb run per job, offline by default."""

    def __init__(self, save_dir: str | os.PathLike, project: str = "nightseg",
                 entity: str | None = None, mode: str = "offline", group: str | None = None,
                 name: str | None = None, tags: Sequence[str] = (),
                 run_config: Mapping | None = None, **_: Any):
        super().__init__(save_dir)
        if mode not in ("offline", "online", "disabled", "dryrun"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.run = None
        if not distributed.is_rank_zero():
            return
        import wandb

        self.save_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=project, entity=entity, mode=mode, group=group, name=name,
                              tags=list(tags), config=dict(run_config or {}), dir=str(self.save_dir),
                              reinit="finish_previous")

    def stage_logger(self, stage: str) -> Logger:
        if self.run is None:  # ranks other than zero log nothing
            return CSVLogger(self.save_dir, name="logs", version=stage)
        return _StageWandbLogger(stage, experiment=self.run, save_dir=str(self.save_dir))

    def log_results(self, results: Sequence[Mapping], summary: Mapping[str, float]) -> None:
        if self.run is None:
            return
        import wandb

        rows, class_rows = [], []
        for r in results:
            rows.append([r["test_set"], r["condition"], r["miou"], r["pixel_acc"], r["mean_acc"]])
            for cls, iou in r["per_class_iou"].items():
                class_rows.append([r["test_set"], r["condition"], cls, iou])
        self.run.log({
            "results/table": wandb.Table(
                columns=["test_set", "condition", "miou", "pixel_acc", "mean_acc"], data=rows),
            "results/per_class_iou": wandb.Table(
                columns=["test_set", "condition", "class", "iou"], data=class_rows),
        })
        self.run.summary.update(dict(summary))

    def log_image(self, key: str, image: np.ndarray, caption: str | None = None) -> None:
        if self.run is None:
            return
        import wandb

        self.run.log({key: wandb.Image(image, caption=caption or key)})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
