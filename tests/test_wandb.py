"""The study as wandb shows it, read back from offline run files (no network): the jobs' key
hierarchy, step axes, run config and summary against metrics.json, and the report's summary run
in the sweep's group (curve, tables, panels)."""

from __future__ import annotations

import csv
import json

import pytest

from nightseg.infra.tracking import _StageWandbLogger, sweep_group
from nightseg.report import report
from tests.conftest import read_metrics
from tests.wandb_files import offline_runs

STUDY = ("strategy", "night_count", "seed", "translator_seed", "data", "gate")


def test_stage_keys_follow_one_hierarchy():
    seg, scoring = _StageWandbLogger("segmenter"), _StageWandbLogger("eval_night2day")
    assert seg.wandb_key("train/loss") == "segmenter/train/loss"  # was segmenter-train/loss
    assert seg.wandb_key("epoch") == "segmenter/epoch"
    assert seg.wandb_key("val/day/miou") == "val/day/miou"
    assert seg.step_key == "segmenter/step"
    assert scoring.wandb_key("test/night/night2day/miou") == "test/night/night2day/miou"
    assert scoring.wandb_key("epoch") is None


@pytest.mark.slow
def test_sweep_jobs_hold_the_study_config_keys_and_final_scores(smoke_sweep):
    sweep = smoke_sweep.sweep
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(jobs) == 4
    translator_runs = []
    for job in jobs:
        (run,) = offline_runs(job)
        m = read_metrics(job)
        assert run.group == sweep_group(sweep) and run.job_type == "run"
        assert f"night_count={m['night_count']}" in run.tags
        # The study's coordinates at the config's top level, the stages' hyperparameters nested.
        assert {k: run.config[k] for k in STUDY} == {
            "strategy": "augment", "night_count": m["night_count"], "seed": 0, "translator_seed": 0,
            "data": "synthetic", "gate": "none"}
        assert run.config["segmenter"]["max_steps"] == 6 and run.config["cfg"]["seed"] == 0
        # Final scores: the summary holds metrics.json's values under test/<set>/<condition>/...
        for r in m["results"]:
            for metric in ("miou", "pixel_acc", "mean_acc"):
                assert run.summary[f"test/{r['test_set']}/{r['condition']}/{metric}"] == r[metric]
            table = run.table(f"test/{r['test_set']}/{r['condition']}/per_class_iou")
            assert dict(table["data"]) == r["per_class_iou"]
        results = run.table("test/results")
        assert [row[:2] for row in results["data"]] == [[r["test_set"], r["condition"]]
                                                        for r in m["results"]]
        keys = {k for k in run.keys() if not k.startswith("_")}
        # One hierarchy: no Lightning prefix join (eval_raw-test/..., segmenter-train/...).
        assert {k.split("/")[0] for k in keys} <= {"test", "val", "segmenter", "translator", "panels"}
        assert {"segmenter/train/loss", "val/synthetic_day_val/miou", "test/synthetic_night/raw/miou",
                "panels/synthetic_night/raw"} <= keys
        # Each stage's curves on its own step axis; the validation on the segmenter's.
        assert run.metrics["segmenter/*"]["step_metric"] == "segmenter/step"
        assert run.metrics["val/*"]["step_metric"] == "segmenter/step"
        steps = [row["segmenter/step"] for row in run.history if "segmenter/train/loss" in row]
        assert steps == sorted(steps) and steps[-1] == 5  # 6 optimizer steps
        if any(k.startswith("translator/") for k in keys):
            translator_runs.append(run)
            assert run.metrics["translator/*"]["step_metric"] == "translator/step"
            assert {"translator/train/loss_g", "translator/samples"} <= keys
    assert len(translator_runs) == 1  # the job that trained it; the others found it cached


@pytest.mark.slow
def test_report_adds_the_study_to_the_sweeps_group(smoke_sweep):
    sweep = smoke_sweep.sweep
    assert smoke_sweep.report.returncode == 0, smoke_sweep.report.stderr
    assert "wandb sync" in smoke_sweep.report.stdout  # how to put it online
    (run,) = offline_runs(sweep)
    assert run.group == sweep_group(sweep) and run.job_type == "report"
    with (sweep / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    # The curve of each condition against night_count, its own step axis.
    assert run.metrics["curve/*"]["step_metric"] == "night_count"
    points = [row for row in run.history if "curve/synthetic_night/raw/miou" in row]
    assert [p["night_count"] for p in points] == [0, 4, 8, 28]
    night = {int(r["night_count"]): float(r["miou_mean"]) for r in summary
             if r["test_set"] == "synthetic_night"}
    assert {p["night_count"]: p["curve/synthetic_night/raw/miou"] for p in points} == night
    assert all("panels/synthetic_night/raw" in p for p in points)  # a panel per night_count
    # The line series chart and the tables.
    assert "study/miou_vs_night_count" in run.config["_wandb"]["visualize"]
    chart = run.table("study/miou_vs_night_count_table")
    assert [r[0] for r in chart["data"] if r[1] == "augment: synthetic_night"] == [0, 4, 8, 28]
    table = run.table("study/summary")
    assert len(table["data"]) == len(summary)
    assert {c: table["data"][0][table["columns"].index(c)] for c in ("night_count", "miou_mean")} \
        == {"night_count": int(summary[0]["night_count"]), "miou_mean": float(summary[0]["miou_mean"])}
    per_class = run.table("study/per_class_iou")
    assert {"road", "sky", "car"} <= {row[per_class["columns"].index("class")] for row in per_class["data"]}
    assert len(run.table("study/runs")["data"]) == 4 * 2  # every job, two sets
    assert "study/figure" in run.summary


def _metrics(path, seed, night_count, miou):
    path.mkdir(parents=True)
    result = {"test_set": "night", "condition": "raw", "miou": miou, "pixel_acc": 70.0,
              "mean_acc": 50.0, "per_class_iou": {"road": miou, "car": None}}
    path.joinpath("metrics.json").write_text(json.dumps({
        "strategy": "augment", "night_count": night_count, "seed": seed, "data": "x",
        "results": [result]}))


@pytest.mark.slow  # wandb starts its service process
def test_summary_run_shows_the_spread_over_seeds(tmp_path):
    for i, (seed, nc, miou) in enumerate([(0, 0, 30.0), (1, 0, 34.0), (0, 5, 40.0), (1, 5, 40.0)]):
        _metrics(tmp_path / str(i), seed, nc, miou)
    paths = report(tmp_path, to_wandb=True, wandb_mode="offline", group="g")
    (run,) = offline_runs(tmp_path)
    assert paths["wandb"] == run.dir and run.group == "g"
    (first, second) = [row for row in run.history if "curve/night/raw/miou" in row]
    assert (first["curve/night/raw/miou"], first["curve/night/raw/miou_std"]) == (32.0, 2.828)
    assert (second["curve/night/raw/miou"], second["curve/night/raw/miou_std"]) == (40.0, 0.0)
    chart = run.table("study/miou_vs_night_count_table")
    assert {r[1] for r in chart["data"]} == {"augment: night", "augment: night - std",
                                             "augment: night + std"}
