"""How many processes a config trains on and how the GAN stage is set up for them, resolved by
Lightning without starting any (tests/test_distributed.py starts them)."""

import pytest

from nightseg.core.errors import ConfigError
from nightseg.infra import distributed
from nightseg.infra.distributed import World, gan_strategy, plan

CPU = {"accelerator": "cpu", "precision": "32-true"}


@pytest.mark.parametrize("kwargs, world", [
    ({"devices": 1}, World()),
    ({"devices": 2, "strategy": "auto"}, World(size=2, ddp="ddp")),
    ({"devices": 2, "strategy": "ddp"}, World(size=2, ddp="ddp")),
    ({"devices": 1, "num_nodes": 2}, World(size=2, ddp="ddp")),
    ({"devices": 2, "num_nodes": 2}, World(size=4, ddp="ddp")),
    ({"devices": 2, "strategy": "ddp_spawn"}, World(size=2, ddp="ddp_spawn", spawns=True)),
    ({"devices": 2, "strategy": "ddp_fork"}, World(size=2, ddp="ddp_fork", spawns=True)),
])
def test_plan_resolves_the_world_as_lightning_does(kwargs, world):
    assert plan({**CPU, **kwargs})[0] == world


@pytest.mark.parametrize("kwargs, strategy", [
    ({"devices": 2, "strategy": "auto"}, "ddp_find_unused_parameters_true"),
    ({"devices": 1, "num_nodes": 2, "strategy": "auto"}, "ddp_find_unused_parameters_true"),
    ({"devices": 2, "strategy": "ddp"}, "ddp_find_unused_parameters_true"),
    ({"devices": 2, "strategy": "ddp_spawn"}, "ddp_spawn_find_unused_parameters_true"),
    ({"devices": 1, "strategy": "auto"}, "auto"),
])
def test_gan_stages_let_ddp_step_without_every_gradient(kwargs, strategy):
    """The CycleGAN's generator step leaves the discriminators without gradients (and vice
    versa): every way of choosing DDP must allow that, or its first step fails."""
    world, _ = plan({**CPU, **kwargs})
    assert gan_strategy(kwargs["strategy"], world) == strategy


def test_spawning_strategies_cannot_span_nodes():
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_spawn .* use trainer.strategy=ddp"):
        plan({**CPU, "devices": 1, "num_nodes": 2, "strategy": "ddp_spawn"})


def test_torchrun_with_one_device_configured_is_an_error(monkeypatch):
    """Two torchrun processes but trainer.devices=1: each would run the whole job alone."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="2 processes were launched .* set trainer.devices"):
        plan({**CPU, "devices": 1})


def test_without_a_process_group_rank_zero_decides_alone():
    assert distributed.rank() == 0
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_gather(3) == [3]
