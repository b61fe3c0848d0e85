"""SegmentationPipeline: an optional night->day translator, then the segmenter, as one nn.Module.

The inference path of both strategies (Sun et al. 2019, Sec. III): night2day_inference puts the
CycleGAN's night->day generator in front of a day-trained segmenter, augment segments directly.
Evaluation (nightseg.inference.evaluation), the benchmark (nightseg.bench) and anything that predicts or
exports use this one module, so they all run exactly what the scores were measured on.
"""

from __future__ import annotations

import torch
from torch import nn


class SegmentationPipeline(nn.Module):
    """Images in [0, 1] -> segmenter logits (N, C, H, W), translated night->day first when a
    ``translator`` is given.

    ``translator``: a module with ``translate(images, "night2day")`` (nightseg.models.cyclegan's
    Translator), or None to segment the images as they are. ``gate``: an object whose
    ``decide(images)`` returns one boolean per image (nightseg.inference.gate.BrightnessGate); only the
    images it picks are translated, the others pass unchanged. ``segmenter``: any module from
    images in [0, 1] to logits (``nn.Identity()`` leaves the translator alone, as the benchmark's
    translator rows do).
    """

    def __init__(self, segmenter: nn.Module, translator: nn.Module | None = None, gate=None):
        super().__init__()
        if gate is not None and translator is None:
            raise ValueError("a gate decides which images to translate: give a translator too")
        self.segmenter = segmenter
        self.translator = translator
        self.gate = gate

    @property
    def condition(self) -> str:
        """What the inputs go through, as metrics.json's ``condition``: raw, night2day or
        night2day_gated."""
        if self.translator is None:
            return "raw"
        return "night2day" if self.gate is None else "night2day_gated"

    def translate(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the images the segmenter sees, in [0, 1]; which of them were translated, one boolean
        per image, or None without a translator)."""
        if self.translator is None:
            return image, None
        if self.gate is None:
            picked = torch.ones(image.shape[0], dtype=torch.bool, device=image.device)
            return self.translator.translate(image, "night2day").clamp(0, 1), picked
        picked = self.gate.decide(image)
        out = image.float().clone()
        if picked.any():
            out[picked] = self.translator.translate(image[picked], "night2day").float()
        return out.clamp(0, 1), picked

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.segmenter(self.translate(image)[0])
