"""Where nightseg finds its own files."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The Hydra config groups (conf/), composed by the commands and by the bench and export tools.
CONF_DIR = REPO / "conf"
