"""ERF-PSPNet: the ERFNet encoder with a pyramid pooling decoder.

Encoder after Romera et al., "ERFNet: Efficient Residual Factorized ConvNet for Real-time Semantic
Segmentation" (T-ITS 2018); decoder after Zhao et al., "Pyramid Scene Parsing Network" (CVPR 2017),
as combined by Yang et al. (IV 2018) and used in Sun et al. 2019 (arXiv 1908.05868).
Written from the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DownsamplerBlock(nn.Module):
    """Halves the resolution: a strided 3x3 conv concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        if out_ch <= in_ch:
            raise ValueError(f"DownsamplerBlock needs out_ch > in_ch, got {in_ch} -> {out_ch}")
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv(x)
        pool = self.pool(x)
        # Odd sizes: the strided conv rounds up like ceil_mode pooling, so both branches agree.
        return F.relu(self.bn(torch.cat([conv, pool], dim=1)))


class NonBottleneck1D(nn.Module):
    """ERFNet's factorized residual block: (3x1, 1x3) twice, the second pair dilated."""

    def __init__(self, ch: int, dropout: float, dilation: int):
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(ch, ch, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(ch, ch, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(ch, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(ch, ch, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv1x3_2 = nn.Conv2d(ch, ch, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(ch, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(y + x)


class ERFNetEncoder(nn.Module):
    """3->16->64 downsamplers, five blocks at 64, downsampler to 128, two runs of dilations 2,4,8,16."""

    out_channels = 128

    def __init__(self, dropout_64: float = 0.03, dropout_128: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [DownsamplerBlock(3, 16), DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, dropout_64, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, dropout_128, d) for d in (2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _bin_weights(size, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(bins, size) averaging weights of PyTorch's adaptive pooling along one axis: bin i covers
    rows floor(i * size / bins) .. ceil((i + 1) * size / bins) - 1, so bins overlap where they do
    not divide the size (34 rows in 8 bins: 0-4, 4-8, 8-13, ...)."""
    i = torch.arange(bins, device=device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(size, device=device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def adaptive_avg_pool2d_exportable(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as two matrix products with the bins' averaging weights.

    The same bins as PyTorch's (equal up to float rounding), built from the input's size at run
    time out of ops every ONNX exporter handles: the TorchScript exporter refuses
    adaptive_avg_pool2d when the bins do not divide the map (the 34x60 map of a 480x272 frame),
    and the dynamo exporter specialises its bins to the size it traced, so exported graphs with
    a dynamic height and width pooled wrongly at other sizes.
    """
    h, w = x.shape[-2:]
    rows = _bin_weights(h, bins, x.dtype, x.device)  # (bins, H)
    cols = _bin_weights(w, bins, x.dtype, x.device)  # (bins, W)
    return rows @ (x @ cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average-pool to each bin size, 1x1 conv, upsample, concatenate."""

    def __init__(self, in_ch: int, pool_bins: tuple[int, ...], branch_ch: int):
        super().__init__()
        self.pool_bins = tuple(pool_bins)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_ch, branch_ch, 1, bias=False),
                nn.BatchNorm2d(branch_ch),
                nn.ReLU(inplace=True),
            )
            for _ in self.pool_bins
        )
        self.out_channels = in_ch + branch_ch * len(self.pool_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        # Exporting (torch.onnx.export, torch.export): the pooling as exportable ops; eager and
        # compiled runs keep PyTorch's kernel (faster, and bit-exact with training).
        pool = adaptive_avg_pool2d_exportable if torch.compiler.is_exporting() else F.adaptive_avg_pool2d
        for bins, branch in zip(self.pool_bins, self.branches, strict=True):
            y = branch(pool(x, bins))
            outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


class ERFPSPNet(nn.Module):
    """ERF-PSPNet segmenter: logits of shape (N, num_classes, H, W) for any input size H x W.

    Input is a normalized image batch. The encoder works at 1/8 resolution; sizes that are not a
    multiple of 8 (the paper's 270 rows) are padded by replication and the logits cropped back.
    With the defaults (19 classes, bins 1/2/4/8, 32-channel branches, 256-channel head) it has
    about 2.49 M parameters, the size the paper reports.
    """

    stride = 8

    def __init__(
        self,
        num_classes: int = 19,
        pool_bins: tuple[int, ...] = (1, 2, 4, 8),
        branch_channels: int = 32,
        head_channels: int = 256,
        dropout: float = 0.1,
        encoder_dropout: tuple[float, float] = (0.03, 0.3),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = ERFNetEncoder(*encoder_dropout)
        self.ppm = PyramidPooling(ERFNetEncoder.out_channels, tuple(pool_bins), branch_channels)
        self.head = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        # An exported graph has no Python branch on its input size: it always pads (by 0 or more).
        if torch.compiler.is_exporting() or ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.head(self.ppm(self.encoder(x)))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]
