"""The layout of the package may change; what a smoke run trains, under which cache keys, and what
it scores may not. ``tests/golden/smoke_keys.json`` was written by this module's ``--write`` with
the code before nightseg was split into layers (issue 22); the same run now must give the same
stage keys, spec files and metrics.

    python tests/test_identical_keys.py --write     # regenerate (only for an intended change)

The run is ``augment_night2day`` with the gate, so every kind of stage is built (translator,
generated night images, segmenter, gate), at ``trainer.precision=32-true`` so that its keys do
not depend on the CPU class (``auto`` resolves to bf16-mixed or 32-true, nightseg.infra.hardware). The
scores are compared where the golden file's CPU class is this machine's: float kernels differ
between CPU classes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent / "golden" / "smoke_keys.json"
OVERRIDES = ["experiment=smoke", "logger=csv", "trainer.precision=32-true", "trainer.deterministic=true",
             "strategy=augment_night2day", "night_count=8", "strategy.gate=auto"]
# What metrics.json holds that does not depend on where and how fast the run was.
COMPARED = ("strategy", "night_count", "data", "seed", "translator_seed", "results", "translation",
            "gate", "stages", "precision")


def _cpu_class() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


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
    specs = {f"{d.parent.name}/{d.name}": json.loads((d / "spec.json").read_text())
             for d in sorted(stages.glob("*/*")) if d.is_dir() and (d / "spec.json").is_file()}
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
    now = smoke_keys_and_metrics(tmp_path)
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
    args = p.parse_args()
    values = smoke_keys_and_metrics(args.work)
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    if args.write:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    sys.stdout.write(text)
