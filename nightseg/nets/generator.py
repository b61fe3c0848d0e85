"""CycleGAN's ResNet generator (Zhu et al., ICCV 2017; architecture of Johnson et al., ECCV 2016).

c7s1-ngf, two stride-2 downsamplers, ``n_blocks`` residual blocks, two stride-2 upsamplers,
c7s1-3 with tanh. Reflection padding and instance norm, as in the CycleGAN paper. Written from
the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the bottom/right of ``x`` to a multiple of ``multiple``; return it and (h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if torch.compiler.is_exporting():
        # An exported graph cannot branch on its input size: it always reflect-pads (by 0 or
        # more), which matches the eager path for every input of at least ``multiple`` pixels.
        return F.pad(x, (0, pw, 0, ph), mode="reflect"), h, w
    if ph or pw:
        # Reflection needs pad < size; replicate for tiny inputs.
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convs with instance norm and a residual connection."""

    def __init__(self, ch: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image-to-image generator; input and output in [-1, 1], output the size of the input.

    About 11.38 M parameters at ``ngf=64, n_blocks=9``. Inputs whose sides are not a multiple of 4
    (270 rows) are reflect-padded and the output cropped back.
    """

    stride = 4

    def __init__(self, ngf: int = 64, n_blocks: int = 9, in_channels: int = 3,
                 out_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
        ]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2),
                       nn.ReLU(inplace=True)]
            ch *= 2
        layers += [ResnetBlock(ch, dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_multiple(x, self.stride)
        return self.model(x)[..., :h, :w]
