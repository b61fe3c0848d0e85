"""The stages a strategy is built from: get a translator, get generated night images, get a
segmenter, get a day/night gate, each built or reused through the job's stage cache under the key
of its spec (nightseg.training.specs). Evaluating a segmenter is nightseg.inference.evaluation's;
the job context (nightseg.infra.job.Job) says what each stage needs."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from nightseg.core.errors import DataError
from nightseg.core.files import write_json
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import (
    SegmentationDataModule,
    TranslationDataModule,
    build_transform,
    make_loader,
)
from nightseg.data.io import SegmentationDataset, batch_to_float
from nightseg.inference.gate import BrightnessGate, fit_threshold, mean_luma
from nightseg.infra import distributed
from nightseg.infra.cache import ARTEFACTS, resume_checkpoint
from nightseg.infra.hardware import uses_cuda
from nightseg.infra.job import Job
from nightseg.infra.trainer import make_trainer
from nightseg.models.cyclegan import Translator
from nightseg.models.segmentation import SegmentationModule
from nightseg.training.callbacks import CheckpointOnSigterm, StopOnNonFiniteLoss
from nightseg.training.png_writer import PngWriter
from nightseg.training.prepare import prepare_sets
from nightseg.training.resume import ResumeState
from nightseg.training.specs import gate_spec, generated_night_spec, segmenter_spec, translator_spec

log = logging.getLogger(__name__)

# Training by steps (model.segmenter.max_steps): resume checkpoints and validations per budget.
CHECKPOINTS_PER_BUDGET = 10
VALIDATIONS_PER_BUDGET = 4


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
        StopOnNonFiniteLoss(stage_name), ResumeState(), ckpt,
        CheckpointOnSigterm(work_dir / "last.ckpt", stage_name)], **budget)
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
    spec = translator_spec(job, tcfg)
    built: dict[str, Translator] = {}

    def build(stage, out: Path) -> None:
        teacher = None
        if tcfg.get("teacher") is not None:
            teacher, _ = get_translator(job, tcfg.teacher, stage_name="teacher")
        pl.seed_everything(cfg.translator_seed, workers=True)
        module = instantiate(tcfg, _recursive_=False, _convert_="all")
        module.compile_training = bool(cfg.model.get("compile", False))
        if teacher is not None:
            module.set_teacher(teacher)
        day, night = prepare_sets(job, [job.catalog.translate_day, job.catalog.translate_night],
                                  segmentation=False)
        dm = TranslationDataModule(
            day, night,
            batch_size=data.translate_batch_size, num_workers=data.num_workers,
            resize=data.resize, crop=data.translate_crop, hflip=data.hflip, on_error=data.on_error)
        _fit(job, stage_name, module, dm, module.max_epochs, stage.work_dir, out)
        built["module"] = module

    with job.timed(stage_name):
        path, status = job.cache.obtain("translator", spec, ARTEFACTS["translator"], build)
        module = built.get("module") or module_cls.load_from_checkpoint(
            path, map_location="cpu", weights_only=False)
    job.record(stage_name, status, path)
    return module.eval(), path.parent.name


# ---- generated night images (strategy augment) -----------------------------------------------
class _Day2Night(pl.LightningModule):
    """Prediction wrapper: day images in, night images out (under the trainer's precision)."""

    def __init__(self, translator: Translator):
        super().__init__()
        self.translator = translator

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        # Only the images go to the device: labels and pool positions go straight to the PNG
        # writer, which would otherwise wait for the device to read them back.
        return {**batch, "image": batch["image"].to(device, non_blocking=True)}

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
    spec = generated_night_spec(job, translator_key)

    def build(stage, out: Path) -> None:
        pool_arrays, = prepare_sets(job, [pool], num_classes=job.catalog.num_classes)
        order = pool_order(len(pool), order_seed)
        ordered = pool_arrays.reordered(order)
        ds = SegmentationDataset(ordered, build_transform(pool.resize or data.resize),
                                 job.catalog.num_classes, data.on_error)
        loader = make_loader(ds, data.eval_batch_size, data.num_workers, shuffle=False,
                             pin_memory=uses_cuda(job.trainer_args().get("accelerator", "auto")))
        # Every rank writes its share into the shared work directory; rank zero then publishes it.
        shared = stage.work_dir / "images"
        writer = PngWriter(shared)
        trainer = make_trainer(job, "generated_night", callbacks=[writer])
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

    with job.timed("generated_night"):
        path, status = job.cache.obtain("night_images", spec, ARTEFACTS["night_images"], build)
    job.record("generated_night", status, path)
    manifest = json.loads((path / "manifest.json").read_text())
    samples = [Sample(path / m["image"], path / m["label"]) for m in manifest]
    # Prepared whole, once per translator: every night_count of a sweep reads its first N rows.
    generated, = prepare_sets(job, [SampleSet("generated_night", samples)],
                              num_classes=job.catalog.num_classes)
    return generated, path.parent.name


# ---- segmenter -------------------------------------------------------------------------------
def get_segmenter(job: Job, extra: SampleSet | None = None,
                  extra_spec: dict | None = None) -> SegmentationModule:
    """ERF-PSPNet trained on the labelled day pool plus ``extra`` (generated night images).

    ``extra_spec`` identifies ``extra`` in the cache key. A segmenter without extra images is the
    same artefact for night2day_inference and augment night_count=0, so both reuse it.
    """
    cfg, data = job.cfg, job.cfg.data
    spec = segmenter_spec(job, extra_spec if extra else None)
    built: dict[str, SegmentationModule] = {}

    def build(stage, out: Path) -> None:
        pl.seed_everything(cfg.seed, workers=True)
        module = instantiate(cfg.model.segmenter, class_names=list(job.catalog.class_names),
                             _convert_="all")
        module.compile_training = bool(cfg.model.get("compile", False))
        num_classes = job.catalog.num_classes
        train_sets = prepare_sets(job, [job.catalog.train] + ([extra] if extra else []),
                                  num_classes=num_classes)
        dm = SegmentationDataModule(
            train_sets, val_sets=prepare_sets(job, job.catalog.val, num_classes=num_classes),
            num_classes=num_classes,
            batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
            num_workers=data.num_workers, resize=data.resize, train_crop=data.train_crop,
            hflip=data.hflip, on_error=data.on_error)
        _fit(job, "segmenter", module, dm, module.hparams.max_epochs, stage.work_dir, out,
             max_steps=module.hparams.max_steps)
        built["module"] = module

    with job.timed("segmenter"):
        path, status = job.cache.obtain("segmenter", spec, ARTEFACTS["segmenter"], build)
        module = built.get("module") or SegmentationModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=False)
    job.record("segmenter", status, path)
    return module.eval()


