"""Strategy 1 (Sun et al. 2019, Sec. III-B): segment night images with a day-trained segmenter
after translating them to day with the CycleGAN's night->day generator. No retraining; the cost is
the generator's forward pass at inference. With ``strategy.gate=auto`` only the images a
brightness gate calls night are translated (nightseg/inference/gate.py)."""

from __future__ import annotations

from nightseg.inference.evaluation import Evaluation, evaluate, save_panels
from nightseg.inference.results import write_metrics
from nightseg.infra.job import Job
from nightseg.models.cyclegan import Translator
from nightseg.models.segmentation import SegmentationModule
from nightseg.training.prepare import scored_sets
from nightseg.training.stages import get_gate, get_segmenter, get_translator


def evaluate_translated(job: Job, segmenter: SegmentationModule, translator: Translator) -> Evaluation:
    """The night test sets translated night->day first (through the gate with gate=auto)."""
    gate = get_gate(job) if job.cfg.strategy.gate == "auto" else None
    if gate is not None:
        job.gate = gate.to_dict()
    translated = evaluate(job, segmenter, scored_sets(job, job.catalog.test), translator=translator,
                          gate=gate, num_panels=int(job.cfg.strategy.num_panels))
    save_panels(job, translated)
    return translated


def run(job: Job) -> dict:
    translator, _ = get_translator(job)
    segmenter = get_segmenter(job)
    catalog = job.catalog
    # The day validation sets and every night test set as they are (the paper's baseline rows)...
    raw = evaluate(job, segmenter, scored_sets(job, catalog.val + catalog.test),
                   num_panels=int(job.cfg.strategy.num_panels))
    save_panels(job, raw)
    # ...then the night test sets translated night->day first.
    translated = evaluate_translated(job, segmenter, translator)
    job.stages.setdefault("generated_night", "unused")
    return write_metrics(job, [raw, translated], night_count=None)
