"""Shared fixtures: composing the Hydra config as the command line would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_cfg(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


@pytest.fixture
def smoke_overrides(tmp_path_factory) -> list[str]:
    """Tiny sizes, CSV logging, a cache of the test's own (shared by the tests of one session so
    the synthetic images are rendered once)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    return ["experiment=smoke", "logger=csv", f"paths.cache_dir={cache}"]
