"""The layout of the package may change; what a smoke run trains, under which cache keys, and what
it scores may not. ``tests/golden/smoke_keys.json`` was written by this module's ``--write`` with
the code before nightseg was split into layers (issue 22); the same run now must give the same
stage keys, spec files and metrics.

    python tests/test_identical_keys.py --write     # regenerate (only for an intended change)

The run is ``augment_night2day`` with the gate, so every kind of stage is built (translator,
generated night images, segmenter, gate), at ``trainer.precision=32-true`` so that its keys do
not depend on the CPU class (``auto`` resolves to bf16-mixed or 32-true, nightseg.infra.hardware).
It runs in a process of its own: earlier tests change process-wide state that changes the float
results (torch's thread count, for one). The scores are compared where the golden file's CPU class
and thread count are this machine's: float kernels and reduction orders differ with both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent / "golden" / "smoke_keys.json"
# The precision and the segmenter's layout pinned: auto would resolve them by the CPU class.
OVERRIDES = ["experiment=smoke", "logger=csv", "trainer.precision=32-true", "trainer.deterministic=true",
             "model.segmenter.channels_last=true",
             "strategy=augment_night2day", "night_count=8", "strategy.gate=auto"]
# What metrics.json holds that does not depend on where and how fast the run was.
COMPARED = ("strategy", "night_count", "data", "seed", "translator_seed", "results", "translation",
            "gate", "stages", "precision")


def _cpu_class() -> str:
    """The CPU's class and model and the thread count: an AMX Xeon reports the same torch
    capability (AVX512) as this Zen 4 EPYC, but not the same kernels."""
    import torch

    from nightseg.infra.hardware import cpu_class, cpu_model

    return f"{cpu_class().tier}, {cpu_model()}, {torch.get_num_threads()} threads"


def smoke_keys_and_metrics(work: Path) -> dict:
    """Run the smoke job with an empty cache under ``work``; its stage keys, specs and metrics.
    The config is composed from the conf/ beside the imported nightseg package, so the same
    function records the old code's values and checks the new code's."""
    from hydra import compose, initialize_config_dir

    import nightseg
    from nightseg.run import run

    conf = Path(nightseg.__file__).resolve().parents[1] / "conf"
    cache = work / "cache"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[*OVERRIDES, f"paths.cache_dir={cache}"])
    metrics = run(cfg, work / "run")
    stages = cache / "stages"
    # The trained stages; the prepared data sets (kind prepared, issue 23) came later and are
    # checked by what they must not change: these keys and the scores, bit for bit.
    specs = {f"{d.parent.name}/{d.name}": json.loads((d / "spec.json").read_text())
             for d in sorted(stages.glob("*/*")) if d.is_dir() and (d / "spec.json").is_file()
             and d.parent.name != "prepared"}
    checkpoints = {k: str(Path(v).relative_to(stages)) for k, v in metrics["checkpoints"].items()}
    return {"cpu_class": _cpu_class(), "keys": sorted(specs), "specs": _portable(specs, str(cache)),
            "checkpoints": checkpoints,
            "metrics": json.loads(json.dumps({k: metrics.get(k) for k in COMPARED}))}


def _portable(obj, cache: str):
    """Specs with this run's cache directory written as <cache> (it is in no key: keys hold what
    determines an artefact, and the synthetic data's location does not)."""
    return json.loads(json.dumps(obj).replace(cache, "<cache>"))


def test_smoke_run_keys_and_metrics_are_unchanged(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    env.pop("OMP_NUM_THREADS", None)  # torch's default thread count, as the golden file was recorded
    cmd = [sys.executable, __file__, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "now.json")]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    now = json.loads((tmp_path / "now.json").read_text())
    assert now["keys"] == golden["keys"]
    assert now["specs"] == golden["specs"]
    assert now["checkpoints"] == golden["checkpoints"]
    if now["cpu_class"] != golden["cpu_class"]:
        pytest.skip(f"keys identical; scores not compared: recorded on CPU class {golden['cpu_class']}, "
                    f"this machine is {now['cpu_class']}")
    assert now["metrics"] == golden["metrics"]


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write", action="store_true", help=f"write {GOLDEN}")
    p.add_argument("--work", type=Path, required=True, help="an empty directory for the run and its cache")
    p.add_argument("--out", type=Path, help="write the values there")
    args = p.parse_args()
    values = smoke_keys_and_metrics(args.work)
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    for path in [GOLDEN] * args.write + [args.out] * (args.out is not None):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
