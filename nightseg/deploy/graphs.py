"""The ONNX graphs of the trained models and their export (opset 18, dynamic batch, height and
width; inputs images (N, 3, H, W) in [0, 1]): ``segmenter`` (logits), ``night2day`` and ``day2night``
(the translator's generators, images in [0, 1]) and ``night2day_pipeline`` (translate night->day,
clamp, segment: outputs ``logits`` and ``day``, the image the segmenter saw), as
nightseg.inference.pipeline.SegmentationPipeline runs them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from nightseg.core.files import atomic_path
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.models.cyclegan import Translator

OPSET = 18
GRAPHS = ("segmenter", "night2day", "day2night", "night2day_pipeline")


class GeneratorGraph(nn.Module):
    """One generator of a translator, images in [0, 1] -> images in [0, 1] (Translator.translate)."""

    def __init__(self, translator: Translator, direction: str):
        super().__init__()
        self.translator, self.direction = translator, direction

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.translator.translate(images, self.direction).clamp(0, 1)


class PipelineGraph(nn.Module):
    """SegmentationPipeline with a translator and no gate: (logits, the day image it segmented)."""

    def __init__(self, pipeline: SegmentationPipeline):
        super().__init__()
        if pipeline.translator is None or pipeline.gate is not None:
            raise ValueError("PipelineGraph exports a night2day pipeline: a translator, no gate")
        self.pipeline = pipeline

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        day, _ = self.pipeline.translate(images)
        return self.pipeline.segmenter(day), day


class SegmenterGraph(nn.Module):
    def __init__(self, segmenter: nn.Module):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmenter(images)


OUTPUTS = {"segmenter": ["logits"], "night2day": ["translated"], "day2night": ["translated"],
           "night2day_pipeline": ["logits", "day"]}


def export_onnx(module: nn.Module, path: str | os.PathLike, output_names: Sequence[str],
                metadata: dict[str, str] | None = None, opset: int = OPSET,
                example_size: tuple[int, int] = (272, 480)) -> Path:
    """``module`` (images (N, 3, H, W) -> outputs) as an ONNX file with a dynamic batch, height
    and width, written atomically; ``metadata`` goes into the model's metadata_props."""
    import onnx
    from torch.export import Dim

    path = Path(path)
    module = module.eval()
    example = torch.rand(2, 3, *example_size)
    dyn = {"images": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        program = torch.onnx.export(module, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=["images"], output_names=list(output_names),
                                    dynamic_shapes=dyn, optimize=True, verbose=False)
    proto = program.model_proto
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=str(v))
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path
