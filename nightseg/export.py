"""Export trained models to ONNX, check them against PyTorch, and run them without PyTorch's nets.

    python -m nightseg.export --run RUN_DIR --out exported/               # every graph of a run
    python -m nightseg.export --segmenter KEY --translator KEY --cache-dir .cache/nightseg --out exported/
    python -m nightseg.export --segmenter model.ckpt --out exported/ --int8 data=synthetic

Graphs (opset 18, dynamic batch, height and width; inputs images (N, 3, H, W) in [0, 1]):
``segmenter.onnx`` (logits), ``night2day.onnx`` and ``day2night.onnx`` (the translator's
generators, images in [0, 1]) and ``night2day_pipeline.onnx`` (translate night->day, clamp,
segment: outputs ``logits`` and ``day``, the image the segmenter saw), as
nightseg.inference.pipeline.SegmentationPipeline runs them. Every exported graph is run by onnxruntime at
several input sizes, including ones whose 1/8 feature map the pyramid pooling bins do not divide,
against the PyTorch module: the max abs difference and, for logits, the share of pixels whose
argmax agrees, which must be >= 99.9% (else :class:`ParityError`). ``--int8`` adds static int8
(QDQ, per-channel) copies calibrated on training images of the dataset (never test frames).
:class:`OnnxPipeline` runs an exported segmenter or pipeline graph as a drop-in for the PyTorch
pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nightseg.core.errors import ConfigError, DataError
from nightseg.core.files import atomic_path, write_json
from nightseg.inference.loading import load_segmenter, load_translator  # one loader, with its checks
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.models.cyclegan import Translator

log = logging.getLogger(__name__)

OPSET = 18
# Parity sizes (rows, cols): the bench's 480x272 frame (a 34x60 map at 1/8, which bins 4 and 8 do
# not divide), the paper's 270 rows (padded to 272), portrait, 640x360 (45x80), and the two
# training sizes in the project's configs (CamVid 180x240, synthetic 96x192).
PARITY_SIZES = ((272, 480), (270, 480), (480, 272), (360, 640), (180, 240), (96, 192))
MIN_ARGMAX_AGREEMENT = 0.999
# Generators: images in [0, 1]; fp32 onnxruntime and PyTorch differ by float rounding only.
MAX_IMAGE_DIFF = 1e-3
GRAPHS = ("segmenter", "night2day", "day2night", "night2day_pipeline")


class ParityError(RuntimeError):
    """An exported graph computes something else than its PyTorch module; the message names the
    file, the input size and the figures."""


# ---- naming the models -----------------------------------------------------------------------
def export_checkpoints(run_dir: str | os.PathLike | None = None, segmenter: str | None = None,
                       translator: str | None = None, cache_dir: str | os.PathLike | None = None
                       ) -> dict[str, Path]:
    """``{"segmenter": path, "translator": path}`` (either may be missing) from a run directory
    (its metrics.json's "checkpoints"), stage-cache keys (``<cache_dir>/stages/<kind>/<key>/
    model.ckpt``) or checkpoint paths; ``segmenter``/``translator`` override the run's.

    The export's model loader; nightseg.evaluate/predict resolve the same three kinds of names.
    Relative paths in metrics.json are relative to the directory the run was started from
    (hydra.runtime.cwd), else to the current directory.
    """
    found: dict[str, Path] = {}
    if run_dir is not None:
        run_dir = Path(run_dir)
        metrics = run_dir / "metrics.json"
        if not metrics.is_file():
            raise ConfigError(f"--run {run_dir}: no metrics.json there; name a finished run's "
                              "directory, or give --segmenter/--translator checkpoints or cache keys")
        listed = json.loads(metrics.read_text()).get("checkpoints", {})
        bases = [*_run_cwd(run_dir), Path.cwd()]
        for kind in ("segmenter", "translator"):
            if kind in listed:
                p = Path(listed[kind])
                found[kind] = next((b / p for b in bases if (b / p).is_file()), p)
    stages = Path(cache_dir or os.environ.get("NIGHTSEG_CACHE_DIR", ".cache/nightseg")) / "stages"
    for kind, name in (("segmenter", segmenter), ("translator", translator)):
        if name is None:
            continue
        p = Path(name)
        is_key = len(name) == 16 and all(c in "0123456789abcdef" for c in name) and not p.exists()
        found[kind] = stages / kind / name / "model.ckpt" if is_key else p
    for kind, p in found.items():
        if not p.is_file():
            raise ConfigError(f"{p}: the {kind} checkpoint does not exist; check --{kind} (a "
                              f"checkpoint path or a cache key under --cache-dir {stages.parent}) "
                              "or --run")
    if not found:
        raise ConfigError("nothing to export: give --run RUN_DIR, or --segmenter and/or --translator")
    return found


def _run_cwd(run_dir: Path) -> list[Path]:
    hydra = run_dir / ".hydra" / "hydra.yaml"
    if hydra.is_file():
        from omegaconf import OmegaConf

        cwd = OmegaConf.load(hydra).hydra.runtime.get("cwd")
        if cwd:
            return [Path(cwd)]
    return []


# ---- the graphs ------------------------------------------------------------------------------
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


# ---- onnxruntime -----------------------------------------------------------------------------
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


def runtime_graphs(segmenter_path: Path, segmenter: nn.Module, translator_path: Path | None = None,
                   translator: Translator | None = None, cache_dir: str | os.PathLike = ".cache/nightseg"
                   ) -> dict[str, Path]:
    """``{"segmenter": .onnx, "night2day": .onnx (with a translator)}`` for ``runtime=onnxruntime``
    of evaluate and predict: exported once per checkpoint content into the stage cache (kind
    ``onnx``, keyed by the checkpoints' sha256 and the opset; locked, published whole, with
    checksums like every stage) and parity-checked at :data:`PARITY_SIZES` on export."""
    from nightseg.infra.cache import StageCache, file_sha256

    spec = {"opset": OPSET, "segmenter": file_sha256(segmenter_path),
            "translator": file_sha256(translator_path) if translator_path is not None else None}
    graphs = ["segmenter"] + (["night2day"] if translator is not None else [])

    def build(stage, out: Path) -> None:
        out.mkdir(parents=True)
        sources = {"segmenter": segmenter_path, **({"translator": translator_path} if translator else {})}
        export_models(out, segmenter, translator, graphs, sources=sources)

    path, status = StageCache(Path(cache_dir) / "stages").obtain("onnx", spec, "graphs", build)
    log.info("onnx graphs %s: %s", path, status)
    return {g: path / f"{g}.onnx" for g in graphs}


# ---- parity ----------------------------------------------------------------------------------
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


# ---- int8 ------------------------------------------------------------------------------------
def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[np.ndarray], exclude_ops: Sequence[str] = ()) -> Path:
    """Static int8 quantization of an exported graph with onnxruntime.quantization: QDQ format,
    per-channel int8 weights, uint8 activations whose ranges come from ``calibration`` (float32
    (1, 3, H, W) arrays in [0, 1]: training images, never test frames). ``exclude_ops``: op types
    kept in float (e.g. ``Resize``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)

    class Reader(CalibrationDataReader):
        def __init__(self, images: Iterable[np.ndarray], name: str):
            self.it, self.name = iter(images), name

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {self.name: np.ascontiguousarray(x, dtype=np.float32)}

    import onnx

    model = onnx.load(str(fp32_path))
    ops = sorted({n.op_type for n in model.graph.node} - set(exclude_ops))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as work, atomic_path(out_path) as tmp:
        pre = Path(work) / "pre.onnx"  # shapes inferred, as onnxruntime recommends before quantizing
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        root = logging.getLogger()
        level = root.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # onnxruntime.quantization logs on the root logger, once per batch-norm weight that it
            # cannot quantize per channel (those stay per tensor): noise for the user.
            root.setLevel(logging.ERROR)
            try:
                quantize_static(str(pre), str(tmp), Reader(calibration, model.graph.input[0].name),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=ops)
            finally:
                root.setLevel(level)
    return out_path


