"""The stages a strategy is built from: get a translator, get generated night images, get a
segmenter, get a day/night gate, each built or reused through the stage cache (evaluating a
segmenter is nightseg.inference.evaluation's).

A :class:`Job` carries what every stage needs: the config, the run directory, the cache, the
tracker, the dataset catalog, and the record of which stages were trained or reused and how long
they took.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import BasePredictionWriter, ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nightseg.core.errors import DataError, TrainingError
from nightseg.core.files import write_json
from nightseg.core.visualize import save_png, to_uint8
from nightseg.data.catalog import DataCatalog, Sample, SampleSet
from nightseg.data.datamodules import (
    SegmentationDataModule,
    TranslationDataModule,
    build_transform,
    make_loader,
)
from nightseg.data.io import SegmentationDataset, batch_to_float
from nightseg.inference.gate import BrightnessGate, fit_threshold, mean_luma
from nightseg.infra import distributed, preemption
from nightseg.infra.cache import StageCache, resume_checkpoint
from nightseg.infra.distributed import World
from nightseg.infra.hardware import resolve_trainer, uses_cuda
from nightseg.infra.tracking import Tracker
from nightseg.models.cyclegan import Translator
from nightseg.models.segmentation import SegmentationModule
from nightseg.training.config import (
    GENERATED_DATA_KEYS,
    SEGMENTER_DATA_KEYS,
    TRANSLATOR_DATA_KEYS,
    data_spec,
    trainer_spec,
)
from nightseg.training.resume import ResumeState

log = logging.getLogger(__name__)
# pytorch-lightning 2.6 still builds torch's deprecated LeafSpec in its own pytree helper, so every
# Trainer of every stage printed this FutureWarning; nothing a user of nightseg can change, and it
# goes away with a Lightning release that follows torch's API. (pyproject.toml filters it in tests.)
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        category=FutureWarning)
# Lightning advertises a hosted logger at every Trainer; once per stage is noise in the run log.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


@dataclass
class Job:
    cfg: DictConfig
    run_dir: Path
    cache: StageCache
    tracker: Tracker
    catalog: DataCatalog
    stages: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    gate: dict | None = None  # the gate used at test time and its fit, for metrics.json
    world: World = World()  # the processes training runs on (nightseg.infra.distributed.start)
    trainer_kwargs: dict | None = None  # cfg.trainer after the device's choices (hardware.resolve_trainer)

    def trainer_args(self) -> dict:
        """The arguments every stage's Trainer starts from."""
        if self.trainer_kwargs is not None:
            return dict(self.trainer_kwargs)
        return resolve_trainer(OmegaConf.to_container(self.cfg.trainer, resolve=True))

    def trainer_spec(self, training: bool = True) -> dict:
        """The trainer part of a cache key: with the world size for training stages."""
        return trainer_spec(self.cfg, self.world.size if training else 1,
                            self.trainer_args().get("precision"))

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


GAN_STAGES = ("translator", "teacher")
TRAINING_STAGES = (*GAN_STAGES, "segmenter")
# Training by steps (model.segmenter.max_steps): resume checkpoints and validations per budget.
CHECKPOINTS_PER_BUDGET = 10
VALIDATIONS_PER_BUDGET = 4


class _ProgressBar(RichProgressBar):
    """Lightning's rich bar, saying "Epoch 0 (budget 500 steps)" where a step budget leaves the
    epochs open (max_epochs=-1), instead of "Epoch 0/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs < 0 and trainer.max_steps > 0:
            return f"Epoch {current_epoch} (budget {trainer.max_steps} steps)"
        return super()._get_train_description(current_epoch)


def make_trainer(job: Job, stage: str, max_epochs: int | None = None,
                 callbacks: Sequence[pl.Callback] = (), **overrides) -> pl.Trainer:
    """A Trainer from ``cfg.trainer`` with a rich progress bar and the stage's logger."""
    kwargs = job.trainer_args()
    kwargs.update(overrides)
    if stage in GAN_STAGES:
        kwargs["strategy"] = distributed.gan_strategy(kwargs.get("strategy"), job.world)
    elif stage not in TRAINING_STAGES and job.world.spawns:
        # ddp_spawn/ddp_fork workers keep their scores and images to themselves: evaluate and
        # generate in this process, on one device.
        kwargs.update(devices=1, num_nodes=1, strategy="auto")
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=job.tracker.stage_logger(stage),
        callbacks=[_ProgressBar(leave=True), preemption.StopOnSignal(), *callbacks],
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=str(job.run_dir),
        enable_model_summary=False,
        **kwargs,
    )


