"""What a job leaves behind: metrics.json (values in percent, like the paper) and a printed table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nightseg.core.files import write_json
from nightseg.inference.evaluation import Evaluation
from nightseg.infra import distributed
from nightseg.infra.hardware import device_summary
from nightseg.infra.job import Job
from nightseg.infra.tracking import score_key


def translation_scores(evaluations: Sequence[Evaluation]) -> dict | None:
    """``{"psnr", "ssim"}`` of the night->day translations against the true day references (the
    first set that has them), with ``raw_psnr``/``raw_ssim`` of the untranslated night images as
    the baseline (``night2day_gated_psnr``... for gated ones), or None without a translated set."""
    translation = {}
    for ev in evaluations:
        prefix = "" if ev.condition == "night2day" else f"{ev.condition}_"
        for scores in ev.translation.values():
            translation.setdefault(f"{prefix}psnr", scores["psnr"])
            translation.setdefault(f"{prefix}ssim", scores["ssim"])
    if "psnr" not in translation:  # no translated set with references: nothing to report
        return None
    return translation


def gate_summary(gate: dict, evaluations: Sequence[Evaluation]) -> dict:
    """The gate's fit and, per gated test set, how many images it translated and (on sets whose
    domain is day or night) the share it decided correctly, in percent."""
    decisions = {}
    for ev in evaluations:
        for name, g in ev.gate.items():
            share = 100.0 * g["translated"] / g["images"] if g["images"] else None
            correct = {"night": share, "day": None if share is None else 100.0 - share}
            decisions[name] = {**g, "accuracy": correct.get(g["domain"])}
    return {**gate, "decisions": decisions}


def write_metrics(job: Job, evaluations: Sequence[Evaluation], night_count: int | None) -> dict:
    """metrics.json of the run (rank zero writes it) and the results to the tracker."""
    rows = [row for ev in evaluations for row in ev.rows]
    translation = translation_scores(evaluations)
    metrics = {
        "strategy": job.cfg.strategy.name,
        "night_count": night_count,
        "data": job.cfg.data.name,
        # None where unknown: python -m nightseg.evaluate of checkpoints named by path.
        "seed": _int_or_none(job.cfg.seed),
        "translator_seed": _int_or_none(job.cfg.translator_seed),
        "results": rows,
    }
    if translation is not None:
        metrics["translation"] = translation
    if job.gate is not None:
        metrics["gate"] = gate_summary(job.gate, evaluations)
    metrics["stages"] = dict(job.stages)
    # The precision the stages trained and evaluated in after trainer.precision=auto (also in every
    # trained stage's cache key), and the machine class that chose it.
    metrics["precision"] = str(job.trainer_args().get("precision"))
    metrics["device"] = device_summary(job.trainer_args().get("accelerator", "auto"))
    metrics["timings_s"] = dict(job.timings)
    metrics["checkpoints"] = dict(job.checkpoints)
    # data.prepared=true: each data set's prepared arrays, built now ("trained") or reused.
    metrics["prepared"] = dict(job.prepared)
    if not distributed.is_rank_zero():  # under DDP every rank has the same results; one writes them
        return metrics
    write_json(job.run_dir / "metrics.json", metrics)
    job.tracker.log_results(rows, final_scores(evaluations))
    return metrics


def final_scores(evaluations: Sequence[Evaluation]) -> dict[str, float | None]:
    """The scores of metrics.json by their tracker keys (nightseg.infra.tracking.score_key):
    ``test/<set>/<condition>/{miou,pixel_acc,mean_acc}`` of every row, ``.../psnr`` and
    ``.../ssim`` where the set has true day references; the run's summary holds these values."""
    scores = {}
    for ev in evaluations:
        for r in ev.rows:
            for metric in ("miou", "pixel_acc", "mean_acc"):
                scores[score_key(r["test_set"], ev.condition, metric)] = r[metric]
        for name, translation in ev.translation.items():
            for metric, value in translation.items():
                scores[score_key(name, ev.condition, metric)] = value
    return scores


def print_table(metrics: dict, run_dir: Path | None = None, console: Console | None = None) -> None:
    console = console or Console()
    nc = metrics.get("night_count")
    seed = metrics.get("seed")
    title = f"{metrics['strategy']}" + (f" night_count={nc}" if nc is not None else "") + \
        f" on {metrics['data']}" + (f" (seed {seed})" if seed is not None else "")
    table = Table(title=title)
    for col in ("test set", "condition", "mIoU %", "pixel acc %", "mean acc %"):
        table.add_column(col, justify="left" if col in ("test set", "condition") else "right")
    for r in metrics["results"]:
        table.add_row(r["test_set"], r["condition"], _fmt(r["miou"]), _fmt(r["pixel_acc"]),
                      _fmt(r["mean_acc"]))
    console.print(table)
    if "translation" in metrics:
        t = metrics["translation"]
        console.print(f"night->day translation vs true day renderings: PSNR {t['psnr']:.2f} dB, "
                      f"SSIM {t['ssim']:.3f} (untranslated night: PSNR {t.get('raw_psnr', float('nan')):.2f}"
                      f" dB, SSIM {t.get('raw_ssim', float('nan')):.3f})")
    if "gate" in metrics:
        g = metrics["gate"]
        sets = "; ".join(f"{name} {d['translated']}/{d['images']}" for name, d in g["decisions"].items())
        console.print(f"gate: mean luma < {g['threshold']:.3f} is night (fit on {g['fit_images']} "
                      f"translator images: day {100 * g['fit_day_acc']:.1f}%, night "
                      f"{100 * g['fit_night_acc']:.1f}% correct); translated {sets}")
    console.print("stages: " + ", ".join(f"{k} {v}" for k, v in metrics["stages"].items()))
    if run_dir is not None:
        console.print(f"metrics: {run_dir / 'metrics.json'}")


def _int_or_none(x) -> int | None:
    return None if x is None else int(x)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
