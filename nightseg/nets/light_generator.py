"""A light day<->night generator for fast inference and for distillation from ResnetGenerator.

Same interface as :class:`~nightseg.nets.generator.ResnetGenerator` (images in and out in [-1, 1],
output the size of the input), 37x fewer multiply-accumulates at 480x272 with the defaults.
Design, written from the papers and chosen by measurements on a 2-core CPU (experiments/bench):

- A U-Net-shaped ResNet (Ronneberger et al. 2015; Johnson et al. 2016): dense 3x3 stride-2 convs
  down to 1/8 resolution (one level deeper than CycleGAN's 1/4, so the blocks see 4x fewer pixels),
  transposed convs back up, and additive skips from each encoder level so that full-resolution
  detail does not have to pass through the bottleneck.
- Inverted-residual blocks at 1/8 (MobileNetV2, Sandler et al. 2018): 1x1 expand, depthwise 3x3,
  linear 1x1 project. Depthwise convs are cheap in MACs but memory-bound on CPU, so they are only
  used at the lowest resolution; elsewhere dense convs run close to the machine's conv peak.
  Dilations cycle (1, 2, 4) as in ERFNet, widening the receptive field for global illumination.
- Instance norm (as in the teacher) only at the lowest resolution, where it is cheap: in a
  distillation proxy it was worth +3.4 dB PSNR to the teacher over no norm (+2.7 over batch
  norm), and norm at the full-resolution levels added nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nightseg.nets.generator import pad_to_multiple


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters (as in CycleGAN), choosing the faster CPU kernel.

    Group norm with one channel per group gives the same numbers. On bf16 channels_last maps of
    at least 1024 pixels PyTorch's group-norm kernel does the forward pass several times faster
    than its instance-norm kernel (at 1/8 of 480x272, 2040 pixels: 0.25 vs 4 ms for 512 channels);
    below 1024 pixels it switches to an algorithm 10-100x slower, and its backward pass is always
    5-10x slower. So: group_norm for inference on large maps, instance_norm otherwise.
    """

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.ch, self.eps = ch, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            # No branch on the size in an exported graph: ONNX's InstanceNormalization. (Maps of
            # one pixel, from inputs of at most 8 pixels a side, differ from the eager path.)
            return F.instance_norm(x, eps=self.eps)
        pixels = x.shape[-2] * x.shape[-1]
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        # instance_norm refuses 1x1 maps (inputs of 8 pixels or less per side reach them at 1/8);
        # group_norm maps them to 0, the limit of normalising a constant.
        if pixels > 1 and (needs_grad or pixels < 1024):
            return F.instance_norm(x, eps=self.eps)
        return F.group_norm(x, self.ch, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.ch}, eps={self.eps}"


NORMS = {"none": None, "batch": nn.BatchNorm2d, "instance": InstanceNorm}


def _norm(kind: str, ch: int) -> list[nn.Module]:
    return [] if NORMS[kind] is None else [NORMS[kind](ch)]


def _conv_act(in_ch: int, out_ch: int, norm: str, **conv) -> list[nn.Module]:
    # A conv followed by a norm needs no bias (the norm removes it).
    return [nn.Conv2d(in_ch, out_ch, bias=norm == "none", **conv), *_norm(norm, out_ch),
            nn.ReLU(inplace=True)]


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 (dilated) -> linear 1x1 project, plus the input."""

    def __init__(self, ch: int, expansion: int, dilation: int, norm: str, dropout: float = 0.0):
        super().__init__()
        hidden = ch * expansion
        layers = _conv_act(ch, hidden, norm, kernel_size=1) if expansion > 1 else []
        layers += _conv_act(hidden, hidden, norm, kernel_size=3, padding=dilation,
                            dilation=dilation, groups=hidden)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        project = nn.Conv2d(hidden, ch, 1, bias=norm == "none")
        if norm == "none":
            # Each block starts as the identity: what keeps a norm-free residual stack trainable.
            nn.init.zeros_(project.weight)
        layers += [project, *_norm(norm, ch)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LightGenerator(nn.Module):
    """Image-to-image generator; input and output in [-1, 1], output the size of the input.

    ``ngf`` channels at full resolution, doubled by each of the ``n_downsampling`` stride-2
    convs; ``n_blocks`` inverted-residual blocks (width ``expansion`` x) at the lowest resolution,
    where ``norm`` ("instance", "batch" or "none") is applied. With the defaults it has 1.01 M
    parameters and 2.68 GMACs at 480x272, versus 11.38 M and 98.7 GMACs for
    ResnetGenerator(64, 9). Sides that are not a multiple of ``2**n_downsampling`` (270 rows) are
    reflect-padded and the output cropped back. ``dropout`` applies inside the blocks, as in
    ResnetGenerator, so configs can share the key.
    """

    def __init__(
        self,
        ngf: int = 16,
        n_blocks: int = 6,
        in_channels: int = 3,
        out_channels: int = 3,
        dropout: float = 0.0,
        n_downsampling: int = 3,
        expansion: int = 4,
        dilations: Sequence[int] = (1, 2, 4),
        norm: str = "instance",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"LightGenerator norm={norm!r} is unknown; use one of {sorted(NORMS)}")
        if n_downsampling < 1 or ngf < 1 or n_blocks < 0 or expansion < 1:
            raise ValueError(f"LightGenerator needs ngf >= 1, n_blocks >= 0, n_downsampling >= 1 and "
                             f"expansion >= 1; got ngf={ngf}, n_blocks={n_blocks}, "
                             f"n_downsampling={n_downsampling}, expansion={expansion}")
        dilations = tuple(dilations) or (1,)
        self.stride = 2**n_downsampling
        # Zero padding throughout: reflection padding of the input and output convs (CycleGAN's
        # choice against border artefacts) made the whole net 20% slower under bf16 channels_last
        # on CPU, and a distilled student learns the teacher's borders anyway.
        self.stem = nn.Sequential(*_conv_act(in_channels, ngf, "none", kernel_size=3, padding=1))
        self.down = nn.ModuleList()
        ch = ngf
        for level in range(1, n_downsampling + 1):
            level_norm = norm if level == n_downsampling else "none"
            self.down.append(nn.Sequential(*_conv_act(ch, ch * 2, level_norm, kernel_size=3,
                                                      stride=2, padding=1)))
            ch *= 2
        self.blocks = nn.Sequential(*[
            InvertedResidual(ch, expansion, dilations[i % len(dilations)], norm, dropout)
            for i in range(n_blocks)])
        # Transposed convs: a quarter of the MACs of nearest-upsample + 3x3 conv at the same
        # efficiency under bf16 on CPU (measured ~4x faster).
        self.up = nn.ModuleList()
        for _ in range(n_downsampling):
            self.up.append(nn.Sequential(
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(inplace=True)))
            ch //= 2
        self.head = nn.Sequential(nn.Conv2d(ch, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_multiple(x, self.stride)
        y = self.stem(x)
        skips = [y]
        for down in self.down:
            y = down(y)
            skips.append(y)
        y = self.blocks(skips.pop())
        for up in self.up:
            y = up(y) + skips.pop()
        return self.head(y)[..., :h, :w]
