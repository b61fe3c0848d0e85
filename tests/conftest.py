"""Shared fixtures and helpers: composing the Hydra config as the command line would, tiny
networks, unpaired images and a quiet CPU Trainer, and reading a run's metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# make test runs the suite on two pytest-xdist workers (one per core of the development machine).
# Each worker then computes on one thread, and so do the processes its tests start: two workers
# of two threads each on two cores would make every parallel region wait for a descheduled thread.
if os.environ.get("PYTEST_XDIST_WORKER") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def compose_cfg(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


@pytest.fixture
def smoke_overrides(tmp_path_factory) -> list[str]:
    """Tiny sizes, CSV logging, a cache of the test's own (shared by the tests of one session so
    the synthetic images are rendered once)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    return ["experiment=smoke", "logger=csv", f"paths.cache_dir={cache}"]


# Generator and critic configs small enough for a CycleGAN step in well under a second.
SMALL_G = {"_target_": "nightseg.nets.generator.ResnetGenerator", "ngf": 8, "n_blocks": 2}
SMALL_D = {"_target_": "nightseg.nets.discriminator.PatchDiscriminator", "ndf": 8, "n_layers": 3}


class UnpairedImages(Dataset):
    """``n`` random day images and ``n`` darker night ones, batches as TranslationDataModule's."""

    def __init__(self, n=2, hw=(40, 40)):
        g = torch.Generator().manual_seed(0)
        self.day = torch.rand(n, 3, *hw, generator=g)
        self.night = torch.rand(n, 3, *hw, generator=g) * 0.3

    def __len__(self):
        return len(self.day)

    def __getitem__(self, i):
        return {"day": self.day[i], "night": self.night[i]}


def cpu_trainer(**kw) -> pl.Trainer:
    """A CPU Trainer that writes nothing (no logger, checkpoints, progress bar or summary)."""
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def read_metrics(run_dir: Path) -> dict:
    """A run directory's metrics.json."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


# The files that cost most: CPU seconds of the file and of the processes it starts, in one make test
# on the 2-core AVX-512 bf16 machine (experiments/test_suite; tests/cpu_accounting.py measures them
# again). Handed out first, so that no worker starts one of them near the end.
LONGEST_FIRST = ("test_distributed.py",  # 198: torchrun jobs and their ranks
                 "test_run.py",          # 62
                 "test_export.py",       # 61: the dynamo ONNX exports
                 "test_sweep.py",        # 47
                 "test_slurm.py",        # 47
                 "test_use.py",          # 43
                 "test_gpu_check.py")    # 42


def pytest_collection_modifyitems(config, items):
    """The order in which make test hands whole files to its two workers (``--no-loadscope-reorder``):
    the LONGEST_FIRST files, then the other files with tests that start a Trainer, a job or a
    process, the unit tests last, where they fill the end. Tests marked ``cuda`` need a GPU:
    skipped with the reason where torch sees none (they run under make gpu-check)."""
    def rank(item) -> tuple[int, int]:
        name = item.path.name
        longest = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return longest, 0 if slow.get(name) else 1

    slow: dict[str, bool] = {}
    for item in items:
        marked = any(item.get_closest_marker(m) is not None for m in ("slow", "distributed"))
        slow[item.path.name] = slow.get(item.path.name, False) or marked
    items.sort(key=rank)  # stable: the order within a file is kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check runs the tests marked cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
