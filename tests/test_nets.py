"""Parameter counts and output shapes of the networks, at the paper's 480x270 and odd sizes."""

import pytest
import torch

from nightseg.nets.discriminator import PatchDiscriminator
from nightseg.nets.erf_pspnet import ERFPSPNet
from nightseg.nets.generator import ResnetGenerator


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_papers():
    assert n_params(ERFPSPNet(num_classes=19)) == pytest.approx(2.49e6, rel=0.01)
    assert n_params(ResnetGenerator(ngf=64, n_blocks=9)) == pytest.approx(11.38e6, rel=0.002)
    assert n_params(PatchDiscriminator(ndf=64, n_layers=3)) == pytest.approx(2.77e6, rel=0.002)


def test_erf_pspnet_structure():
    net = ERFPSPNet()
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    dilations = sorted({m.dilation[0] for m in convs if m.kernel_size == (3, 1)})
    assert dilations == [1, 2, 4, 8, 16]
    assert net.ppm.pool_bins == (1, 2, 4, 8)


@pytest.mark.parametrize("hw", [(270, 480), (64, 64), (37, 53), (33, 100)])
def test_erf_pspnet_logits_at_input_resolution(hw):
    net = ERFPSPNet(num_classes=11, pool_bins=(1, 2, 3, 6)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, *hw))
    assert out.shape == (1, 11, *hw)


@pytest.mark.parametrize("hw", [(270, 480), (17, 23), (64, 96)])
def test_generator_output_is_input_sized_and_bounded(hw):
    g = ResnetGenerator(ngf=8, n_blocks=2).eval()
    with torch.no_grad():
        out = g(torch.randn(2, 3, *hw))
    assert out.shape == (2, 3, *hw)
    assert out.abs().max() <= 1.0


def test_full_generator_at_paper_resolution():
    g = ResnetGenerator().eval()
    with torch.no_grad():
        assert g(torch.randn(1, 3, 270, 480)).shape == (1, 3, 270, 480)


def test_patch_discriminator_gives_a_patch_map():
    d = PatchDiscriminator(ndf=8)
    out = d(torch.randn(2, 3, 256, 256))
    # 70x70 PatchGAN on 256x256: a 30x30 map of patch scores.
    assert out.shape == (2, 1, 30, 30)


def test_channels_last_bf16_matches_fp32():
    torch.manual_seed(0)
    net = ERFPSPNet(num_classes=19).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = net(x)
        net_cl = net.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = net_cl(x.contiguous(memory_format=torch.channels_last)).float()
    # bf16 keeps ~3 significant digits; compare relative to the logit scale.
    assert (fast - ref).abs().max() / ref.abs().max() < 0.05
