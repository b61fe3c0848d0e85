"""onnxruntime: sessions, and exported graphs run as drop-ins for the PyTorch modules
(:class:`OnnxPipeline` for a segmenter or pipeline graph, :class:`OnnxTranslator` for a generator)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nightseg.core.errors import ConfigError


def session(path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
    """An onnxruntime session with every graph optimization and ``threads`` intra-op threads
    (default: every core this process may use)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or _cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: the quantized graphs' shape-inference notes are noise
    return ort.InferenceSession(str(path), opts, providers=list(providers or ["CPUExecutionProvider"]))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _OnnxGraph(nn.Module):
    """An exported graph in an onnxruntime session, images (N, 3, H, W) in [0, 1] in. No
    parameters: ``.to()``, ``.eval()`` and autocast leave it as it is; inputs are computed in
    float32 on the CPU (or the session's providers, e.g. ``["CUDAExecutionProvider"]``)."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such ONNX file; export one with python -m nightseg.export")
        self.session = session(self.path, providers, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of the graph for ``images``, on the images' device."""
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        out = self.session.run(None, {self.input_name: x})
        return {name: torch.from_numpy(v).to(images.device)
                for name, v in zip(self.output_names, out, strict=True)}


class OnnxPipeline(_OnnxGraph):
    """An exported segmenter or night2day pipeline graph run by onnxruntime, usable where the
    PyTorch SegmentationPipeline is: ``forward(images)`` with images (N, 3, H, W) in [0, 1] ->
    logits (N, C, H, W) as a float32 tensor on the images' device, and ``condition`` "raw" or
    "night2day". :meth:`run` also returns the translated image (pipeline graphs).
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None):
        super().__init__(path, providers, threads)
        if "logits" not in self.output_names:
            raise ConfigError(f"{self.path}: a graph without logits ({', '.join(self.output_names)}); "
                              "give a segmenter.onnx or night2day_pipeline.onnx")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.condition = meta.get("nightseg.condition", "raw")
        self.class_names = json.loads(meta.get("nightseg.class_names", "[]")) or None
        self.gate, self.translator = None, None  # as SegmentationPipeline's attributes

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, the night->day image the segmenter saw, or None for a segmenter graph)."""
        out = self._outputs(images)
        return out["logits"], out.get("day")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]


class OnnxTranslator(_OnnxGraph):
    """An exported generator graph (``night2day.onnx`` or ``day2night.onnx``) run by onnxruntime
    where a translator is expected: ``translate(images, direction)`` -> images in [0, 1], so
    SegmentationPipeline (and its gate) runs it as it runs the PyTorch translator."""

    def __init__(self, path: str | os.PathLike, direction: str, providers: Sequence[str] | None = None,
                 threads: int | None = None):
        super().__init__(path, providers, threads)
        self.direction = direction

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        if direction != self.direction:
            raise ValueError(f"{self.path} translates {self.direction}, not {direction}")
        return self._outputs(images)["translated"]
