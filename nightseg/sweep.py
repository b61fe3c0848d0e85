"""Every job of a sweep checked before the first one starts (a Hydra callback, conf/config.yaml).

Without it, ``-m strategy=augment night_count=0,99999`` would train job 0 for minutes before job 1
stops on its night_count. The callback expands the sweep as Hydra's basic sweeper does, composes
each job's config and runs the same checks as a single run (``nightseg.config.validate`` and
``check_catalog``), building each distinct dataset catalog once.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra import compose
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nightseg.config import check_catalog, validate
from nightseg.utils import ConfigError, DataError

log = logging.getLogger(__name__)


def sweep_jobs(task_overrides: list[str]) -> list[list[str]]:
    """The overrides of every job, in launch order, as Hydra's basic sweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task_overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


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