# ---- day/night gate (strategy.gate=auto) ------------------------------------------------------
def get_gate(job: Job) -> BrightnessGate:
    """The brightness gate fitted on the translator's own unlabelled day and night training
    images, as the segmenter sees them (resized, in [0, 1]); cached beside the other stages. Under
    DDP rank zero alone decodes the images and fits it; every rank reads the published gate."""
    data, catalog = job.cfg.data, job.catalog
    domains = {"day": catalog.translate_day, "night": catalog.translate_night}
    spec = gate_spec(job)

    def build(stage, out: Path) -> None:
        # Every rank: obtaining a prepared set is a collective (rank zero builds, the others wait).
        sets = prepare_sets(job, list(domains.values()), segmentation=False)
        if not distributed.is_rank_zero():  # the others wait in obtain() until it is published
            return
        values = {}
        for domain, s in zip(domains, sets, strict=True):
            ds = SegmentationDataset(s, build_transform(s.resize or data.resize),
                                     on_error=data.on_error)
            loader = make_loader(ds, data.eval_batch_size, data.num_workers, shuffle=False)
            values[domain] = [float(v) for b in map(batch_to_float, loader) if "image" in b
                              for v in mean_luma(b["image"])]
        threshold, day_acc, night_acc = fit_threshold(values["day"], values["night"])
        gate = BrightnessGate(threshold, day_acc, night_acc, len(values["day"]) + len(values["night"]))
        write_json(out, gate.to_dict())

    with job.timed("gate"):
        path, status = job.cache.obtain("gate", spec, ARTEFACTS["gate"], build)
    job.record("gate", status, path)
    return BrightnessGate.from_dict(json.loads(path.read_text()))
