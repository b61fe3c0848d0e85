"""The sweep report: mean ± std over seeds of mIoU, pixel accuracy and per-class IoU."""

from __future__ import annotations

import json

from nightseg.report import report


def _metrics(path, seed, miou, acc, car, night_count=0):
    path.mkdir(parents=True)
    result = {"test_set": "night", "condition": "raw", "miou": miou, "pixel_acc": acc,
              "mean_acc": 50.0, "per_class_iou": {"road": 80.0 + seed, "car": car, "fence": None}}
    path.joinpath("metrics.json").write_text(json.dumps({
        "strategy": "augment", "night_count": night_count, "seed": seed, "data": "x",
        "results": [result]}))


def test_summary_has_miou_pixel_accuracy_and_per_class_tables(tmp_path):
    _metrics(tmp_path / "0", 0, 30.0, 70.0, 10.0)
    _metrics(tmp_path / "1", 1, 34.0, 74.0, None)  # car absent in this run's truth
    _metrics(tmp_path / "2", 0, 40.0, 80.0, 20.0, night_count=5)
    report(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "| augment N=0 | 2 | 32.00 ± 2.83 |" in md
    assert "| augment N=0 | 2 | 72.00 ± 2.83 |" in md  # pixel accuracy table
    assert "## Per-class IoU on night" in md
    assert "| run | road | car | fence |" in md
    # road over both seeds; car only where present; fence never present.
    assert "| augment N=0 | 80.50 ± 0.71 | 10.00 | - |" in md
    assert "| augment N=5 | 80.00 | 20.00 | - |" in md
    assert (tmp_path / "miou_vs_night_count.png").stat().st_size > 0


def test_a_seed_scored_by_several_jobs_counts_once(tmp_path):
    _metrics(tmp_path / "a", 0, 30.0, 70.0, 10.0)
    _metrics(tmp_path / "b", 1, 34.0, 74.0, 10.0)
    _metrics(tmp_path / "c", 1, 34.0, 74.0, 10.0)  # seed 1 again (e.g. a run with the gate)
    report(tmp_path)
    assert "| augment N=0 | 2 | 32.00 ± 2.83 |" in (tmp_path / "summary.md").read_text()
