"""Evaluation, a layer of its own: score a segmenter on named sets, raw or translated night->day.

Follows the paper (Sun et al. 2019, Table 2): mIoU, pixel accuracy and mean class accuracy per
named set, in percent, plus per-class IoU; on sets with true day references (the synthetic night
test set) PSNR and SSIM of the segmenter's inputs, raw or translated, against them; with a gate,
how many images it translated. :func:`evaluate` runs a :class:`SegmentationPipeline` through a
Lightning Trainer (the job's precision, devices and DDP; see nightseg.core.metrics for why the scores
equal a one-process evaluation's) and returns an :class:`Evaluation`: rows, scores and panels.
Training modules keep no test-time state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from nightseg.core.metrics import SetScores
from nightseg.data.catalog import SampleSet
from nightseg.data.datamodules import SegmentationDataModule
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.infra import distributed
from nightseg.infra.job import Job
from nightseg.infra.tracking import score_key
from nightseg.infra.trainer import make_trainer

# The keys of a result row in metrics.json.
ROW_KEYS = ("test_set", "condition", "miou", "pixel_acc", "mean_acc", "per_class_iou")


@dataclass
class Panel:
    """The first images of a set's first batch: ``input`` (N, 3, H, W) in [0, 1], ``translated``
    (what the segmenter saw, or None when raw), ``pred``/``mask`` (N, H, W) class ids in
    ``class_names``, ``gate`` (N,) booleans (translated or not) when a gate was used."""

    input: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    class_names: list[str]
    translated: torch.Tensor | None = None
    gate: torch.Tensor | None = None


@dataclass
class Evaluation:
    """What :func:`evaluate` measured for one condition (raw, night2day or night2day_gated).

    ``rows``: one per set, metrics.json's result rows (``ROW_KEYS``); ``translation``: per set
    with true day references, ``{"psnr", "ssim"}`` of the images the segmenter saw; ``gate``: per
    set, ``{"translated", "images", "domain"}`` when a gate chose what to translate; ``panels``:
    per set, sample images (with ``num_panels`` > 0).
    """

    condition: str
    rows: list[dict] = field(default_factory=list)
    translation: dict[str, dict[str, float]] = field(default_factory=dict)
    gate: dict[str, dict] = field(default_factory=dict)
    panels: dict[str, Panel] = field(default_factory=dict)


class _Scoring(pl.LightningModule):
    """Runs a pipeline over the test loaders of a SegmentationDataModule, one SetScores per set.

    It logs each set's scores as ``test/<set>/<condition>/<metric>`` (nightseg.infra.tracking's
    ``score_key``: ``test/synthetic_night/night2day/miou``).
    """

    def __init__(self, pipeline: SegmentationPipeline, sets: Sequence[SampleSet], num_classes: int,
                 class_names: Sequence[str], ignore_index: int, num_panels: int):
        super().__init__()
        # The eval stage's logger records the segmenter's hyperparameters, as for its training.
        self.save_hyperparameters(dict(getattr(pipeline.segmenter, "hparams", {})))
        self.pipeline = pipeline
        self.sets = list(sets)
        self.num_classes, self.class_names = num_classes, list(class_names)
        self.ignore_index, self.num_panels = ignore_index, num_panels
        self.scores: list[SetScores] = []
        self.result = Evaluation(pipeline.condition)

    def on_test_epoch_start(self) -> None:
        gated = self.pipeline.gate is not None
        self.scores = [SetScores(s, self.num_classes, self.class_names, self.ignore_index,
                                 self.device, gated) for s in self.sets]

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "image" not in batch:  # every file skipped (data.on_error=skip), or a DDP placeholder
            return
        inputs, picked = self.pipeline.translate(batch["image"])
        scores = self.scores[dataloader_idx]
        pred = scores.update(inputs, self.pipeline.segmenter(inputs), batch, picked)
        if batch_idx == 0 and self.num_panels > 0:
            k = self.num_panels
            self.result.panels[scores.set.name] = Panel(
                input=batch["image"][:k].cpu(), pred=pred[:k].cpu(), mask=batch["mask"][:k].cpu(),
                class_names=scores.class_names,
                translated=inputs[:k].float().cpu() if picked is not None else None,
                gate=picked[:k].cpu() if picked is not None and self.pipeline.gate is not None
                else None)

    def on_test_epoch_end(self) -> None:
        for scores in self.scores:
            res = scores.compute()
            name = scores.set.name
            self.result.rows.append({"test_set": name, "condition": self.result.condition,
                                     **{k: res[k] for k in ROW_KEYS[2:]}})
            if "psnr" in res:
                self.result.translation[name] = {"psnr": res["psnr"], "ssim": res["ssim"]}
            if "gate" in res:
                self.result.gate[name] = res["gate"]
            for key in ("miou", "pixel_acc", "mean_acc", "psnr", "ssim"):
                if res.get(key) is not None:
                    self.log(score_key(name, self.result.condition, key), res[key],
                             add_dataloader_idx=False, rank_zero_only=True)


def evaluate(job: Job, segmenter: nn.Module, sets: Sequence[SampleSet],
             translator: nn.Module | None = None, gate=None, num_panels: int = 0) -> Evaluation:
    """Score ``segmenter`` (a SegmentationModule: its ``hparams`` give num_classes, class_names and
    ignore_index) on ``sets``, raw or translated night->day first by ``translator`` (with a
    ``gate``, only the images it calls night), keeping ``num_panels`` images per set for panels.
    """
    hp = segmenter.hparams
    return evaluate_pipeline(job, SegmentationPipeline(segmenter, translator, gate), sets,
                             hp.num_classes, hp.class_names, hp.ignore_index, num_panels)


def evaluate_pipeline(job: Job, pipeline: SegmentationPipeline, sets: Sequence[SampleSet],
                      num_classes: int, class_names: Sequence[str], ignore_index: int,
                      num_panels: int = 0) -> Evaluation:
    """Score a ready pipeline (its segmenter predicting ``num_classes`` classes named
    ``class_names``) on ``sets``: what :func:`evaluate` does for a run, and what
    ``python -m nightseg.evaluate`` does for models loaded by nightseg.inference.loading (whose segmenter
    need not be a SegmentationModule, e.g. another runtime's).

    The job gives the data settings (sizes, batch size, workers, on_error), the Trainer (stage
    ``eval_<condition>``, logged to the job's tracker) and the timing (``eval_<condition>``).
    """
    data = job.cfg.data
    condition = pipeline.condition
    scoring = _Scoring(pipeline, sets, num_classes, class_names, ignore_index, num_panels)
    dm = SegmentationDataModule([], test_sets=sets, num_classes=job.catalog.num_classes,
                                eval_batch_size=data.eval_batch_size, num_workers=data.num_workers,
                                resize=data.resize, on_error=data.on_error)
    with job.timed(f"eval_{condition}"):
        make_trainer(job, f"eval_{condition}").test(scoring, datamodule=dm, verbose=False)
    return scoring.result


def save_panels(job: Job, evaluation: Evaluation) -> list[Path]:
    """input | (night->day) | prediction | ground truth rows per set, as
    ``panels/<set>_<condition>.png`` in the run directory and to the tracker (rank zero only)."""
    from nightseg.core.visualize import colorize, gate_marked, panel, save_png, to_uint8

    paths = []
    if not distributed.is_rank_zero():
        return paths
    condition = evaluation.condition
    for set_name, p in evaluation.panels.items():
        rows = []
        for i in range(len(p.input)):
            row = [to_uint8(p.input[i])]
            if p.translated is not None:
                shown = to_uint8(p.translated[i])
                if p.gate is not None:
                    shown = gate_marked(shown, bool(p.gate[i]))
                row.append(shown)
            row += [colorize(p.pred[i], p.class_names), colorize(p.mask[i], p.class_names)]
            rows.append(row)
        img = panel(rows)
        path = save_png(img, job.run_dir / "panels" / f"{set_name}_{condition}.png")
        caption = "input | night->day | prediction | truth" if p.translated is not None \
            else "input | prediction | truth"
        if p.gate is not None:
            caption += " (top bar: green = the gate translated it, grey = kept as it was)"
        job.tracker.log_image(f"panels/{set_name}/{condition}", img, caption)
        paths.append(path)
    return paths
