"""Sweep summary: ``python -m nightseg.report <sweep dir>``.

Collects every job's metrics.json below the sweep directory and writes
- ``runs.csv``: one row per job, test set and condition;
- ``summary.csv`` / ``summary.md``: mean, standard deviation and number of seeds per point
  (summary.md: mIoU and pixel accuracy per test set, then per-class IoU for each test set);
- ``miou_vs_night_count.png``: mIoU against night_count per test set, with error bars (one
  standard deviation over seeds) where several seeds were swept; night2day_inference jobs of the
  same directory appear as dashed lines;
- with ``--wandb`` (the default where the sweep's jobs used logger=wandb): one summary run in the
  sweep's wandb group, in ``wandb/`` of the sweep directory, offline unless WANDB_MODE or
  ``--wandb-mode`` says online (nightseg.tools.wandb_report: the curve, the tables, the panels).
The paper's ratio curve (Sun et al. 2019, Fig. 6) is one run per point; this shows the spread.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

METRICS = ("miou", "pixel_acc", "mean_acc")


def collect(sweep_dir: Path) -> list[dict]:
    """One flat row per (job, test set, condition) from every metrics.json below ``sweep_dir``."""
    rows = []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        m = json.loads(path.read_text())
        for r in m["results"]:
            rows.append({"job": str(path.parent.relative_to(sweep_dir)), "strategy": m["strategy"],
                         "night_count": m["night_count"], "seed": m["seed"], "data": m["data"],
                         "test_set": r["test_set"], "condition": r["condition"],
                         **{k: r[k] for k in METRICS},
                         **{f"iou/{c}": v for c, v in r.get("per_class_iou", {}).items()}})
    return rows


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    mean = round(statistics.fmean(vals), 3) if vals else None
    return mean, round(statistics.stdev(vals), 3) if len(vals) > 1 else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean, std (sample, over seeds) and n per (strategy, condition, test set, night_count).

    Rows of one seed that appear in several jobs (e.g. the raw rows of a run with the gate and
    of one without) are averaged first: each seed counts once in the mean and the spread."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["strategy"], r["condition"], r["test_set"], r["night_count"])].append(r)
    out = []
    for (strategy, condition, test_set, nc), rs in groups.items():
        row = {"strategy": strategy, "condition": condition, "test_set": test_set,
               "night_count": nc, "n_seeds": len({r["seed"] for r in rs})}
        classes = dict.fromkeys(k for r in rs for k in r if k.startswith("iou/"))
        by_seed: dict[int, list[dict]] = defaultdict(list)
        for r in rs:
            by_seed[r["seed"]].append(r)
        for k in (*METRICS, *classes):
            per_seed = [statistics.fmean(vals) for vals in
                        ([r[k] for r in runs if r.get(k) is not None] for runs in by_seed.values())
                        if vals]
            row[f"{k}_mean"], row[f"{k}_std"] = _mean_std(per_seed)
        out.append(row)
    out.sort(key=lambda r: (r["strategy"], r["condition"], r["test_set"],
                            -1 if r["night_count"] is None else r["night_count"]))
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        # Rows of several datasets may name different classes: the union of their keys.
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def _cell(row: dict, k: str = "miou") -> str:
    mean, std = row.get(f"{k}_mean"), row.get(f"{k}_std")
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _label(row: dict) -> str:
    if row["night_count"] is None:
        return f"{row['strategy']} ({row['condition']})"
    if row["strategy"] == "augment":
        return f"augment N={row['night_count']}"
    return f"{row['strategy']} N={row['night_count']} ({row['condition']})"


def pivot(summary: list[dict], metric: str = "miou", title: str = "mIoU %"
          ) -> tuple[list[str], list[list[str]]]:
    """Rows = strategy / night_count / condition, columns = test sets, cells = mean ± std."""
    sets = list(dict.fromkeys(r["test_set"] for r in summary))
    lines: dict[str, dict[str, dict]] = {}
    for r in summary:
        lines.setdefault(_label(r), {})[r["test_set"]] = r
    header = ["run", "seeds"] + [f"{s} {title}" for s in sets]
    body = []
    for label, by_set in lines.items():
        n = max(r["n_seeds"] for r in by_set.values())
        body.append([label, str(n)] + [_cell(by_set[s], metric) if s in by_set else "" for s in sets])
    return header, body


def per_class(summary: list[dict], test_set: str) -> tuple[list[str], list[list[str]]]:
    """Rows = runs, columns = classes, cells = IoU mean ± std on ``test_set`` ("-": absent)."""
    rows = [r for r in summary if r["test_set"] == test_set]
    classes = list(dict.fromkeys(k[len("iou/"):-len("_mean")] for r in rows for k in r
                                 if k.startswith("iou/") and k.endswith("_mean")))
    header = ["run", *classes]
    return header, [[_label(r), *(_cell(r, f"iou/{c}") for c in classes)] for r in rows]


def _markdown(header: list[str], body: list[list[str]]) -> str:
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(md + ["| " + " | ".join(line) + " |" for line in body])


def curves(summary: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The summary rows drawn against night_count, per (strategy, condition, test set), by
    night_count: augment's, and the translated conditions of strategies with a night_count
    (augment_night2day; its raw rows are augment's again)."""
    out = defaultdict(list)
    for r in summary:
        if r["night_count"] is not None and r["miou_mean"] is not None and (
                r["strategy"] == "augment" or r["condition"] != "raw"):
            out[(r["strategy"], r["condition"], r["test_set"])].append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r["night_count"])
    return dict(sorted(out.items()))


