"""The parity check of an exported graph: onnxruntime against the PyTorch module at several input
sizes, including ones whose 1/8 feature map the pyramid pooling bins do not divide. Per size and
output the max abs difference and, for logits, the share of pixels whose argmax agrees, which must
be >= 99.9% (else :class:`ParityError`)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nightseg.deploy.runtime import session

# Parity sizes (rows, cols): the bench's 480x272 frame (a 34x60 map at 1/8, which bins 4 and 8 do
# not divide), the paper's 270 rows (padded to 272), portrait, 640x360 (45x80), and the two
# training sizes in the project's configs (CamVid 180x240, synthetic 96x192).
PARITY_SIZES = ((272, 480), (270, 480), (480, 272), (360, 640), (180, 240), (96, 192))
MIN_ARGMAX_AGREEMENT = 0.999
# Generators: images in [0, 1]; fp32 onnxruntime and PyTorch differ by float rounding only.
MAX_IMAGE_DIFF = 1e-3


class ParityError(RuntimeError):
    """An exported graph computes something else than its PyTorch module; the message names the
    file, the input size and the figures."""


def parity_images(batch: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (coarse noise upsampled, plus fine noise): image-like
    inputs, so that argmax comparisons are not dominated by near ties on pure noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(batch, 3, max(1, h // 16), max(1, w // 16), generator=g)
    x = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(batch, 3, h, w, generator=g)).clamp(0, 1)


def check_parity(module: nn.Module, path: str | os.PathLike, sizes: Iterable[tuple[int, int]] = PARITY_SIZES,
                 batch: int = 2, min_agreement: float | None = MIN_ARGMAX_AGREEMENT,
                 max_image_diff: float | None = MAX_IMAGE_DIFF, threads: int | None = None) -> list[dict]:
    """Run ``path`` in onnxruntime and ``module`` in PyTorch (fp32, eager) on the same images at
    each size: per size and output, ``max_abs_diff`` and for logits ``argmax_agreement`` (share of
    pixels). Raises ParityError when an agreement is below ``min_agreement`` or an image output
    differs by more than ``max_image_diff`` (None: report only, as for int8 graphs)."""
    sess = session(path, threads=threads)
    names = [o.name for o in sess.get_outputs()]
    rows = []
    module = module.eval()
    for size in sizes:
        x = parity_images(batch, tuple(size))
        with torch.no_grad():
            ref = module(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        row = {"size": list(size)}
        for name, r, o in zip(names, ref, got, strict=True):
            r = r.float().numpy()
            if o.shape != r.shape:
                raise ParityError(f"{path}: output {name} has shape {o.shape} for input "
                                  f"{tuple(x.shape)}, PyTorch's is {r.shape}")
            row[f"{name}_max_abs_diff"] = float(np.abs(o - r).max())
            if name == "logits":
                row["argmax_agreement"] = float((o.argmax(1) == r.argmax(1)).mean())
        rows.append(row)
        _check_row(path, row, min_agreement, max_image_diff)
    return rows


def _check_row(path, row: dict, min_agreement: float | None, max_image_diff: float | None) -> None:
    h, w = row["size"]
    if min_agreement is not None and row.get("argmax_agreement", 1.0) < min_agreement:
        raise ParityError(f"{path}: at {h}x{w} (rows x cols) onnxruntime's argmax agrees with "
                          f"PyTorch's on {100 * row['argmax_agreement']:.3f}% of pixels (< "
                          f"{100 * min_agreement:.1f}%; max abs logit difference "
                          f"{row['logits_max_abs_diff']:.3g}): the exported graph is wrong")
    for key in ("translated_max_abs_diff", "day_max_abs_diff"):
        if max_image_diff is not None and row.get(key, 0.0) > max_image_diff:
            raise ParityError(f"{path}: at {h}x{w} (rows x cols) the {key.split('_')[0]} output "
                              f"differs from PyTorch's by {row[key]:.3g} (> {max_image_diff}): the "
                              "exported graph is wrong")
