"""LightGenerator: shapes at the paper's 480x270 and odd sizes, range, MAC budget, config wiring."""

import pytest
import torch
from hydra.utils import instantiate

from nightseg.models.cyclegan import CycleGANModule
from nightseg.nets.generator import ResnetGenerator
from nightseg.nets.light_generator import InstanceNorm, LightGenerator
from nightseg.tools.bench.timing import count_macs
from tests.conftest import compose_cfg


@pytest.mark.parametrize("hw", [(270, 480), (17, 23), (37, 53), (3, 5), (64, 96)])
def test_output_is_input_sized_and_bounded(hw):
    torch.manual_seed(0)
    g = LightGenerator().eval()
    with torch.no_grad():
        out = g(torch.rand(2, 3, *hw) * 2 - 1)
    assert out.shape == (2, 3, *hw)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("norm", ["none", "batch", "instance"])
def test_norm_options_build_and_train(norm):
    torch.manual_seed(0)
    g = LightGenerator(ngf=4, n_blocks=2, norm=norm)
    x = torch.rand(2, 3, 24, 40) * 2 - 1
    loss = g(x).square().mean()
    loss.backward()
    # Zero-initialised projections still get a gradient, so the blocks can leave the identity.
    projections = [b.body[-1] if norm == "none" else b.body[-2] for b in g.blocks]
    assert all(p.weight.grad.abs().sum() > 0 for p in projections)


@pytest.mark.parametrize("hw", [(5, 7), (32, 40)])  # below and above the group-norm switch
@pytest.mark.parametrize("grad", [False, True])
def test_instance_norm_kernels_agree_with_torch(hw, grad):
    x = torch.randn(2, 8, *hw).contiguous(memory_format=torch.channels_last).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        out = InstanceNorm(8)(x)
    torch.testing.assert_close(out, torch.nn.InstanceNorm2d(8)(x), atol=1e-5, rtol=1e-5)


def test_unknown_norm_names_the_key():
    with pytest.raises(ValueError, match="norm='layer'"):
        LightGenerator(norm="layer")


def test_at_least_20x_fewer_macs_than_the_paper_generator():
    # Meta tensors: the counter sees every op's shapes without computing anything.
    with torch.device("meta"):
        x = torch.empty(1, 3, 272, 480)
        full = count_macs(ResnetGenerator(ngf=64, n_blocks=9), x)
        light = count_macs(LightGenerator(), x)
    assert full == pytest.approx(98.72e9, rel=1e-3)
    assert full / light >= 20


def test_parameter_count_as_documented():
    assert sum(p.numel() for p in LightGenerator().parameters()) == pytest.approx(1.01e6, rel=0.005)


def test_light_translator_config_builds_a_light_generator():
    cfg = compose_cfg(["model/translator=light"])
    gen = instantiate(cfg.model.translator.generator)
    assert isinstance(gen, LightGenerator)
    # Keys inherited from cyclegan.yaml's generator dict are overridden, not left at 64/9.
    assert (cfg.model.translator.generator.ngf, cfg.model.translator.generator.n_blocks) == (16, 6)
    module = instantiate(cfg.model.translator, _recursive_=False, _convert_="all")
    assert isinstance(module, CycleGANModule) and isinstance(module.night2day, LightGenerator)
    out = module.translate(torch.rand(1, 3, 27, 48))
    assert out.shape == (1, 3, 27, 48) and 0 <= out.min() and out.max() <= 1