def calibration_images(sample_sets: Sequence, count: int, resize: Sequence[int] | None = None
                       ) -> Iterator[np.ndarray]:
    """Up to ``count`` images, spread evenly over ``sample_sets`` and over each set's files, as
    float32 (1, 3, H, W) arrays in [0, 1], resized like the run's data (``data.resize``)."""
    from nightseg.data.datamodules import build_transform
    from nightseg.data.io import SegmentationDataset

    per_set = max(1, count // max(1, len(sample_sets)))
    for s in sample_sets:
        if len(s) == 0:
            continue
        ds = SegmentationDataset(s, build_transform(s.resize or resize), on_error="skip")
        for i in np.linspace(0, len(s) - 1, min(per_set, len(s))).round().astype(int):
            item = ds[int(i)]
            if item is not None:
                yield (item["image"].float() / 255.0)[None].numpy()


def data_catalog(overrides: Sequence[str] = ()):
    """The dataset catalog of the composed config (``data=...`` and other Hydra overrides), for
    calibration images."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from nightseg.bench import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return instantiate(cfg.data.catalog), cfg.data.get("resize")


def calibration_sets(catalog, graph: str) -> list:
    """Training images only: the domain each graph sees. The segmenter: the labelled day pool and
    the translator's night images (night frames are what it meets); night2day and the pipeline:
    the night images; day2night: the day images."""
    return {"segmenter": [catalog.train, catalog.translate_night],
            "night2day": [catalog.translate_night], "night2day_pipeline": [catalog.translate_night],
            "day2night": [catalog.translate_day]}[graph]


# ---- the whole export ------------------------------------------------------------------------
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


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give ROWSxCOLS, e.g. 272x480") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes below 8x8 are not checked")
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nightseg.export", description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="a run directory: its metrics.json names the checkpoints")
    p.add_argument("--segmenter", help="segmenter checkpoint (model.ckpt) or stage-cache key")
    p.add_argument("--translator", help="translator checkpoint (model.ckpt) or stage-cache key")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="paths.cache_dir of the runs, for cache keys (default: $NIGHTSEG_CACHE_DIR "
                        "or .cache/nightseg)")
    p.add_argument("--out", type=Path, required=True, help="directory for the .onnx files and export.json")
    p.add_argument("--graphs", nargs="+", choices=GRAPHS, default=list(GRAPHS), metavar="GRAPH",
                   help=f"any of: {' '.join(GRAPHS)} (default: every one the models make)")
    p.add_argument("--sizes", nargs="+", type=_size, default=list(PARITY_SIZES), metavar="HxW",
                   help="parity-check input sizes, rows x cols")
    p.add_argument("--int8", action="store_true",
                   help="also write <graph>.int8.onnx: static QDQ per-channel int8, calibrated on "
                        "training images of the data named by the overrides (data=...)")
    p.add_argument("--calibration-images", type=int, default=64,
                   help="training images used to calibrate the int8 graphs")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Hydra overrides naming the data for int8 calibration, e.g. data=camvid "
                        "paths.data_dir=/data (with --run: the run's own overrides come first)")
    args = p.parse_args(argv)
    if args.calibration_images < 1:
        p.error("--calibration-images must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    try:
        found = export_checkpoints(args.run, args.segmenter, args.translator, args.cache_dir)
        segmenter = load_segmenter(found["segmenter"], "--segmenter") if "segmenter" in found else None
        translator = load_translator(found["translator"], "--translator") if "translator" in found else None
        graphs = list(args.graphs)
        if args.run is not None and "night2day_pipeline" in graphs and json.loads(
                (args.run / "metrics.json").read_text()).get("strategy", "").startswith("augment"):
            # An augment run's translator made its training images; its segmenter was scored raw.
            graphs.remove("night2day_pipeline")
            print(f"{args.run} is an augment run: no night2day_pipeline graph (its segmenter is "
                  "scored on raw images); the translator's generators are exported alone", file=sys.stderr)
        calibration = None
        if args.int8:
            overrides = list(args.overrides)
            run_overrides = args.run / ".hydra" / "overrides.yaml" if args.run else None
            if run_overrides is not None and run_overrides.is_file():
                from omegaconf import OmegaConf

                overrides = [o for o in OmegaConf.load(run_overrides) if "=" in o and not
                             o.startswith(("hydra", "+hydra"))] + overrides
            catalog, resize = data_catalog(overrides)

            def calibration(graph: str, count: int):
                return calibration_images(calibration_sets(catalog, graph), count, resize)

        return export_models(args.out, segmenter, translator, graphs, args.sizes, args.int8,
                             calibration, args.calibration_images, found, threads=args.threads)
    except (ConfigError, DataError, ParityError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
