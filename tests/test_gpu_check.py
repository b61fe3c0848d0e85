"""make gpu-check: without a GPU it says so (or names the fix where the driver sees one torch
cannot use); its dry run (--device cpu --quick) runs every step of the same script on the CPU."""

import json
import subprocess
import sys

import pytest
import torch

from nightseg import gpu_check
from nightseg.infra import hardware, nvml
from nightseg.tools.gpu_check import STRATEGIES, TOLERANCE, compare_scores


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_without_a_gpu_it_says_so_and_exits_zero(no_cuda, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(hardware.nvml, "probe", lambda: None)
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert "no GPU here" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


def test_a_gpu_torch_cannot_use_is_an_error_naming_the_fix(no_cuda, monkeypatch):
    monkeypatch.setattr(hardware.nvml, "probe",
                        lambda: nvml.NvidiaGpus(("NVIDIA H100 80GB HBM3",), ((9, 0),), (12, 4)))
    with pytest.raises(SystemExit, match="index-url https://download.pytorch.org/whl/cu126"):
        gpu_check.main([])


def test_scores_are_compared_row_by_row():
    row = {"test_set": "night", "condition": "raw", "miou": 40.0, "pixel_acc": 80.0, "mean_acc": None}
    diff = compare_scores({"results": [row]}, {"results": [{**row, "miou": 40.25, "pixel_acc": 80.0}]})
    assert [(d["metric"], d["abs_diff"]) for d in diff] == [("miou", 0.25), ("pixel_acc", 0.0)]
    assert set(TOLERANCE) == {"miou", "pixel_acc", "mean_acc"}


@pytest.mark.slow
def test_the_cpu_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "-m", "nightseg.gpu_check", "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["cuda_tests", f"smoke_{STRATEGIES[0]}", "scores", "loader", "bench"]
    assert report["passed"] and all(s["status"] == "pass" for s in steps.values()), report
    assert steps["cuda_tests"]["detail"]["skipped"] == steps["cuda_tests"]["detail"]["tests"] >= 1
    assert steps[f"smoke_{STRATEGIES[0]}"]["detail"]["precision"] == hardware.auto_precision(False)[0]
    scores = steps["scores"]["detail"]
    assert scores["rows"] and all(r["abs_diff"] <= TOLERANCE[r["metric"]] for r in scores["rows"])
    assert "segmenter" in steps["bench"]["detail"]["models"]
    assert [r["workers"] for r in steps["loader"]["detail"]["rows"]] == [0, 2]
    assert "GPU check: passed" in (out / "summary.md").read_text()
