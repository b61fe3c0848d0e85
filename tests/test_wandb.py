"""wandb's side, read back from offline run files (no network): the stage loggers' key hierarchy
and the report's summary run over seeds. What the smoke sweep's jobs and report put in wandb is
checked in test_sweep.py, beside the sweep it runs once."""

from __future__ import annotations

import json

import pytest

from nightseg.infra.tracking import _StageWandbLogger
from nightseg.report import report
from tests.wandb_files import offline_runs


def test_stage_keys_follow_one_hierarchy():
    seg, scoring = _StageWandbLogger("segmenter"), _StageWandbLogger("eval_night2day")
    assert seg.wandb_key("train/loss") == "segmenter/train/loss"  # was segmenter-train/loss
    assert seg.wandb_key("epoch") == "segmenter/epoch"
    assert seg.wandb_key("val/day/miou") == "val/day/miou"
    assert seg.step_key == "segmenter/step"
    assert scoring.wandb_key("test/night/night2day/miou") == "test/night/night2day/miou"
    assert scoring.wandb_key("epoch") is None


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
