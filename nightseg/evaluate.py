"""python -m nightseg.evaluate: score trained models on any data config, without training.

    python -m nightseg.evaluate models.run=outputs/2026-11-26/10-00-00 data=camvid
    python -m nightseg.evaluate models.segmenter=<key or model.ckpt> models.translator=<...> data=zju

The models come from nightseg.inference.loading (a run's checkpoints, stage-cache keys or paths)
and run in the runtime asked for (nightseg.deploy.pipelines); the scoring is
nightseg.inference.evaluation's, run as a run's strategy runs it: every validation and test set of
the data raw, then (with a translator) the test sets translated night->day, through the gate if one
is named. So the models of a run, scored on that run's data, give exactly its result rows. Nothing
is trained (runtime=onnxruntime keeps its exported graphs in the stage cache). The metrics.json has
a run's schema (nightseg.inference.results) with strategy "evaluate", stages "loaded" and the
checkpoints evaluated; conf/evaluate.yaml has the options.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from nightseg.core.cli import errors_as_one_line
from nightseg.core.errors import ConfigError
from nightseg.deploy.pipelines import check_runtime, load_pipeline
from nightseg.inference.evaluation import evaluate_pipeline, save_panels
from nightseg.inference.loading import Classes, resolve
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.inference.results import print_table, write_metrics
from nightseg.infra import distributed
from nightseg.infra.hardware import resolve_trainer
from nightseg.infra.job import Job
from nightseg.infra.tracking import study_config
from nightseg.training.config import check_catalog, validate_data

log = logging.getLogger("nightseg")


def check_classes(classes: Classes, catalog, data_name: str, segmenter: Path) -> None:
    """Scores of a segmenter for other classes than the data's would be meaningless."""
    if list(classes.names) == list(catalog.class_names):
        return
    raise ConfigError(
        f"models.segmenter={segmenter} predicts {classes.num_classes} classes "
        f"({', '.join(classes.names[:4])}, ...) but data={data_name} has {catalog.num_classes} "
        f"({', '.join(catalog.class_names[:4])}, ...); evaluate it on data with its classes, or "
        f"give a segmenter trained on data={data_name}")


def evaluate_models(cfg: DictConfig, run_dir: str | Path | None = None) -> dict:
    """Evaluate the models ``cfg.models`` names on ``cfg.data``; returns the metrics written to
    ``<run_dir>/metrics.json``."""
    validate_data(cfg)
    check_runtime(cfg.runtime)
    if not isinstance(cfg.num_panels, int) or cfg.num_panels < 0:
        raise ConfigError(f"num_panels={cfg.num_panels}: must be a non-negative integer")
    models = resolve(cfg.models, cfg.paths.cache_dir)
    if run_dir is None:
        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    trainer_kwargs = resolve_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    world = distributed.start(trainer_kwargs)
    run_dir = Path(distributed.broadcast(str(run_dir)))

    catalog = instantiate(cfg.data.catalog)
    check_catalog(cfg, catalog)
    loaded = load_pipeline(models, cfg.runtime, cfg.paths.cache_dir)
    check_classes(loaded.classes, catalog, cfg.data.name, models.segmenter)
    with open_dict(cfg):  # metrics.json says what the models were trained with, where known
        cfg.seed = models.run.get("seed")
        cfg.translator_seed = models.run.get("translator_seed")
    log.info("data %s: %s", cfg.data.name, catalog.summary())

    config = study_config(strategy=cfg.strategy.name, night_count=models.run.get("night_count"),
                          seed=cfg.seed, translator_seed=cfg.translator_seed, data=cfg.data.name,
                          # as a run's strategy.gate: a fitted gate file is what auto fitted
                          gate="none" if models.gate is None else "auto",
                          cfg=OmegaConf.to_container(cfg, resolve=True))
    tracker = instantiate(cfg.logger, _recursive_=False, save_dir=run_dir, tags=["evaluate"],
                          group=None, name="evaluate", job_type="evaluate", run_config=config)
    # Scoring trains nothing: a job context without a stage cache.
    job = Job(cfg=cfg, run_dir=run_dir, tracker=tracker, catalog=catalog, world=world,
              trainer_kwargs=trainer_kwargs)
    pipeline, classes = loaded.pipeline, loaded.classes
    for stage, path in (("translator", models.translator), ("segmenter", models.segmenter),
                        ("gate", models.gate)):
        if path is not None:
            job.record(stage, "loaded", path)
        elif stage != "gate":
            job.record(stage, "unused")
    score = dict(num_classes=classes.num_classes, class_names=classes.names,
                 ignore_index=classes.ignore_index, num_panels=int(cfg.num_panels))
    try:
        # As the strategies do: every day validation and night test set as it is...
        raw = evaluate_pipeline(job, SegmentationPipeline(pipeline.segmenter),
                                catalog.val + catalog.test, **score)
        save_panels(job, raw)
        evaluations = [raw]
        # ...then the night test sets translated night->day first (through the gate).
        if pipeline.translator is not None and catalog.test:
            if pipeline.gate is not None:
                job.gate = pipeline.gate.to_dict()
            translated = evaluate_pipeline(job, pipeline, catalog.test, **score)
            save_panels(job, translated)
            evaluations.append(translated)
        metrics = write_metrics(job, evaluations, night_count=models.run.get("night_count"))
    finally:
        tracker.finish()
    if distributed.is_rank_zero():
        print_table(metrics, run_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with errors_as_one_line([cfg.paths.cache_dir, HydraConfig.get().runtime.output_dir]):
        evaluate_models(cfg)


if __name__ == "__main__":
    main()
