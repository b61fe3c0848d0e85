"""What each stage's cache key is made of (its spec, hashed by nightseg.infra.cache.stage_key).

A key holds exactly what determines its artefact: the stage's training data, the model config,
seeds and the trainer settings that change results. Test and validation sets are not in it, so
scoring on a new test set never retrains anything; every job of a night_count sweep finds the same
translator and generated images. The specs are computed without training, so a job's keys can
be known before any stage runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from nightseg.infra.hardware import choose_precision, uses_cuda
from nightseg.infra.job import Job

# The data settings that change what each stage learns or produces (data_spec's ``keys``).
TRANSLATOR_DATA_KEYS = ("resize", "translate_crop", "translate_batch_size", "hflip")
SEGMENTER_DATA_KEYS = ("resize", "train_crop", "batch_size", "hflip")
GENERATED_DATA_KEYS = ("resize",)


def data_spec(cfg: DictConfig, sets: Sequence, keys: Sequence[str],
              class_names: Sequence[str] | None = None) -> dict:
    """The part of the data that determines what a stage is trained on, for its cache key.

    Only the stage's training sets (their files, label mappings and own sizes; see
    ``SampleSet.fingerprint``) and the data settings in ``keys``: validation and test sets, loader
    settings and error handling do not change a trained model, so adding a test set or pointing a
    test root elsewhere re-scores cached models instead of retraining them. Moving a
    dataset root keeps the keys too.
    """
    spec = {"sets": [s.fingerprint() for s in sets]}
    for key in keys:
        value = OmegaConf.select(cfg, f"data.{key}")
        spec[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if class_names is not None:
        spec["classes"] = list(class_names)
    return spec


def trainer_spec(cfg: DictConfig, world_size: int = 1, precision=None) -> dict:
    """Trainer settings that change results, not the ones that only change logging: the precision
    (as resolved for the device, see nightseg.infra.hardware) and, for training on several processes,
    their number: N processes train on N times the global batch for 1/N of the steps, another
    recipe. A one-process spec stays exactly what it always was, so its cache keys do not move.
    """
    if precision is None:  # as the job resolves it: trainer.precision=auto is never a key's value
        precision = choose_precision(cfg.trainer.precision, uses_cuda(cfg.trainer.get("accelerator", "auto")))
    spec = {"precision": str(precision)}
    if world_size > 1:
        spec["world_size"] = int(world_size)
    return spec


def job_trainer_spec(job: Job, training: bool = True) -> dict:
    """The trainer part of a job's cache keys: with the world size for training stages (generating
    images is inference and does not depend on the number of processes)."""
    return trainer_spec(job.cfg, job.world.size if training else 1, job.trainer_args().get("precision"))


def translator_spec(job: Job, translator_cfg: DictConfig) -> dict:
    """The translator's (or a distillation teacher's): its config, the unpaired day and night
    training images, the translator seed."""
    catalog = job.catalog
    return {"translator": OmegaConf.to_container(translator_cfg, resolve=True),
            "data": data_spec(job.cfg, [catalog.translate_day, catalog.translate_night],
                              TRANSLATOR_DATA_KEYS),
            "seed": job.cfg.translator_seed, "trainer": job_trainer_spec(job)}


def generated_night_spec(job: Job, translator_key: str) -> dict:
    """The generated night images': the translator's key, the labelled day pool and the order seed."""
    return {"translator": translator_key,
            "data": data_spec(job.cfg, [job.catalog.train], GENERATED_DATA_KEYS),
            "order_seed": int(job.cfg.strategy.order_seed),
            "trainer": job_trainer_spec(job, training=False)}


def segmenter_spec(job: Job, extra_spec: dict | None = None) -> dict:
    """The segmenter's: its config, the labelled day pool and its classes, the seed, and what was
    added to the pool (``extra_spec``: the generated night images, or None for a day-only
    segmenter, the same artefact for night2day_inference and augment night_count=0)."""
    cfg = job.cfg
    return {"segmenter": OmegaConf.to_container(cfg.model.segmenter, resolve=True),
            "data": data_spec(cfg, [job.catalog.train], SEGMENTER_DATA_KEYS, job.catalog.class_names),
            "seed": cfg.seed, "trainer": job_trainer_spec(job), "extra": extra_spec}


def gate_spec(job: Job) -> dict:
    """The brightness gate's: the translator's unlabelled day and night images, resized."""
    catalog = job.catalog
    return {"gate": "mean_luma",
            "data": data_spec(job.cfg, [catalog.translate_day, catalog.translate_night], ("resize",))}
