"""Strategy 2 (Sun et al. 2019, Sec. III-C): translate labelled day training images to night and
add ``night_count`` of them to the segmenter's training set. Sweeping night_count is the paper's
ratio study; every job of a sweep shares one translator and one set of generated images."""

from __future__ import annotations

from nightseg.core.errors import ConfigError
from nightseg.inference.evaluation import evaluate, save_panels
from nightseg.inference.results import write_metrics
from nightseg.infra.job import Job
from nightseg.models.cyclegan import Translator
from nightseg.models.segmentation import SegmentationModule
from nightseg.training.prepare import scored_sets
from nightseg.training.stages import get_generated_night, get_segmenter, get_translator


def augmented_segmenter(job: Job, night_count: int,
                        translator: tuple[Translator, str] | None = None) -> SegmentationModule:
    """The segmenter trained on the day pool plus the first ``night_count`` generated night
    images (the translator and the generated set through the cache; none at night_count=0).
    ``translator``: (module, cache key) when the caller has already obtained it."""
    extra = extra_spec = None
    if night_count > 0:
        translator, translator_key = translator or get_translator(job)
        generated, generated_key = get_generated_night(job, translator, translator_key)
        if len(generated) < night_count:  # images skipped with data.on_error=skip
            raise ConfigError(f"night_count={night_count}: only {len(generated)} generated night "
                              f"images exist (some pool images were skipped); lower night_count")
        extra = generated.head(night_count)
        extra_spec = {"generated": generated_key, "count": night_count}
    else:
        job.stages["generated_night"] = "unused"
    return get_segmenter(job, extra, extra_spec)


def run(job: Job) -> dict:
    night_count = int(job.cfg.night_count)  # at most the day pool (config.check_catalog)
    if night_count == 0:
        job.record("translator", "unused")
    segmenter = augmented_segmenter(job, night_count)
    catalog = job.catalog
    raw = evaluate(job, segmenter, scored_sets(job, catalog.val + catalog.test),
                   num_panels=int(job.cfg.strategy.num_panels))
    save_panels(job, raw)
    return write_metrics(job, [raw], night_count=night_count)
