"""The ratio study as one wandb run in its sweep's group (``python -m nightseg.report``'s summary
run, job_type ``report``): what the paper's Fig. 6 shows, with the spread over seeds.

- ``study/miou_vs_night_count``: a line series per curve (wandb.plot.line_series: mean mIoU, and
  mean ± one standard deviation where several seeds were swept); ``study/figure``: the report's
  matplotlib figure with error bars;
- ``curve/<set>/<condition>/miou`` (and ``miou_std``) against ``night_count`` (its step axis), so
  wandb's own line plots draw each condition's curve;
- tables (wandb.Table): ``study/summary`` (mean, std and seeds per point), ``study/per_class_iou``
  (per point and class), ``study/runs`` (one row per job, set and condition: every seed);
- ``panels/<set>/<condition>``: the lowest seed's sample panels per ``night_count`` (a slider), as
  the jobs log them, and ``baseline/<strategy>/<set>/<condition>`` for jobs without a night_count
  (night2day_inference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nightseg.infra.tracking import WandbTracker

METRICS = ("miou", "pixel_acc", "mean_acc")
# A job's panels are panels/<set>_<condition>.png (nightseg.inference.evaluation.save_panels).
CONDITIONS = ("night2day_gated", "night2day", "raw")


def _panel_key(stem: str) -> str:
    """``synthetic_night_night2day`` -> ``synthetic_night/night2day``, the jobs' own key."""
    for condition in CONDITIONS:
        if stem.endswith(f"_{condition}"):
            return f"{stem[:-len(condition) - 1]}/{condition}"
    return stem


def _table(rows: Sequence[Mapping], columns: Sequence[str]):
    import wandb

    return wandb.Table(columns=list(columns), data=[[r.get(c) for c in columns] for r in rows])


def _line_series(curves: Mapping[tuple, list[dict]], labels: Mapping[tuple, str]):
    import wandb

    xs, ys, keys = [], [], []
    for k, rs in curves.items():
        x = [r["night_count"] for r in rs]
        xs.append(x)
        ys.append([r["miou_mean"] for r in rs])
        keys.append(labels[k])
        if any(r["miou_std"] for r in rs):
            for sign, name in ((-1, "- std"), (1, "+ std")):
                xs.append(x)
                ys.append([r["miou_mean"] + sign * (r["miou_std"] or 0.0) for r in rs])
                keys.append(f"{labels[k]} {name}")
    return wandb.plot.line_series(xs, ys, keys=keys, title="mIoU (%) vs night_count",
                                  xname="night_count")


def _panels(sweep_dir: Path, runs: Sequence[Mapping]) -> dict[int | None, dict[str, tuple]]:
    """Per night_count, ``{"<set>/<condition>": (png, caption)}`` from the jobs' ``panels/``
    folders, the lowest seed's first (``<strategy>/<set>/<condition>`` without a night_count)."""
    jobs = {r["job"]: r for r in runs}
    order = sorted(jobs.values(), key=lambda r: (r["seed"] is None, r["seed"] or 0, r["job"]))
    out: dict[int | None, dict[str, tuple]] = {}
    for r in order:
        nc = r["night_count"]
        for png in sorted((sweep_dir / r["job"] / "panels").glob("*.png")):
            name = _panel_key(png.stem)
            name = name if nc is not None else f"{r['strategy']}/{name}"
            caption = f"{r['strategy']} night_count={nc} seed {r['seed']} (job {r['job']})"
            out.setdefault(nc, {}).setdefault(name, (png, caption))
    return out


def log_summary_run(sweep_dir: Path, runs: Sequence[Mapping], summary: Sequence[Mapping],
                    curves: Mapping[tuple, list[dict]], labels: Mapping[tuple, str],
                    figure: Path, *, group: str, project: str = "nightseg",
                    entity: str | None = None, mode: str = "offline") -> Path | None:
    """Write the summary run into ``<sweep_dir>/wandb/`` (offline unless ``mode=online``) in
    ``group``; returns its directory (None when wandb is disabled). ``runs``, ``summary`` and
    ``curves`` are the report's rows (one per job, set and condition), its aggregate per point
    and its curves per (strategy, condition, test set); ``labels`` names the curves."""
    import wandb

    night_counts = sorted({r["night_count"] for r in runs if r["night_count"] is not None})
    config = {"sweep_dir": str(sweep_dir), "jobs": len({r["job"] for r in runs}),
              "strategies": sorted({r["strategy"] for r in runs}), "night_counts": night_counts,
              "seeds": sorted({r["seed"] for r in runs if r["seed"] is not None}),
              "data": sorted({r["data"] for r in runs})}
    tracker = WandbTracker(sweep_dir, project=project, entity=entity, mode=mode, group=group,
                           name="report", tags=["report"], job_type="report", run_config=config)
    run = tracker.run
    if run is None or mode == "disabled":
        tracker.finish()
        return None
    try:
        run.define_metric("night_count", hidden=True)
        for section in ("curve", "panels"):
            run.define_metric(f"{section}/*", step_metric="night_count")
        panels = _panels(sweep_dir, runs)
        for nc in night_counts:
            row: dict = {"night_count": nc}
            for (_, condition, test_set), rs in curves.items():
                for r in rs:
                    if r["night_count"] == nc:
                        row[f"curve/{test_set}/{condition}/miou"] = r["miou_mean"]
                        if r["miou_std"] is not None:  # several seeds
                            row[f"curve/{test_set}/{condition}/miou_std"] = r["miou_std"]
            for name, (png, caption) in panels.get(nc, {}).items():
                row[f"panels/{name}"] = wandb.Image(str(png), caption=caption)
            run.log(row)
        point = ["strategy", "condition", "test_set", "night_count"]
        classes = list(dict.fromkeys(k[len("iou/"):-len("_mean")] for r in summary for k in r
                                     if k.startswith("iou/") and k.endswith("_mean")))
        per_class = [{**{k: r[k] for k in point}, "class": c, "iou_mean": r.get(f"iou/{c}_mean"),
                      "iou_std": r.get(f"iou/{c}_std")} for r in summary for c in classes]
        final = {
            "study/summary": _table(summary, [*point, "n_seeds", *(f"{m}_{s}" for m in METRICS
                                                                   for s in ("mean", "std"))]),
            "study/per_class_iou": _table(per_class, [*point, "class", "iou_mean", "iou_std"]),
            "study/runs": _table(runs, ["job", "strategy", "night_count", "seed", "data",
                                        "test_set", "condition", *METRICS]),
        }
        if curves:
            final["study/miou_vs_night_count"] = _line_series(curves, labels)
        if figure.is_file():
            final["study/figure"] = wandb.Image(str(figure), caption="mIoU vs night_count "
                                                "(error bars: one standard deviation over seeds)")
        for name, (png, caption) in panels.get(None, {}).items():
            final[f"baseline/{name}"] = wandb.Image(str(png), caption=caption)
        run.log(final)
        return Path(run.dir).parent
    finally:
        tracker.finish()
