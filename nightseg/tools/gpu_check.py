"""The GPU check (``make gpu-check``, ``python -m nightseg.gpu_check``): on one GPU, in at most
about 8 minutes, everything of nightseg that only a GPU can show, as one JSON and a short summary.

Steps, each in a process of its own (a failure is recorded, the next step still runs) and each
given what is left of the time budget:

1. ``cuda_tests``: the tests marked ``cuda`` (pytest -m cuda; skipped without a GPU).
2. ``smoke_<strategy>``: ``python -m nightseg.run experiment=smoke`` for each strategy on the
   device, sharing one stage cache (the translator is trained once); its metrics.json says which
   device and precision it ran in.
3. ``scores``: the night2day_inference run's models scored again on the CPU in fp32
   (``python -m nightseg.evaluate``), every result row compared with the device's scores in its
   auto precision (bf16 autocast on Ampere and later), within :data:`TOLERANCE`.
4. ``loader``: the training loader with many workers (``data.num_workers=auto`` for a GPU job)
   against the main process, pinned and moved to the device, images per second.
5. ``bench``: ``python -m nightseg.bench --device <device> --compile``: inference eager and
   compiled, training steps (whatever rows the bench gives), as JSON; last, with the rest of the
   budget (compiling every model is the longest step).

``--quick`` (the CPU dry run in make test) keeps every step but shrinks it: one strategy, the bench
on the segmenter alone at 64x96 without compiling or training rows, a few loader batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nightseg.core.files import write_json
from nightseg.core.paths import REPO

STRATEGIES = ("night2day_inference", "augment", "augment_night2day")
SMOKE = ["experiment=smoke", "logger=csv"]
# Device scores against CPU fp32 scores of the same models, in percentage points. bf16 keeps 8
# significant bits (relative rounding 2**-9, about 0.2 %, per operation), so argmax changes only at
# pixels whose two best classes are that close. On the smoke models (4 test images of 64x96, barely
# trained, so near-ties are common) bf16 autocast against fp32 on the AVX-512 bf16 CPU (the same
# comparison, made by the dry run) moved mIoU by at most 0.05, pixel accuracy by 0.10 and mean
# accuracy by 0.05 points; the tolerances leave 5-20x that for the GPU's own kernels (other
# accumulation orders, TF32 in fp32 layers). A real fault (a wrong layout, normalisation or kernel)
# moves them by many points.
TOLERANCE = {"miou": 1.0, "pixel_acc": 0.5, "mean_acc": 1.0}
# Seconds each step may take at most (less where the budget is nearly spent).
STEP_LIMIT = {"cuda_tests": 120, "smoke": 150, "scores": 90, "loader": 90, "bench": 420}


@dataclass
class Step:
    """One step's outcome: pass, fail, skip or timeout, its wall time and what it measured."""

    name: str
    status: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