def baselines(summary: list[dict]) -> list[dict]:
    """The translated rows of jobs without a night_count (night2day_inference): level lines."""
    return [r for r in summary
            if r["night_count"] is None and r["condition"] != "raw" and r["miou_mean"] is not None]


def curve_label(strategy: str, condition: str, test_set: str) -> str:
    name = "augment" if strategy == "augment" else f"{strategy} ({condition})"
    return f"{name}: {test_set}"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = {}
    for (strategy, condition, test_set), rs in curves(summary).items():
        x = [r["night_count"] for r in rs]
        y = [r["miou_mean"] for r in rs]
        err = [r["miou_std"] or 0.0 for r in rs]
        line = ax.errorbar(x, y, yerr=err if any(err) else None, marker="o", capsize=3,
                           ls="-" if strategy == "augment" else ":",
                           label=curve_label(strategy, condition, test_set),
                           color=colors.get(test_set))
        colors.setdefault(test_set, line[0].get_color())
    for r in baselines(summary):
        ax.axhline(r["miou_mean"], ls="--", lw=1, color=colors.get(r["test_set"], "gray"),
                   label=f"{r['strategy']} ({r['condition']}): {r['test_set']}")
    ax.set_xlabel("night_count (translated night images added)")
    ax.set_ylabel("mIoU (%)")
    n = max((r["n_seeds"] for r in summary), default=1)
    ax.set_title("mIoU vs night_count" + (f" (mean ± std over {n} seeds)" if n > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over, the data
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_logger(sweep_dir: Path, rows: list[dict]) -> dict | None:
    """The ``logger`` config of the sweep's first job that has one (``<job>/.hydra/config.yaml``,
    as composed; ``mode`` left unresolved), or None."""
    from omegaconf import OmegaConf

    for job in dict.fromkeys(r["job"] for r in rows):
        path = sweep_dir / job / ".hydra" / "config.yaml"
        if path.is_file():
            node = OmegaConf.load(path).get("logger")
            if node is not None:
                return OmegaConf.to_container(node, resolve=False)
    return None


def report(sweep_dir: str | Path, console: Console | None = None, to_wandb: bool | None = None,
           wandb_mode: str | None = None, group: str | None = None) -> dict[str, Path]:
    """Write the summary files into ``sweep_dir``; returns their paths. ``to_wandb``: add the summary
    run to the sweep's wandb group (None: where the jobs logged to wandb) in ``wandb_mode``
    (default: WANDB_MODE, else offline) and ``group`` (default: the jobs' group of this sweep
    directory, nightseg.infra.tracking.sweep_group)."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no metrics.json found below it; pass the sweep "
                                "directory of a finished `python -m nightseg.run -m ...`")
    summary = aggregate(rows)
    paths = {"runs": sweep_dir / "runs.csv", "summary_csv": sweep_dir / "summary.csv",
             "summary_md": sweep_dir / "summary.md", "plot": sweep_dir / "miou_vs_night_count.png"}
    _write_csv(paths["runs"], rows)
    _write_csv(paths["summary_csv"], summary)
    header, body = pivot(summary)
    sections = [f"# Sweep summary: {sweep_dir}", "Values in percent, mean ± sample std over seeds.",
                "## mIoU", _markdown(header, body),
                "## Pixel accuracy", _markdown(*pivot(summary, "pixel_acc", "pixel acc %"))]
    for test_set in dict.fromkeys(r["test_set"] for r in summary):
        sections += [f"## Per-class IoU on {test_set}", _markdown(*per_class(summary, test_set))]
    paths["summary_md"].write_text("\n\n".join(sections) + "\n")
    plot(summary, paths["plot"])
    console = console or Console()
    table = Table(title=f"sweep {sweep_dir}")
    for h in header:
        table.add_column(h, justify="left" if h in ("run",) else "right")
    for line in body:
        table.add_row(*line)
    console.print(table)
    for p in paths.values():
        console.print(f"wrote {p}")
    logger = sweep_logger(sweep_dir, rows) or {}
    if to_wandb is None:
        to_wandb = str(logger.get("_target_", "")).endswith(".WandbTracker")
    if to_wandb:
        from nightseg.infra.tracking import sweep_group  # imports Lightning: only for wandb

        run_dir = _summary_run(sweep_dir, rows, summary, paths["plot"], logger, console,
                               wandb_mode or os.environ.get("WANDB_MODE", "offline"),
                               group or sweep_group(sweep_dir))
        if run_dir is not None:
            paths["wandb"] = run_dir
    return paths


def _summary_run(sweep_dir: Path, rows: list[dict], summary: list[dict], figure: Path,
                 logger: dict, console: Console, mode: str, group: str) -> Path | None:
    from nightseg.tools.wandb_report import log_summary_run

    lines = curves(summary)
    run_dir = log_summary_run(sweep_dir, rows, summary, lines, {k: curve_label(*k) for k in lines},
                              figure, group=group, project=logger.get("project") or "nightseg",
                              entity=logger.get("entity"), mode=mode)
    if run_dir is not None:
        console.print(f"wandb: summary run {run_dir} in group {group} ({mode})")
        if mode != "online":
            console.print(f"put the sweep online: wandb sync {sweep_dir}/wandb/offline-run-* "
                          f"{sweep_dir}/*/wandb/offline-run-*")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nightseg.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path,
                        help="a multirun directory (or any parent of metrics.json files)")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                        help="add a summary run to the sweep's wandb group (default: where the "
                             "sweep's jobs used logger=wandb)")
    parser.add_argument("--wandb-mode", choices=("offline", "online", "disabled"),
                        help="default: WANDB_MODE, else offline (then: wandb sync, as printed)")
    parser.add_argument("--wandb-group", help="default: the group the sweep's jobs logged to "
                                              "(from the sweep directory's last two names)")
    args = parser.parse_args(argv)
    try:
        report(args.sweep_dir, to_wandb=args.wandb, wandb_mode=args.wandb_mode, group=args.wandb_group)
    except FileNotFoundError as e:
        parser.error(str(e))  # exits 2 with the usage line
    return 0


if __name__ == "__main__":
    sys.exit(main())
