"""Strategy 1 (Sun et al. 2019, Sec. III-B): segment night images with a day-trained segmenter
after translating them to day with the CycleGAN's night->day generator. No retraining; the cost is
the generator's forward pass at inference."""

from __future__ import annotations

from nightseg.results import write_metrics
from nightseg.stages import Job, evaluate, get_segmenter, get_translator, save_panels


def run(job: Job) -> dict:
    k = int(job.cfg.strategy.num_panels)
    translator, _ = get_translator(job)
    segmenter = get_segmenter(job)
    catalog = job.catalog
    # The day validation sets and every night test set as they are (the paper's baseline rows)...
    results = evaluate(job, segmenter, catalog.val + catalog.test, num_panels=k)
    save_panels(job, segmenter, "raw")
    # ...then the night test sets translated night->day first.
    results += evaluate(job, segmenter, catalog.test, translator=translator, num_panels=k)
    save_panels(job, segmenter, "night2day")
    job.stages.setdefault("generated_night", "unused")
    return write_metrics(job, results, night_count=None)
