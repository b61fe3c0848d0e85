"""The main job: ``python -m nightseg.run [overrides]`` (Hydra; config in conf/).

    python -m nightseg.run strategy=night2day_inference
    python -m nightseg.run -m strategy=augment night_count=0,250,500,1000 seed=0,1,2
    python -m nightseg.report multirun/<date>/<time>

Checks the config, builds the dataset catalog, runs the strategy (which trains or reuses each
stage through the cache), writes metrics.json and panels into the run directory and prints a table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nightseg.core.cli import errors_as_one_line
from nightseg.core.errors import ConfigError
from nightseg.inference.results import print_table
from nightseg.infra import distributed, gpu_slots, preemption
from nightseg.infra.cache import stage_cache
from nightseg.infra.hardware import resolve_trainer
from nightseg.infra.job import Job
from nightseg.infra.tracking import study_config, sweep_group
from nightseg.training.config import check_catalog, validate
from nightseg.training.strategies import STRATEGIES

log = logging.getLogger("nightseg")


def _tracker_kwargs(cfg: DictConfig, run_dir: Path) -> dict:
    """Group, name, tags and run config for the tracker: one group per sweep, a name from the
    overrides, the study's coordinates at the top of the config."""
    config = study_config(strategy=cfg.strategy.name, night_count=cfg.get("night_count"),
                          seed=cfg.get("seed"), translator_seed=cfg.get("translator_seed"),
                          data=cfg.data.name, gate=cfg.strategy.get("gate"),
                          cfg=OmegaConf.to_container(cfg, resolve=True))
    kwargs = {"save_dir": run_dir, "tags": [cfg.strategy.name], "group": None, "name": None,
              "run_config": config, "job_type": "run"}
    if cfg.get("night_count") is not None:
        kwargs["tags"].append(f"night_count={cfg.night_count}")
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        kwargs["name"] = hc.job.override_dirname or hc.job.name
        if hc.mode == RunMode.MULTIRUN:
            kwargs["group"] = sweep_group(hc.sweep.dir)
            kwargs["name"] = hc.job.override_dirname or f"job{hc.job.num}"
    return kwargs


def run(cfg: DictConfig, run_dir: str | os.PathLike | None = None) -> dict:
    """Run one job; returns the metrics written to ``<run_dir>/metrics.json``."""
    validate(cfg)
    preemption.install()  # USR1/USR2: stop at a step, save it, requeue (README: Multi-GPU and clusters)
    preemption.warn_if_cache_is_node_local(cfg.paths.cache_dir)
    if run_dir is None:
        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.strategy.name not in STRATEGIES:
        raise ConfigError(f"strategy.name={cfg.strategy.name} is not a strategy; use one of "
                          f"{sorted(STRATEGIES)}")
    if HydraConfig.initialized():  # hydra/launcher=gpus: this job's own GPU, before CUDA starts
        gpu_slots.one_gpu_per_job(HydraConfig.get().runtime.choices.get("hydra/launcher"),
                                  cfg.trainer.devices)
    torch.set_float32_matmul_precision("high")
    trainer_kwargs = resolve_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    # Several processes (torchrun, srun, trainer.devices=N) meet here, before any stage.
    world = distributed.start(trainer_kwargs)
    run_dir = Path(distributed.broadcast(str(run_dir)))  # rank zero's, should the clocks differ

    catalog = instantiate(cfg.data.catalog)
    check_catalog(cfg, catalog)
    log.info("data %s: %s", cfg.data.name, catalog.summary())
    tracker = instantiate(cfg.logger, _recursive_=False, **_tracker_kwargs(cfg, run_dir))
    job = Job(cfg=cfg, run_dir=run_dir, cache=stage_cache(cfg.paths.cache_dir),
              tracker=tracker, catalog=catalog, world=world, trainer_kwargs=trainer_kwargs)
    try:
        metrics = STRATEGIES[cfg.strategy.name](job)
    finally:
        tracker.finish()
    if distributed.is_rank_zero():
        print_table(metrics, run_dir)
    return metrics


# Exit status after SIGTERM (128 + 15, what a shell reports for a process the signal ended): the
# job was stopped, not failed, and the same command resumes it. After USR1/USR2 (Slurm's warning
# before a time limit or preemption) it is 128 + that signal, and the job was requeued
# (nightseg.infra.preemption).
EXIT_SIGTERM = 143


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        # A full disk or an unwritable cache or run directory is named too (also when wrapped,
        # e.g. in Hydra's InstantiationException from rendering the dataset).
        with errors_as_one_line([cfg.paths.cache_dir, HydraConfig.get().runtime.output_dir]):
            run(cfg)
    except SIGTERMException:
        # Lightning raises it (a SystemExit with status 0) at the step after SIGTERM, USR1 or USR2;
        # the stage in training has saved its resume checkpoint. Requeue where the signal asks for
        # it, leave with a status that says so, and leave the whole process: in a sweep, Hydra
        # would otherwise go on to the next job.
        raise SystemExit(preemption.finish_stop()) from None


if __name__ == "__main__":
    main()
