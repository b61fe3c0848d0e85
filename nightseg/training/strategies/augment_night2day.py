"""Both strategies together (beyond the paper): the segmenter of ``augment`` (trained with
``night_count`` translated night images) scores the night test sets raw and translated
night->day first, optionally through the day/night gate. Every stage comes from the same cache
as the other two strategies, so after them this job only evaluates."""

from __future__ import annotations

from nightseg.inference.evaluation import evaluate, save_panels
from nightseg.inference.results import write_metrics
from nightseg.infra.job import Job
from nightseg.training.prepare import scored_sets
from nightseg.training.stages import get_translator
from nightseg.training.strategies.augment import augmented_segmenter
from nightseg.training.strategies.night2day_inference import evaluate_translated


def run(job: Job) -> dict:
    night_count = int(job.cfg.night_count)
    translator, translator_key = get_translator(job)
    segmenter = augmented_segmenter(job, night_count, (translator, translator_key))
    catalog = job.catalog
    raw = evaluate(job, segmenter, scored_sets(job, catalog.val + catalog.test),
                   num_panels=int(job.cfg.strategy.num_panels))
    save_panels(job, raw)
    translated = evaluate_translated(job, segmenter, translator)
    return write_metrics(job, [raw, translated], night_count=night_count)
