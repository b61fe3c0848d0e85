"""Configs compose, every group option loads, and bad values stop the run with the key named."""

import pytest
from omegaconf import OmegaConf

from nightseg.core.errors import ConfigError
from nightseg.infra.hardware import auto_precision
from nightseg.training.config import validate
from nightseg.training.specs import trainer_spec
from tests.conftest import CONF_DIR, compose_cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_default_config_composes_and_validates():
    cfg = compose_cfg()
    assert cfg.strategy.name == "night2day_inference"
    assert cfg.data.name == "synthetic"
    assert cfg.model.segmenter.num_classes == cfg.data.num_classes == 19
    assert cfg.night_count is None
    validate(cfg)


# What identifies each group's option in the composed config.
CHOSEN = {"strategy": lambda cfg: cfg.strategy.name, "data": lambda cfg: cfg.data.name}


@pytest.mark.parametrize("group", ["strategy", "data", "model/translator", "model/segmenter",
                                   "trainer", "logger", "experiment"])
def test_every_group_option_composes_resolves_and_validates(group):
    from hydra.utils import get_class

    options = _options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        overrides = [f"{group}={option}"]
        if option in ("augment", "augment_night2day"):
            overrides.append("night_count=0")
        cfg = compose_cfg(overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if group in CHOSEN:
            assert CHOSEN[group](cfg) == option
        if group.startswith("model/"):  # the option's module class exists
            get_class(resolved["model"][group.split("/")[1]]["_target_"])
        validate(cfg)  # every shipped option is valid as it stands


def test_every_data_config_takes_the_shared_settings():
    """conf/shared/data.yaml is the one place of the settings every dataset has; a data config
    states only what differs, and what it does not state is the shared value."""
    import yaml

    shared = yaml.safe_load((CONF_DIR / "shared" / "data.yaml").read_text())
    for option in _options("data"):
        own = yaml.safe_load((CONF_DIR / "data" / f"{option}.yaml").read_text())
        assert own["defaults"][0] == "/shared/data@_here_", option
        data = OmegaConf.to_container(compose_cfg([f"data={option}"]).data)
        for key, value in shared.items():
            assert data[key] == own.get(key, value), (option, key)
            assert own.get(key, object()) != value, f"conf/data/{option}.yaml repeats {key}: {value}"


def test_shared_sources_and_generator_are_said_once():
    light = compose_cfg(["model/translator=light"]).model.translator
    distilled = compose_cfg(["model/translator=light_distilled"]).model.translator
    assert light.generator == distilled.generator
    assert light.generator._target_ == "nightseg.nets.light_generator.LightGenerator"
    assert distilled.teacher.generator._target_ == "nightseg.nets.generator.ResnetGenerator"
    for option in ("bdd100k_bdd10k", "camvid_night", "dark_zurich"):
        source = compose_cfg([f"data={option}"]).data.catalog.sources.nighttime_driving
        assert source._target_ == "nightseg.data.nighttime_driving.build_catalog"
        assert source.on_missing == "raise"
    assert compose_cfg(["data=camvid_night"]).data.catalog.sources.nighttime_driving.classes == "camvid11"
    paper, zju = (compose_cfg([f"data={o}"]).data.catalog.sources.bdd10k for o in ("bdd100k_bdd10k", "zju"))
    assert paper.night_list.endswith("bdd10k_night.txt") and zju.night_list is None
    assert paper._target_ == zju._target_ == "nightseg.data.bdd.build_bdd10k_catalog"


@pytest.mark.parametrize("overrides, match", [
    (["night_count=5"], "night_count=5 belongs to strategy=augment"),
    (["strategy=augment"], "strategy=augment needs night_count"),
    (["strategy=augment", "night_count=-1"], "night_count=-1"),
    (["data.translate_crop=[16,16]"], r"data.translate_crop=\[16,16\] is too small"),
    (["data.resize=[100]"], "data.resize"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["model.segmenter.num_classes=11"], "model.segmenter.num_classes=11 disagrees with data.num_classes=19"),
    (["data.on_error=ignore"], "data.on_error=ignore: use raise or skip"),
    (["model.segmenter.ignore_index=0"], "model.segmenter.ignore_index=0: every dataset reader"),
    (["model.translator.epochs_constant=0", "model.translator.epochs_decay=0"], "epochs"),
    (["model.segmenter.max_epochs=10"],
     "max_epochs=10 and model.segmenter.max_steps=500 are both set; .* add model.segmenter.max_steps=null"),
    (["model.segmenter.max_steps=null"], "no training budget"),
    (["model.segmenter.max_steps=0"], "model.segmenter.max_steps=0: must be a positive integer"),
])
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(overrides))


def test_unknown_group_option_is_rejected_by_hydra():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="strategy"):
        compose_cfg(["strategy=nonsense"])


