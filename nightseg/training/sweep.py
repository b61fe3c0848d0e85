"""Every job of a sweep checked before the first one starts (a Hydra callback, conf/config.yaml).

Without it, ``-m strategy=augment night_count=0,99999`` would train job 0 for minutes before job 1
stops on its night_count. The callback expands the sweep as Hydra's basic sweeper does, composes
each job's config and runs the same checks as a single run (``nightseg.training.config.validate`` and
``check_catalog``), building each distinct dataset catalog once.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from hydra import compose
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nightseg.core.errors import ConfigError, DataError
from nightseg.training.config import check_catalog, validate

log = logging.getLogger(__name__)


def sweep_jobs(task_overrides: list[str]) -> list[list[str]]:
    """The overrides of every job, in launch order, as Hydra's basic sweeper expands them: the
    cartesian product of the overrides' values, the first override varying slowest, a repeated
    key keeping its first position and its last value. Only Hydra's public override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(task_overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ValueError(f"{override.input_line}: the basic sweeper cannot enumerate this sweep")
    return [list(job) for job in itertools.product(*choices.values())]


class CheckSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            jobs = sweep_jobs(list(config.hydra.overrides.task))
        except Exception as e:  # e.g. another sweeper's search-space syntax: jobs check themselves
            log.info("sweep not checked up front (%s); each job checks its own config", e)
            return
        catalogs: dict[str, Any] = {}
        for overrides in jobs:
            try:
                cfg = compose(config_name=config.hydra.job.config_name, overrides=overrides)
                validate(cfg)
                key = OmegaConf.to_yaml(cfg.data.catalog, resolve=True)
                if key not in catalogs:
                    catalogs[key] = instantiate(cfg.data.catalog)
                check_catalog(cfg, catalogs[key])
            except (ConfigError, DataError) as e:
                job = " ".join(overrides) or "(no overrides)"
                raise SystemExit(f"error: sweep job [{job}]: {e}; nothing was run") from None
        log.info("sweep checked: %d jobs", len(jobs))
