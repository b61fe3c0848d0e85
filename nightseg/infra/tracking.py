"""Experiment tracking for a job: one Lightning logger per stage, plus the job's final results.

``logger=wandb`` (the default) keeps one wandb run per job, offline unless ``logger.mode=online``
(sync later with ``wandb sync <run_dir>/wandb/offline-run-*``). Every logger uses one hierarchy of
keys (README, Review on wandb): a set's scores as ``test/<set>/<condition>/<metric>`` (evaluation)
and ``val/<set>/<metric>`` (during training), whichever stage measured them; a stage's own curves
as ``train/<loss>``, which the wandb run files under the stage (``segmenter/train/loss``), each
stage on its own step axis (``segmenter/step``). The CSV logger keeps the stage as its directory
(``logs/segmenter/metrics.csv``: ``train/loss``). A job's run config holds the study's coordinates
at its top level (:func:`study_config`), its summary the final scores. Sweep jobs share a group
(:func:`sweep_group`), are named from their overrides and tagged with strategy and night_count.
``logger=csv`` writes CSV files and PNGs only. Either way nothing needs an account.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import Container, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from nightseg.core.visualize import save_png
from nightseg.infra import distributed

log = logging.getLogger(__name__)

# Keys in these sections name a set's scores and are the same quantity whichever stage measured
# them: no stage prefix. Every other key a stage logs is filed under the stage's name.
SCORE_SECTIONS = ("val", "test")
# A stage whose name starts so only scores (nightseg.inference.evaluation): its keys are final
# scores, on no step axis, and the hyperparameters it logs are the segmenter's it scored.
EVAL_PREFIX = "eval_"


def score_key(test_set: str, condition: str, metric: str) -> str:
    """The key of a final score: ``test/<set>/<condition>/<metric>`` (condition raw, night2day
    or night2day_gated; metric miou, pixel_acc, mean_acc, psnr, ssim, per_class_iou)."""
    return f"test/{test_set}/{condition}/{metric}"


def sweep_group(sweep_dir: str | os.PathLike) -> str:
    """The wandb group of a sweep's jobs and of its report's summary run: the sweep directory's
    last two names (``multirun/2026-12-07/11-40-00`` -> ``2026-12-07_11-40-00``), so that sweeps
    started at the same time on different days do not share a group."""
    parts = Path(sweep_dir).resolve().parts[-2:]
    return "_".join(parts)


def study_config(*, strategy: str, night_count: int | None, seed: int | None,
                 translator_seed: int | None, data: str, gate: str | None,
                 cfg: Mapping | None = None) -> dict:
    """A job's wandb run config: the study's coordinates at the top level, where a sweep group's
    runs table groups, filters and plots by them (night mIoU against ``night_count``), and the
    whole resolved config under ``cfg``. The stages add their hyperparameters under their names
    (``translator``, ``segmenter``)."""
    return {"strategy": strategy, "night_count": night_count, "seed": seed,
            "translator_seed": translator_seed, "data": data, "gate": gate or "none",
            "cfg": dict(cfg or {})}


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
    """One stage's view of the job's wandb run: keys in the job's hierarchy instead of Lightning's
    prefix join (``segmenter-train/loss``), the stage's curves against its own step
    (``<stage>/step``, with ``wandb.define_metric``), and the stage's hyperparameters nested under
    its name, so the translator's and the segmenter's ``lr`` do not overwrite each other."""

    def __init__(self, stage: str, **kwargs):
        super().__init__(**kwargs)
        self._stage = stage
        self._scores_only = stage.startswith(EVAL_PREFIX)
        self._axes: set[str] = set()

    @property
    def step_key(self) -> str:
        return f"{self._stage}/step"

    def wandb_key(self, key: str) -> str | None:
        """``val/...`` and ``test/...`` as they are, anything else under the stage's name; None
        for what an evaluation logs besides its scores (the ``epoch`` Lightning adds)."""
        if key.split("/", 1)[0] in SCORE_SECTIONS:
            return key
        return None if self._scores_only else f"{self._stage}/{key}"

    def _define_axis(self, section: str) -> None:
        if section in self._axes:
            return
        run = self.experiment
        if not self._axes:
            run.define_metric(self.step_key, hidden=True)
        glob = f"{self._stage}/*" if section == self._stage else f"{section}/*"
        run.define_metric(glob, step_metric=self.step_key, step_sync=True)
        self._axes.add(section)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        row = {}
        for key, value in metrics.items():
            name = self.wandb_key(key)
            if name is not None:
                row[name] = value
        if not row:
            return
        if step is not None and not self._scores_only:
            for name in row:
                self._define_axis(name.split("/", 1)[0])
            row[self.step_key] = step
        self.experiment.log(row)

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        params = dict(params) if isinstance(params, Mapping) else vars(params)
        # An evaluation's module carries the hyperparameters of the segmenter it scores.
        super().log_hyperparams({"segmenter" if self._scores_only else self._stage: params})


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
    """``logger=wandb``: one wandb run per job, offline by default. ``job_type`` tells a job
    (``run``, ``evaluate``) from a sweep's summary run (``report``) in the group's runs table."""

    def __init__(self, save_dir: str | os.PathLike, project: str = "nightseg",
                 entity: str | None = None, mode: str = "offline", group: str | None = None,
                 name: str | None = None, tags: Sequence[str] = (),
                 run_config: Mapping | None = None, job_type: str | None = None, **_: Any):
        super().__init__(save_dir)
        if mode not in ("offline", "online", "disabled", "dryrun"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.run = None
        if not distributed.is_rank_zero():
            return
        import wandb

        self.save_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        # Hydra's instantiate hands the run config over as an OmegaConf node: plain containers, or
        # wandb would store every nested section as its str().
        if isinstance(run_config, Container):
            run_config = OmegaConf.to_container(run_config, resolve=True)
        self.run = wandb.init(project=project, entity=entity, mode=mode, group=group, name=name,
                              tags=list(tags), config=dict(run_config or {}), dir=str(self.save_dir),
                              job_type=job_type, reinit="finish_previous")

    def stage_logger(self, stage: str) -> Logger:
        if self.run is None:  # ranks other than zero log nothing
            return CSVLogger(self.save_dir, name="logs", version=stage)
        return _StageWandbLogger(stage, experiment=self.run, save_dir=str(self.save_dir))

    def log_results(self, results: Sequence[Mapping], summary: Mapping[str, float]) -> None:
        """The result rows as tables (``test/results``: one row per set and condition;
        ``test/<set>/<condition>/per_class_iou``: class and IoU) and ``summary`` (final scores
        under :func:`score_key`) as the run's summary."""
        if self.run is None:
            return
        import wandb

        columns = ["test_set", "condition", "miou", "pixel_acc", "mean_acc"]
        tables = {"test/results": wandb.Table(columns=columns,
                                              data=[[r[k] for k in columns] for r in results])}
        for r in results:
            tables[score_key(r["test_set"], r["condition"], "per_class_iou")] = wandb.Table(
                columns=["class", "iou"], data=[[c, v] for c, v in r["per_class_iou"].items()])
        self.run.log(tables)
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