class _CheckpointOnSigterm(pl.Callback):
    """SIGTERM (what Slurm and other schedulers send before preemption or at the time limit), or
    USR1/USR2 (the requeue signals, nightseg.infra.preemption): Lightning stops training after the
    current step with SIGTERMException; this saves that step as the stage's resume checkpoint, so
    the rerun or requeued job loses nothing (run.main then exits 128 + the signal). Other
    exceptions keep the last periodic checkpoint: the state that raised them (a NaN loss, a bug)
    is not one to resume from. Nor is a stop before training started: the module is not restored
    from the resume checkpoint yet, and saving it would overwrite that checkpoint."""

    def __init__(self, path: Path, stage: str = ""):
        self.path = path
        self.stage = stage
        self.started = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
        if trainer.global_step > 0:
            log.info("stage %s: resumed at step %d", self.stage, trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self.started:
            trainer.save_checkpoint(self.path)
            sig = preemption.pending()
            log.warning("%s: training stopped at step %d; resume checkpoint saved to %s",
                        sig.name if sig else "SIGTERM", trainer.global_step, self.path)


class _StopOnNonFiniteLoss(pl.Callback):
    """A NaN or infinite training loss stops the stage at once, naming the stage, epoch and step:
    training on would publish NaN weights that every later stage and score silently uses. Runs
    before the periodic checkpoint (Lightning puts checkpoint callbacks last), so no resume
    checkpoint is written at that step. Every rank takes part in the decision (a rank that
    stopped alone would leave the others waiting in DDP's next all-reduce)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        if isinstance(outputs, dict) and torch.is_tensor(outputs.get("loss")):
            losses = {"train/loss": outputs["loss"].detach()}  # this step's loss
        else:  # manual optimization (the GANs): the losses it logged, known one step late
            losses = {k: v for k, v in trainer.callback_metrics.items()
                      if k.startswith("train/loss") and torch.is_tensor(v)}
        bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v).all()}
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "on another rank"
            raise TrainingError(
                f"stage {self.stage}: the training loss is not finite ({what}) in epoch "
                f"{trainer.current_epoch}, by step {trainer.global_step}; nothing was published and the "
                "resume checkpoint is from before that step. Lower the learning rate, or check the "
                "training images and labels")


def _fit(job: Job, stage_name: str, module: pl.LightningModule, datamodule, max_epochs: int | None,
         work_dir: Path, out: Path, max_steps: int | None = None) -> None:
    """Fit for ``max_epochs`` epochs, or ``max_steps`` optimizer steps when that is given, with a
    resume checkpoint in ``work_dir`` (used again after a kill), then save the weights to ``out``."""
    # One file, overwritten as training goes. (save_last with save_top_k=0 would not do:
    # Lightning then writes last.ckpt only when a top-k checkpoint was written as well.)
    if max_steps is None:
        cadence, budget = {"every_n_epochs": 1}, {"max_epochs": max_epochs}
    else:
        # An epoch may be longer than the whole budget: validate and keep a resume point by
        # steps instead (a tenth and a quarter of the budget) and let the epochs run on.
        cadence = {"every_n_train_steps": max(1, max_steps // CHECKPOINTS_PER_BUDGET)}
        budget = {"max_epochs": -1, "max_steps": max_steps, "check_val_every_n_epoch": None,
                  "val_check_interval": max(1, max_steps // VALIDATIONS_PER_BUDGET)}
    ckpt = ModelCheckpoint(dirpath=work_dir, filename="last", save_top_k=1,
                           enable_version_counter=False, **cadence)
    trainer = make_trainer(job, stage_name, callbacks=[
        _StopOnNonFiniteLoss(stage_name), ResumeState(), ckpt,
        _CheckpointOnSigterm(work_dir / "last.ckpt", stage_name)], **budget)
    last = resume_checkpoint(work_dir / "last.ckpt")  # None if torn
    if last is not None:
        log.info("stage %s: resuming from %s", stage_name, last)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last is not None else None)
    # The published artefact holds weights and hyperparameters only (no optimizer state).
    trainer.save_checkpoint(out, weights_only=True)


# ---- translator ------------------------------------------------------------------------------
def get_translator(job: Job, translator_cfg: DictConfig | None = None,
                   stage_name: str = "translator") -> tuple[Translator, str]:
    """The day<->night translator for this data and config: from the cache, or trained now.

    A translator config with a ``teacher`` (model/translator=light_distilled) is distilled from
    that teacher, which is itself obtained through the cache first (stage "teacher"). Returns the
    module and its cache key, which downstream artefacts include in theirs.
    """
    cfg, data = job.cfg, job.cfg.data
    tcfg = translator_cfg if translator_cfg is not None else cfg.model.translator
    module_cls = get_class(tcfg._target_)
    catalog = job.catalog
    spec = {"translator": OmegaConf.to_container(tcfg, resolve=True),
            "data": data_spec(cfg, [catalog.translate_day, catalog.translate_night],
                              TRANSLATOR_DATA_KEYS),
            "seed": cfg.translator_seed, "trainer": job.trainer_spec()}
    built: dict[str, Translator] = {}

    def build(stage, out: Path) -> None:
        teacher = None
        if tcfg.get("teacher") is not None:
            teacher, _ = get_translator(job, tcfg.teacher, stage_name="teacher")
        pl.seed_everything(cfg.translator_seed, workers=True)
        module = instantiate(tcfg, _recursive_=False, _convert_="all")
        if teacher is not None:
            module.set_teacher(teacher)
        dm = TranslationDataModule(
            job.catalog.translate_day, job.catalog.translate_night,
            batch_size=data.translate_batch_size, num_workers=data.num_workers,
            resize=data.resize, crop=data.translate_crop, hflip=data.hflip, on_error=data.on_error)
        _fit(job, stage_name, module, dm, module.max_epochs, stage.work_dir, out)
        built["module"] = module

    with job.timed(stage_name):
        path, status = job.cache.obtain("translator", spec, "model.ckpt", build)
        module = built.get("module") or module_cls.load_from_checkpoint(
            path, map_location="cpu", weights_only=False)
    job.record(stage_name, status, path)
    return module.eval(), path.parent.name


# ---- generated night images (strategy augment) -----------------------------------------------
class _PngWriter(BasePredictionWriter):
    """Writes each translated image and its (resized) label as PNGs named by pool position, and
    remembers the positions it wrote."""

    def __init__(self, out_dir: Path):
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self.written: list[int] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        for img, mask, idx in zip(prediction, batch["mask"], batch["index"], strict=True):
            save_png(to_uint8(img), self.out_dir / "images" / f"{int(idx):06d}.png")
            save_png(mask.byte().cpu().numpy(), self.out_dir / "labels" / f"{int(idx):06d}.png")
            self.written.append(int(idx))


class _Day2Night(pl.LightningModule):
    """Prediction wrapper: day images in, night images out (under the trainer's precision)."""

    def __init__(self, translator: Translator):
        super().__init__()
        self.translator = translator

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch_to_float(batch)

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.translator.translate(batch["image"], "day2night").clamp(0, 1)


def pool_order(n: int, order_seed: int) -> list[int]:
    """The fixed order in which the labelled day pool is translated: job N takes the first N."""
    return np.random.default_rng(order_seed).permutation(n).tolist()


def get_generated_night(job: Job, translator: Translator, translator_key: str) -> tuple[SampleSet, str]:
    """The whole labelled day pool translated to night once per translator, in a fixed seeded
    order, as PNG images with their labels. Returns the set (in that order) and its cache key."""
    cfg, data, pool = job.cfg, job.cfg.data, job.catalog.train
    order_seed = int(cfg.strategy.order_seed)
    # Translating is inference: the images do not depend on the number of processes.
    spec = {"translator": translator_key, "data": data_spec(cfg, [pool], GENERATED_DATA_KEYS),
            "order_seed": order_seed, "trainer": job.trainer_spec(training=False)}

    def build(stage, out: Path) -> None:
        order = pool_order(len(pool), order_seed)
        ordered = pool.reordered(order)
        ds = SegmentationDataset(ordered, build_transform(pool.resize or data.resize),
                                 job.catalog.num_classes, data.on_error)
        loader = make_loader(ds, data.eval_batch_size, data.num_workers, shuffle=False,
                             pin_memory=uses_cuda(job.trainer_args().get("accelerator", "auto")))
        # Every rank writes its share into the shared work directory; rank zero then publishes it.
        shared = stage.work_dir / "images"
        writer = _PngWriter(shared)
        trainer = make_trainer(job, "generate", callbacks=[writer])
        trainer.predict(_Day2Night(translator), loader, return_predictions=False)
        # Rank zero lists what every rank wrote: a position no rank wrote was skipped (a bad
        # file); one written elsewhere but missing here means the ranks do not share the disk.
        written = distributed.all_gather(writer.written)
        missing = [] if not distributed.is_rank_zero() else [
            (rank, shared / "images" / f"{k:06d}.png") for rank, ks in enumerate(written)
            for k in ks if not (shared / "images" / f"{k:06d}.png").exists()]
        missing = distributed.broadcast(missing)
        if missing:
            rank, path = missing[0]
            raise DataError(
                f"{path} (and {len(missing) - 1} more): written by rank {rank} but not on rank 0's "
                f"disk ({socket.gethostname()}): paths.cache_dir ({job.cfg.paths.cache_dir}) must "
                "be a directory shared by every node, e.g. on a network filesystem")
        if not distributed.is_rank_zero():
            return
        manifest = [{"index": k, "source": str(ordered.samples[k].image),
                     "image": f"images/{k:06d}.png", "label": f"labels/{k:06d}.png"}
                    for k in sorted(k for ks in written for k in ks)]
        write_json(shared / "manifest.json", manifest)
        shared.rename(out)

    with job.timed("generate_night"):
        path, status = job.cache.obtain("night_images", spec, "images", build)
    job.record("generated_night", status, path)
    manifest = json.loads((path / "manifest.json").read_text())
    samples = [Sample(path / m["image"], path / m["label"]) for m in manifest]
    return SampleSet("generated_night", samples), path.parent.name


# ---- segmenter -------------------------------------------------------------------------------
def get_segmenter(job: Job, extra: SampleSet | None = None,
                  extra_spec: dict | None = None) -> SegmentationModule:
    """ERF-PSPNet trained on the labelled day pool plus ``extra`` (generated night images).

    ``extra_spec`` identifies ``extra`` in the cache key. A segmenter without extra images is the
    same artefact for night2day_inference and augment night_count=0, so both reuse it.
    """
    cfg, data = job.cfg, job.cfg.data
    spec = {"segmenter": OmegaConf.to_container(cfg.model.segmenter, resolve=True),
            "data": data_spec(cfg, [job.catalog.train], SEGMENTER_DATA_KEYS,
                              job.catalog.class_names),
            "seed": cfg.seed, "trainer": job.trainer_spec(),
            "extra": extra_spec if extra else None}
    built: dict[str, SegmentationModule] = {}

    def build(stage, out: Path) -> None:
        pl.seed_everything(cfg.seed, workers=True)
        module = instantiate(cfg.model.segmenter, class_names=list(job.catalog.class_names),
                             _convert_="all")
        train_sets = [job.catalog.train] + ([extra] if extra else [])
        dm = SegmentationDataModule(
            train_sets, val_sets=job.catalog.val, num_classes=job.catalog.num_classes,
            batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
            num_workers=data.num_workers, resize=data.resize, train_crop=data.train_crop,
            hflip=data.hflip, on_error=data.on_error)
        _fit(job, "segmenter", module, dm, module.hparams.max_epochs, stage.work_dir, out,
             max_steps=module.hparams.max_steps)
        built["module"] = module

    with job.timed("segmenter"):
        path, status = job.cache.obtain("segmenter", spec, "model.ckpt", build)
        module = built.get("module") or SegmentationModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=False)
    job.record("segmenter", status, path)
    return module.eval()


# ---- day/night gate (strategy.gate=auto) ------------------------------------------------------
def get_gate(job: Job) -> BrightnessGate:
    """The brightness gate fitted on the translator's own unlabelled day and night training
    images, as the segmenter sees them (resized, in [0, 1]); cached beside the other stages."""
    cfg, data, catalog = job.cfg, job.cfg.data, job.catalog
    domains = {"day": catalog.translate_day, "night": catalog.translate_night}
    spec = {"gate": "mean_luma", "data": data_spec(cfg, list(domains.values()), ("resize",))}

    def build(stage, out: Path) -> None:
        values = {}
        for domain, s in domains.items():
            ds = SegmentationDataset(s, build_transform(s.resize or data.resize),
                                     on_error=data.on_error)
            loader = make_loader(ds, data.eval_batch_size, data.num_workers, shuffle=False)
            values[domain] = [float(v) for b in map(batch_to_float, loader) if "image" in b
                              for v in mean_luma(b["image"])]
        threshold, day_acc, night_acc = fit_threshold(values["day"], values["night"])
        gate = BrightnessGate(threshold, day_acc, night_acc, len(values["day"]) + len(values["night"]))
        write_json(out, gate.to_dict())

    with job.timed("gate"):
        path, status = job.cache.obtain("gate", spec, "gate.json", build)
    job.record("gate", status, path)
    return BrightnessGate.from_dict(json.loads(path.read_text()))
