"""Trained models as a ready pipeline in the runtime asked for (``runtime`` of python -m
nightseg.evaluate and python -m nightseg.predict)."""

from __future__ import annotations

from pathlib import Path

from nightseg.core.errors import ConfigError
from nightseg.deploy.export import runtime_graphs
from nightseg.deploy.runtime import OnnxPipeline, OnnxTranslator
from nightseg.inference.loading import Loaded, Models, load_models
from nightseg.inference.pipeline import SegmentationPipeline

RUNTIMES = ("torch", "onnxruntime")


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime}: use {' or '.join(RUNTIMES)}")


def load_pipeline(models: Models, runtime: str = "torch",
                  cache_dir: str | Path = ".cache/nightseg") -> Loaded:
    """The models loaded by nightseg.inference.loading.load_models, run by ``runtime``.

    ``runtime=torch`` runs the checkpoints' own modules (on the device and precision the caller
    chooses). ``runtime=onnxruntime`` runs the same checkpoints exported to ONNX (segmenter and
    night->day generator, exported and parity-checked once per checkpoint into ``cache_dir``'s
    stage cache, nightseg.deploy.export.runtime_graphs) in onnxruntime, fp32, in the places of the
    torch modules: everything downstream only calls ``segmenter(images)`` and
    ``translator.translate(images, "night2day")``, the gate included.
    """
    check_runtime(runtime)
    loaded = load_models(models)
    if runtime == "torch":
        return loaded
    torch_pipe = loaded.pipeline
    graphs = runtime_graphs(models.segmenter, torch_pipe.segmenter, models.translator,
                            torch_pipe.translator, cache_dir)
    translator = None
    if torch_pipe.translator is not None:
        translator = OnnxTranslator(graphs["night2day"], "night2day")
    pipeline = SegmentationPipeline(OnnxPipeline(graphs["segmenter"]), translator, torch_pipe.gate)
    return Loaded(pipeline.eval(), loaded.classes)
