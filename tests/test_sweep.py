"""The paper's ratio study as one Hydra sweep at smoke size, run once for this file: what the
jobs trained and shared, the report's files, and what wandb holds of the jobs and of the study."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from nightseg.infra.tracking import sweep_group
from tests.conftest import REPO, read_metrics
from tests.wandb_files import offline_runs

pytestmark = pytest.mark.slow

STUDY = ("strategy", "night_count", "seed", "translator_seed", "data", "gate")


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory) -> SimpleNamespace:
    """The paper's sweep night_count=0,1000,2000,7000 over a 7000-image pool, scaled down by 250
    (0,4,8,28 over 28 images; 28 is more than the smoke preset's own pool of 16), with a step
    budget as the default has, logged to wandb offline (the default logger), then
    ``python -m nightseg.report`` on it. Run once: every test that reads it is in this file, so
    one test worker runs them all. ``sweep`` and ``cache`` directories, and the report's process
    (``report``)."""
    root = tmp_path_factory.mktemp("smoke_sweep")
    cache, sweep = root / "cache", root / "sweep"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    cmd = [sys.executable, "-m", "nightseg.run", "-m", "experiment=smoke", "logger=wandb",
           "strategy=augment", "night_count=0,4,8,28", "data.counts.train=28",
           "model.segmenter.max_epochs=null", "model.segmenter.max_steps=6",
           f"paths.cache_dir={cache}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "nightseg.report", str(sweep)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    return SimpleNamespace(sweep=sweep, cache=cache, report=report)


def test_sweep_trains_one_translator_and_reports(smoke_sweep):
    """The smoke sweep: one translator, one generated set, nested subsets,
    and the same number of optimizer steps at every point; then the report."""
    cache, sweep = smoke_sweep.cache, smoke_sweep.sweep
    metrics = {m["night_count"]: m for m in
               (json.loads(p.read_text()) for p in sweep.rglob("metrics.json"))}
    assert sorted(metrics) == [0, 4, 8, 28]
    assert metrics[0]["stages"]["translator"] == "unused"
    assert sorted(metrics[n]["stages"]["translator"] for n in (4, 8, 28)) == ["cached", "cached", "trained"]
    assert len(list((cache / "stages" / "translator").glob("*/model.ckpt"))) == 1
    # One generated set; job N trained on its first N images, so 4 is a subset of 8.
    generated = list((cache / "stages" / "night_images").glob("*/images"))
    assert len(generated) == 1
    specs = [json.loads(p.read_text()) for p in (cache / "stages" / "segmenter").glob("*/spec.json")]
    extras = sorted((s["extra"] or {}).get("count", 0) for s in specs)
    assert extras == [0, 4, 8, 28]
    assert len({(s["extra"] or {}).get("generated") for s in specs if s["extra"]}) == 1
    manifest = json.loads((generated[0] / "manifest.json").read_text())
    assert len(manifest) == 28 and len({m["source"] for m in manifest}) == 28
    import torch

    steps = [torch.load(m["checkpoints"]["segmenter"], map_location="cpu", weights_only=False)["global_step"]
             for m in metrics.values()]
    assert steps == [6] * 4  # 28 + 28 images cost what 28 + 0 cost

    assert smoke_sweep.report.returncode == 0, smoke_sweep.report.stderr
    for name in ("summary.csv", "summary.md", "runs.csv", "miou_vs_night_count.png"):
        assert (sweep / name).exists(), name
    assert "augment N=8" in (sweep / "summary.md").read_text()


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
