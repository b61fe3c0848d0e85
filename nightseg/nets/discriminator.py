"""The 70x70 PatchGAN discriminator (Isola et al., CVPR 2017), as used by CycleGAN.

C64-C128-C256-C512 (4x4 convs, the first three stride 2, no norm on the first, instance norm and
LeakyReLU 0.2 elsewhere), then a 4x4 conv to one channel of patch scores. Written from the papers.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """Patch scores (raw, for the least-squares loss); about 2.77 M parameters at ndf=64, 3 layers."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