@pytest.mark.slow
def test_command_line_reports_bad_input_in_one_line():
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "nightseg.run", "night_count=5"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: night_count=5 belongs to strategy=augment" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_night_count_above_the_rendered_pool_stops_before_rendering(tmp_path):
    """The default data's pool size is its config (data.counts.train): a typo is refused before
    the 7800 scenes are rendered (minutes), not after; nothing is written to the cache."""
    from nightseg.run import run

    cfg = compose_cfg(["strategy=augment", "night_count=987654", "logger=csv",
                       f"paths.cache_dir={tmp_path}/cache"])
    with pytest.raises(ConfigError, match=r"^night_count=987654 is larger than the labelled day pool "
                       r"of synthetic \(7000 images\); use night_count<=7000, or render a larger "
                       r"pool with data.counts.train=987654$"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_sweep_checks_every_job_before_the_first_starts(tmp_path):
    """The bad job is the last one; nothing may be trained before the sweep is refused."""
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-m", "nightseg.run", "-m", "experiment=smoke", "logger=csv",
           "strategy=augment", "night_count=0,99999", f"paths.cache_dir={tmp_path}/cache",
           f"hydra.sweep.dir={tmp_path}/sweep"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "error: sweep job [" in proc.stderr and "night_count=99999 is larger than" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()  # job 0 never started
    assert not (tmp_path / "cache" / "stages").exists()


def test_sweep_jobs_expand_like_the_basic_sweeper():
    from nightseg.training.sweep import sweep_jobs

    assert sweep_jobs(["night_count=0,5", "seed=0,1", "strategy=augment"]) == [
        ["night_count=0", "seed=0", "strategy=augment"], ["night_count=0", "seed=1", "strategy=augment"],
        ["night_count=5", "seed=0", "strategy=augment"], ["night_count=5", "seed=1", "strategy=augment"]]
    # range sweeps, + keys and list values; a repeated key keeps its place and its last value
    fixed = ["+tag=a", "data.resize=[64,64]"]
    assert sweep_jobs(["seed=range(0,2)", *fixed, "x=1", "x=2,3"]) == [
        ["seed=0", *fixed, "x=2"], ["seed=0", *fixed, "x=3"],
        ["seed=1", *fixed, "x=2"], ["seed=1", *fixed, "x=3"]]
    with pytest.raises(ValueError, match="cannot enumerate"):
        sweep_jobs(["lr=interval(0.1,0.2)"])


def test_single_process_trainer_spec_is_unchanged_and_world_size_keys_others():
    """Cache keys of one-process runs stay byte for byte what they were ({"precision": ...} and
    nothing else); several processes (N x the global batch, 1/N of the steps) get keys of their own."""
    cfg = compose_cfg(["trainer.precision=bf16-mixed"])
    assert trainer_spec(cfg) == {"precision": "bf16-mixed"}
    assert trainer_spec(cfg, world_size=1) == {"precision": "bf16-mixed"}
    assert trainer_spec(compose_cfg(["trainer.precision=32-true"])) == {"precision": "32-true"}
    assert trainer_spec(cfg, world_size=4) == {"precision": "bf16-mixed", "world_size": 4}
    # The default (auto) is keyed by what it resolves to on this machine, never by "auto".
    assert trainer_spec(compose_cfg()) == {"precision": auto_precision(cuda=False)[0]}
    assert trainer_spec(cfg, world_size=2, precision="16-mixed") == {"precision": "16-mixed",
                                                                     "world_size": 2}


def test_the_papers_sweep_as_typed_fits_the_default_pool():
    """``-m strategy=augment night_count=0,1000,2000,7000`` with nothing else: every job shares
    one labelled day pool large enough for the largest night_count, and one step budget."""
    from nightseg.training.sweep import sweep_jobs

    jobs = sweep_jobs(["strategy=augment", "night_count=0,1000,2000,7000"])
    cfgs = [compose_cfg(job) for job in jobs]
    assert [c.night_count for c in cfgs] == [0, 1000, 2000, 7000]
    for cfg in cfgs:
        validate(cfg)
        assert cfg.data.counts.train >= 7000
        assert cfg.model.segmenter.max_steps is not None and cfg.model.segmenter.max_epochs is None
    assert len({OmegaConf.to_yaml(c.data) for c in cfgs}) == 1  # the same pool for every job


def test_presets_train_by_epochs_and_the_default_by_steps():
    for option in _options("experiment"):
        seg = compose_cfg([f"experiment={option}"]).model.segmenter
        assert seg.max_steps is None and seg.max_epochs >= 1, option
    seg = compose_cfg().model.segmenter
    assert (seg.max_steps, seg.max_epochs) == (500, None)


def test_presets_state_only_what_differs_from_the_defaults():
    import yaml

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict) and key not in ("counts",):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for option in _options("experiment"):
        preset = yaml.safe_load((CONF_DIR / "experiment" / f"{option}.yaml").read_text())
        groups = [f"{k.split()[-1].strip('/')}={v}" for d in preset.pop("defaults", [])
                  for k, v in d.items()]  # "override /data: camvid" -> data=camvid
        base = OmegaConf.to_container(compose_cfg(groups))  # unresolved: ${seed} is not 0
        for key, value in leaves(preset):
            default = base
            for part in key.split("."):
                default = default[part]
            assert default != value, f"conf/experiment/{option}.yaml sets {key}={value}, the default"