class GpuCheck:
    """Runs the steps in order into ``out``; :meth:`run` returns the report (also gpu_check.json)."""

    def __init__(self, device: str, out: Path, quick: bool = False, budget_s: float = 480.0):
        self.device, self.out, self.quick = device, out, quick
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.cache = out / "cache"
        self.steps: list[Step] = []

    # ---- plumbing ------------------------------------------------------------------------------
    def _limit(self, kind: str) -> float:
        return max(1.0, min(STEP_LIMIT[kind], self.deadline - time.monotonic()))

    def _command(self, name: str, args: list[str], kind: str) -> tuple[int | None, float, str]:
        """Run ``python args`` with its output in <out>/logs/<name>.log: (exit status or None
        on timeout, seconds, the output's last lines)."""
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
               "NIGHTSEG_CACHE_DIR": str(self.cache)}
        start = time.monotonic()
        with open(log, "w") as f:
            try:
                rc = subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT,
                                    env=env, cwd=REPO, timeout=self._limit(kind)).returncode
            except subprocess.TimeoutExpired:
                rc = None
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        return rc, round(time.monotonic() - start, 1), tail

    def _add(self, step: Step) -> Step:
        self.steps.append(step)
        print(f"gpu-check: {step.name}: {step.status} ({step.seconds:.0f} s)", file=sys.stderr, flush=True)
        return step

    def _finish(self, name: str, rc: int | None, seconds: float, tail: str, **detail) -> Step:
        status = "timeout" if rc is None else "pass" if rc == 0 else "fail"
        if status != "pass":
            detail["log_tail"] = tail
        return self._add(Step(name, status, seconds, detail))

    @property
    def accelerator(self) -> str:
        return "gpu" if self.device == "cuda" else "cpu"

    # ---- the steps -----------------------------------------------------------------------------
    def cuda_tests(self) -> Step:
        tests = REPO / "tests"
        files = sorted(str(p) for p in tests.glob("test_*.py") if "mark.cuda" in p.read_text())
        if not files:
            return self._add(Step("cuda_tests", "skip", 0.0, {"why": f"no tests marked cuda in {tests}"}))
        junit = self.out / "cuda_tests.xml"
        rc, seconds, tail = self._command(
            "cuda_tests", ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", *files], "cuda_tests")
        counts = {}
        if junit.exists():
            suite = ET.parse(junit).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        return self._finish("cuda_tests", rc, seconds, tail, **counts)

    def smoke(self, strategy: str) -> Step:
        run_dir = self.out / "runs" / strategy
        extra = ["night_count=8"] if strategy.startswith("augment") else []
        rc, seconds, tail = self._command(
            f"smoke_{strategy}", ["-m", "nightseg.run", *SMOKE, f"strategy={strategy}", *extra,
                                  f"trainer.accelerator={self.accelerator}",
                                  f"paths.cache_dir={self.cache}", f"hydra.run.dir={run_dir}"], "smoke")
        detail = {"run_dir": str(run_dir)}
        metrics = run_dir / "metrics.json"
        if rc == 0 and metrics.exists():
            m = json.loads(metrics.read_text())
            detail.update(device=m.get("device"), precision=m.get("precision"),
                          timings_s=m.get("timings_s"), miou=_rows(m, "miou"))
        return self._finish(f"smoke_{strategy}", rc, seconds, tail, **detail)

    def scores(self) -> Step:
        run_dir = self.out / "runs" / "night2day_inference"
        if not (run_dir / "metrics.json").exists():
            return self._add(Step("scores", "skip", 0.0, {"why": "the night2day_inference smoke run failed"}))
        ref_dir = self.out / "cpu_fp32_scores"
        rc, seconds, tail = self._command(
            "scores", ["-m", "nightseg.evaluate", f"models.run={run_dir}", *SMOKE, "num_panels=0",
                       f"paths.cache_dir={self.cache}", "trainer.accelerator=cpu",
                       "trainer.precision=32-true", f"hydra.run.dir={ref_dir}"], "scores")
        if rc != 0:
            return self._finish("scores", rc, seconds, tail)
        device = json.loads((run_dir / "metrics.json").read_text())
        cpu = json.loads((ref_dir / "metrics.json").read_text())
        diff = compare_scores(device, cpu)
        ok = all(d["abs_diff"] <= TOLERANCE[d["metric"]] for d in diff)
        return self._add(Step("scores", "pass" if ok else "fail", seconds, {
            "device_precision": device.get("precision"), "reference": "CPU, 32-true",
            "tolerance_points": TOLERANCE, "rows": diff,
            "max_abs_diff": {k: max((d["abs_diff"] for d in diff if d["metric"] == k), default=0.0)
                             for k in TOLERANCE}}))

    def bench(self) -> Step:
        out = self.out / "bench.json"
        args = ["-m", "nightseg.bench", "--device", self.device, "--json", str(out)]
        if self.quick:
            args += ["--models", "segmenter", "--height", "64", "--width", "96", "--runs", "2",
                     "--warmup", "1", "--no-training"]
        else:
            args += ["--compile", "--runs", "10", "--train-runs", "3"]
        rc, seconds, tail = self._command("bench", args, "bench")
        detail: dict[str, Any] = {"command": "python " + " ".join(args)}
        if rc == 0 and out.exists():
            result = json.loads(out.read_text())
            detail.update(machine=result.get("machine"), auto_precision=result.get("auto_precision"),
                          models=result.get("models"), training=result.get("training"))
        return self._finish("bench", rc, seconds, tail, **detail)

    def loader(self) -> Step:
        args = ["-c", "from nightseg.tools.gpu_check import loader_main; loader_main()",
                self.device, str(self.cache), "8" if self.quick else "60"]
        rc, seconds, tail = self._command("loader", args, "loader")
        detail = {}
        result = self.out / "logs" / "loader.log"
        for line in result.read_text(errors="replace").splitlines() if rc == 0 else ():
            if line.startswith("{"):
                detail = json.loads(line)
        return self._finish("loader", rc, seconds, tail, **detail)

    def run(self) -> dict:
        import torch

        from nightseg.infra.hardware import device_summary

        self.out.mkdir(parents=True, exist_ok=True)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.cuda_tests()
        for strategy in STRATEGIES[:1] if self.quick else STRATEGIES:
            self.smoke(strategy)
        self.scores()
        self.loader()
        self.bench()
        report = {"device": self.device, "machine": device_summary(self.accelerator),
                  "torch": torch.__version__, "cuda": torch.version.cuda, "quick": self.quick,
                  "started": started, "budget_s": self.budget_s,
                  "seconds": round(sum(s.seconds for s in self.steps), 1),
                  "passed": all(s.status in ("pass", "skip") for s in self.steps),
                  "steps": [asdict(s) for s in self.steps]}
        write_json(self.out / "gpu_check.json", report)
        (self.out / "summary.md").write_text(summary(report))
        return report


def _rows(metrics: dict, key: str) -> dict[str, float | None]:
    return {f"{r['test_set']}/{r['condition']}": r.get(key) for r in metrics.get("results", [])}


def compare_scores(device: dict, cpu: dict) -> list[dict]:
    """Every (test set, condition, metric) both metrics.json files score, with the difference."""
    theirs = {(r["test_set"], r["condition"]): r for r in cpu.get("results", [])}
    out = []
    for row in device.get("results", []):
        ref = theirs.get((row["test_set"], row["condition"]))
        for metric in TOLERANCE if ref is not None else ():
            a, b = row.get(metric), ref.get(metric)
            if a is None or b is None:
                continue
            out.append({"set": f"{row['test_set']}/{row['condition']}", "metric": metric,
                        "device": a, "cpu_fp32": b, "abs_diff": round(abs(a - b), 4)})
    return out


def summary(report: dict) -> str:
    """A few lines: the machine, then one line per step."""
    lines = [f"# GPU check: {'passed' if report['passed'] else 'FAILED'}", "",
             f"{report['machine']}; torch {report['torch']} (CUDA {report['cuda']}); "
             f"{report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget"
             f"{'; --quick' if report['quick'] else ''}", "",
             "| step | status | s | |", "|---|---|---:|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {_brief(s)} |")
    return "\n".join(lines) + "\n"


def _brief(step: dict) -> str:
    d = step["detail"]
    if "why" in d:
        return d["why"]
    if step["name"] == "cuda_tests" and "tests" in d:
        return f"{d['tests']} tests, {d['failures'] + d['errors']} failed, {d['skipped']} skipped"
    if step["name"].startswith("smoke_") and "precision" in d:
        return f"{d['precision']} on {d['device']}; mIoU " + ", ".join(
            f"{k} {v}" for k, v in (d.get("miou") or {}).items())
    if step["name"] == "scores" and "max_abs_diff" in d:
        return (f"{d['device_precision']} vs CPU fp32: max |diff| " + ", ".join(
            f"{k} {v:.2f}" for k, v in d["max_abs_diff"].items()) + f" (tolerance {d['tolerance_points']})")
    if step["name"] == "bench" and d.get("models"):
        rows = []
        for name, r in d["models"].items():
            compiled = f", compiled {r['compiled_ms']:.1f}" if "compiled_ms" in r else ""
            rows.append(f"{name} fp32 {r['reference_ms']:.1f} / auto {r['auto_ms']:.1f}{compiled} ms")
        return "; ".join(rows)
    if step["name"] == "loader" and "rows" in d:
        return "; ".join(f"{r['workers']} workers {r['images_per_s']:.0f} img/s" for r in d["rows"])
    return d.get("log_tail", "").splitlines()[-1] if d.get("log_tail") else ""


# ---- the loader step (run in a process of its own) -------------------------------------------
def loader_throughput(device: str, cache_dir: str, batches: int) -> dict:
    """Images per second of the smoke preset's training loader, loading in the main process and
    with the workers ``data.num_workers=auto`` gives a job on this device, each batch pinned (CUDA)
    and moved to the device as training does."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from nightseg.core.paths import CONF_DIR
    from nightseg.data.datamodules import build_transform, make_loader
    from nightseg.data.io import SegmentationDataset, batch_to_float
    from nightseg.infra.hardware import loader_workers

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"paths.cache_dir={cache_dir}"])
    catalog = instantiate(cfg.data.catalog)
    data = cfg.data
    train = catalog.train
    dataset = SegmentationDataset(train, build_transform(train.resize or data.resize, data.train_crop,
                                                         data.hflip),
                                  catalog.num_classes, data.on_error, replace_skipped=True)
    cuda = device == "cuda"
    many = max(2, loader_workers("auto", cuda=cuda))
    rows = []
    for workers in (0, many):
        loader = make_loader(dataset, data.batch_size, workers, shuffle=True, drop_last=True,
                             pin_memory=cuda)
        images, start = 0, time.perf_counter()
        while images < batches * data.batch_size:
            for batch in loader:
                x = batch_to_float({k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                                    for k, v in batch.items()})
                images += x["image"].shape[0]
                if images >= batches * data.batch_size:
                    break
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append({"workers": workers, "images": images, "seconds": round(seconds, 3),
                     "images_per_s": round(images / seconds, 1)})
    return {"batch_size": data.batch_size, "image_size": list(data.image_size), "rows": rows}


def loader_main() -> None:
    device, cache_dir, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(loader_throughput(device, cache_dir, batches)))
