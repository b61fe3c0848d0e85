"""Export trained models: every graph they make (nightseg.deploy.graphs), each checked against
PyTorch (nightseg.deploy.parity) and optionally quantized to int8 (nightseg.deploy.quantize), with
``export.json`` beside them; and the graphs of ``runtime=onnxruntime``, exported once per checkpoint
into the stage cache."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from nightseg.core.errors import ConfigError
from nightseg.core.files import write_json
from nightseg.deploy.graphs import (
    GRAPHS,
    OPSET,
    OUTPUTS,
    GeneratorGraph,
    PipelineGraph,
    SegmenterGraph,
    export_onnx,
)
from nightseg.deploy.parity import PARITY_SIZES, check_parity
from nightseg.deploy.quantize import quantize_int8
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.infra.cache import file_sha256, stage_cache
from nightseg.models.cyclegan import Translator

log = logging.getLogger(__name__)


def export_models(out_dir: str | os.PathLike, segmenter: nn.Module | None = None,
                  translator: Translator | None = None, graphs: Sequence[str] = GRAPHS,
                  sizes: Sequence[tuple[int, int]] = PARITY_SIZES, int8: bool = False,
                  calibration=None, calibration_count: int = 64, sources: dict | None = None,
                  class_names: Sequence[str] | None = None, threads: int | None = None) -> dict:
    """Export the graphs the given models make (of ``graphs``), check each against PyTorch, and
    with ``int8`` quantize each (``calibration(graph) -> iterable of images``). Writes
    ``export.json`` (files, parity figures, sources) and returns it."""
    out_dir = Path(out_dir)
    modules: dict[str, nn.Module] = {}
    if segmenter is not None and "segmenter" in graphs:
        modules["segmenter"] = SegmenterGraph(segmenter)
    if translator is not None:
        for direction in ("night2day", "day2night"):
            if direction in graphs:
                modules[direction] = GeneratorGraph(translator, direction)
        if segmenter is not None and "night2day_pipeline" in graphs:
            modules["night2day_pipeline"] = PipelineGraph(SegmentationPipeline(segmenter, translator))
    if not modules:
        raise ConfigError(f"--graphs {' '.join(graphs)}: none of them can be made from the given "
                          "models (the pipeline needs both a segmenter and a translator)")
    names = list(class_names or getattr(getattr(segmenter, "hparams", None), "class_names", []) or [])
    manifest = {"opset": OPSET, "sources": {k: str(v) for k, v in (sources or {}).items()},
                "parity_sizes": [list(s) for s in sizes], "graphs": {}}
    for name, module in modules.items():
        meta = {"nightseg.graph": name,
                "nightseg.condition": {"segmenter": "raw", "night2day_pipeline": "night2day"}.get(name, ""),
                "nightseg.class_names": json.dumps(names),
                "nightseg.sources": json.dumps(manifest["sources"])}
        path = export_onnx(module, out_dir / f"{name}.onnx", OUTPUTS[name], meta)
        print(f"{path}: checking against PyTorch at {len(sizes)} sizes", file=sys.stderr)
        entry = {"file": path.name, "outputs": OUTPUTS[name],
                 "parity": check_parity(module, path, sizes, threads=threads)}
        if int8:
            if calibration is None:
                raise ConfigError("int8 export needs calibration images (training images of the data)")
            q = quantize_int8(path, out_dir / f"{name}.int8.onnx", calibration(name, calibration_count))
            # int8 changes some predictions by design: its parity is reported, its cost in mIoU is
            # what python -m nightseg.bench --int8-cost measures.
            entry["int8"] = {"file": q.name, "parity": check_parity(
                module, q, sizes, min_agreement=None, max_image_diff=None, threads=threads)}
        manifest["graphs"][name] = entry
        _print_parity(name, entry)
    write_json(out_dir / "export.json", manifest)
    return manifest


def _print_parity(name: str, entry: dict) -> None:
    def fmt(rows):
        out = []
        for r in rows:
            diffs = ", ".join(f"{k[:-13]} {v:.2g}" for k, v in r.items() if k.endswith("_max_abs_diff"))
            agree = f", argmax {100 * r['argmax_agreement']:.3f}%" if "argmax_agreement" in r else ""
            out.append(f"{r['size'][0]}x{r['size'][1]}: max abs diff {diffs}{agree}")
        return "; ".join(out)

    print(f"{entry['file']}: {fmt(entry['parity'])}")
    if "int8" in entry:
        print(f"{entry['int8']['file']} (int8, vs fp32 PyTorch): {fmt(entry['int8']['parity'])}")


def runtime_graphs(segmenter_path: Path, segmenter: nn.Module, translator_path: Path | None = None,
                   translator: Translator | None = None, cache_dir: str | os.PathLike = ".cache/nightseg"
                   ) -> dict[str, Path]:
    """``{"segmenter": .onnx, "night2day": .onnx (with a translator)}`` for ``runtime=onnxruntime``
    of evaluate and predict: exported once per checkpoint content into the stage cache (kind
    ``onnx``, keyed by the checkpoints' sha256 and the opset; locked, published whole, with
    checksums like every stage) and parity-checked at :data:`PARITY_SIZES` on export."""
    spec = {"opset": OPSET, "segmenter": file_sha256(segmenter_path),
            "translator": file_sha256(translator_path) if translator_path is not None else None}
    graphs = ["segmenter"] + (["night2day"] if translator is not None else [])

    def build(stage, out: Path) -> None:
        out.mkdir(parents=True)
        sources = {"segmenter": segmenter_path, **({"translator": translator_path} if translator else {})}
        export_models(out, segmenter, translator, graphs, sources=sources)

    path, status = stage_cache(cache_dir).obtain("onnx", spec, "graphs", build)
    log.info("onnx graphs %s: %s", path, status)
    return {g: path / f"{g}.onnx" for g in graphs}
