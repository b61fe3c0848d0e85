"""Checks of the composed config that run before any training (the cache-key specs derived from it
are nightseg.training.specs').

Every error names the key and how to fix it; Hydra itself already rejects unknown group options
("Could not find 'strategy/foo'") and unknown keys without a ``+``.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from nightseg.core.errors import ConfigError
from nightseg.data.catalog import IGNORE_INDEX, ON_ERROR_CHOICES
from nightseg.infra.hardware import uses_cuda
from nightseg.models.speed import check_compiler

MIN_SIZE = 32  # the encoders downsample by 8 and the PatchGAN by 8 more; below this nothing is left
# Strategies that add night_count translated images to the segmenter's training set.
NIGHT_COUNT_STRATEGIES = ("augment", "augment_night2day")
GATE_CHOICES = ("none", "auto")


def _check_size(cfg: DictConfig, key: str, minimum: int = MIN_SIZE) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ConfigError(f"{key}={_show(value)}: give [rows, cols] as two integers, e.g. {key}=[128,256]")
    if min(value) < minimum:
        raise ConfigError(f"{key}={_show(value)} is too small: both sides must be at least {minimum} "
                          f"pixels, e.g. {key}=[{max(minimum, value[0])},{max(minimum, value[1])}]")


def _show(value) -> str:
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value).replace(" ", "")


def _check_positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"{key}={value}: must be {bound} integer")


def _check_budget(cfg: DictConfig) -> None:
    """The segmenter trains for max_steps steps or max_epochs epochs: exactly one is set."""
    epochs = OmegaConf.select(cfg, "model.segmenter.max_epochs")
    steps = OmegaConf.select(cfg, "model.segmenter.max_steps")
    if epochs is not None and steps is not None:
        raise ConfigError(
            f"model.segmenter.max_epochs={epochs} and model.segmenter.max_steps={steps} are both set; "
            f"give one training budget: add model.segmenter.max_steps=null to train {epochs} epochs, "
            f"or model.segmenter.max_epochs=null to train {steps} steps")
    if epochs is None and steps is None:
        raise ConfigError("the segmenter has no training budget: set model.segmenter.max_steps=N "
                          "(optimizer steps) or model.segmenter.max_epochs=N (passes over the data)")


def _check_night_count_fits(cfg: DictConfig, pool: int) -> None:
    night_count = cfg.get("night_count")
    if cfg.strategy.name in NIGHT_COUNT_STRATEGIES and night_count is not None and night_count > pool:
        # A rendered dataset (data.counts.train, the synthetic one) can simply render more.
        larger = ("" if OmegaConf.select(cfg, "data.counts.train") is None else
                  f", or render a larger pool with data.counts.train={night_count}")
        raise ConfigError(f"night_count={night_count} is larger than the labelled day pool of "
                          f"{cfg.data.name} ({pool} images); use night_count<={pool}{larger}")


def check_catalog(cfg: DictConfig, catalog) -> None:
    """Checks that need the dataset: its class count, and night_count against its day pool."""
    if catalog.num_classes != cfg.data.num_classes:
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but data={cfg.data.name} has "
                          f"{catalog.num_classes} classes; set data.num_classes={catalog.num_classes}")
    _check_night_count_fits(cfg, len(catalog.train))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for values that would fail (or silently mislead) later."""
    strategy = cfg.strategy.name
    night_count = cfg.get("night_count")
    if strategy in NIGHT_COUNT_STRATEGIES:
        if night_count is None:
            raise ConfigError(f"strategy={strategy} needs night_count=N: the number of day->night "
                              "translated images to add (0 trains on day images only)")
        if isinstance(night_count, bool) or not isinstance(night_count, int) or night_count < 0:
            raise ConfigError(f"night_count={night_count}: must be a non-negative integer")
    elif night_count is not None:
        raise ConfigError(f"night_count={night_count} belongs to strategy=augment (or "
                          f"augment_night2day); remove it, or run strategy=augment "
                          f"night_count={night_count}")
    gate = cfg.strategy.get("gate")
    if gate is not None and gate not in GATE_CHOICES:
        raise ConfigError(f"strategy.gate={gate}: use none (translate every test image) or auto "
                          "(translate only the images a brightness gate calls night)")

    validate_data(cfg)
    # A rendered pool's size is the config's own (data.counts.train): a night_count above it stops
    # here, before minutes of rendering, not after (check_catalog repeats it for real datasets).
    pool = OmegaConf.select(cfg, "data.counts.train")
    if isinstance(pool, int) and not isinstance(pool, bool):
        _check_night_count_fits(cfg, pool)
    for key in ("model.segmenter.max_epochs", "model.segmenter.max_steps"):
        _check_positive(cfg, key)
    _check_budget(cfg)
    for key in ("seed", "translator_seed"):
        if not isinstance(cfg.get(key), int):
            raise ConfigError(f"{key}={cfg.get(key)}: must be an integer")
    for key in ("model.translator.epochs_constant", "model.translator.epochs_decay"):
        _check_positive(cfg, key, allow_zero=True)
    if cfg.model.translator.epochs_constant + cfg.model.translator.epochs_decay < 1:
        raise ConfigError("model.translator.epochs_constant + model.translator.epochs_decay must be "
                          "at least 1")
    ignore = cfg.model.segmenter.get("ignore_index")
    if ignore is not None and ignore != IGNORE_INDEX:
        raise ConfigError(
            f"model.segmenter.ignore_index={ignore}: every dataset reader marks unlabelled pixels "
            f"with {IGNORE_INDEX}, so the loss and the scores must ignore {IGNORE_INDEX}; remove "
            "the override (relabel a class as 255 in the dataset's label map to leave it out)")

    seg_classes = cfg.model.segmenter.num_classes
    if seg_classes != cfg.data.num_classes:
        raise ConfigError(
            f"model.segmenter.num_classes={seg_classes} disagrees with data.num_classes="
            f"{cfg.data.num_classes} (data={cfg.data.name}); remove the model.segmenter.num_classes "
            "override (it follows the data by default)")
    _check_compile(cfg)


def _check_compile(cfg: DictConfig) -> None:
    compile_ = OmegaConf.select(cfg, "model.compile", default=False)
    if not isinstance(compile_, bool):
        raise ConfigError(f"model.compile={compile_}: use true (torch.compile the nets for training) "
                          "or false")
    if compile_:
        check_compiler(uses_cuda(OmegaConf.select(cfg, "trainer.accelerator", default="auto")))


def validate_data(cfg: DictConfig) -> None:
    """The checks of the data group alone: shared by runs and by python -m nightseg.evaluate."""
    for key in ("data.resize", "data.train_crop", "data.translate_crop"):
        _check_size(cfg, key)
    for key in ("data.batch_size", "data.eval_batch_size", "data.translate_batch_size"):
        _check_positive(cfg, key)
    if cfg.data.num_workers != "auto":
        _check_positive(cfg, "data.num_workers", allow_zero=True)
    if cfg.data.on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"data.on_error={cfg.data.on_error}: use {' or '.join(ON_ERROR_CHOICES)}")
