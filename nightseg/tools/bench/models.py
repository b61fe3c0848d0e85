"""The benchmark's models and measurements: the project's real modules (untrained weights; speed
does not depend on them) built from conf/, the fp32 NCHW reference beside the auto setting with
identical weights, inference rows (MACs, parameters, latency, fraction of the conv peak, optional
onnxruntime rows) and training-step rows."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from nightseg.core.paths import CONF_DIR
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.tools.bench.onnx_rows import bench_onnx
from nightseg.tools.bench.timing import count_macs, n_params, time_calls, time_training_steps

MODELS = ("segmenter", "translator_full", "translator_light", "pipeline_full", "pipeline_light")
TRANSLATOR_CONFIGS = {"full": "cyclegan", "light": "light"}  # conf/model/translator/<name>.yaml
# Training rows: name -> module builder key (segmenter or a translator config name).
TRAINING = {"segmenter": "segmenter", "translator_small": "cyclegan_small",
            "translator_paper": "cyclegan"}
# The configs' training batch sizes: data.batch_size (segmenter), data.translate_batch_size (CycleGAN).
TRAIN_BATCH = {"segmenter": 8, "translator_small": 1, "translator_paper": 1}
NUM_CLASSES = 19


# ---- building the real modules ---------------------------------------------------------------
def _model_config(group: str, option: str):
    if not (CONF_DIR / "config.yaml").is_file():
        raise FileNotFoundError(f"nightseg.bench needs the config directory {CONF_DIR}; run it from "
                                f"a source checkout (pip install -e .)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"model/{group}={option}"])
    return cfg.model[group]


def _layout(channels_last: bool | None) -> dict:
    """None: the model config's own layout (the auto setting); a bool overrides it."""
    return {} if channels_last is None else {"channels_last": channels_last}


def build_segmenter(channels_last: bool | None) -> pl.LightningModule:
    cfg = _model_config("segmenter", "erf_pspnet")
    return instantiate(cfg, num_classes=NUM_CLASSES, **_layout(channels_last))


def build_translator(config: str, channels_last: bool | None) -> pl.LightningModule:
    """CycleGANModule from conf/model/translator/<config>.yaml (both generators, both critics)."""
    return instantiate(_model_config("translator", config), _recursive_=False, _convert_="all",
                       **_layout(channels_last))


def build_model(name: str, channels_last: bool | None, seed: int = 0) -> nn.Module:
    """One of MODELS in eval mode; the same seed gives the same weights in both settings.
    ``channels_last=None``: each net in its configured layout."""
    if name not in MODELS:
        raise ValueError(f"--models got {name!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(seed)
    kind, _, variant = name.partition("_")
    if kind == "segmenter":
        model: nn.Module = build_segmenter(channels_last)
    else:
        # The translator rows: the pipeline with an identity segmenter (night->day, clamped).
        translator = build_translator(TRANSLATOR_CONFIGS[variant], channels_last)
        segmenter = nn.Identity() if kind == "translator" else build_segmenter(channels_last)
        model = SegmentationPipeline(segmenter, translator)
    return model.eval()


def compile_for_inference(module: nn.Module) -> Callable:
    """torch.compile with freezing: inductor folds batch norms into convs and pre-packs the weights
    for oneDNN (inference only: the weights become constants of the compiled graph)."""
    return torch.compile(module.requires_grad_(False), options={"freezing": True})


def model_pair(name: str, device: torch.device, compile_optimized: bool = False
               ) -> tuple[nn.Module, Callable]:
    """(reference fp32 NCHW module, auto-setting callable: each net in its configured layout,
    compiled with ``compile_optimized``) with identical weights."""
    reference = build_model(name, channels_last=False).to(device)
    optimized = build_model(name, channels_last=None)
    optimized.load_state_dict(reference.state_dict())
    optimized = optimized.to(device)
    return reference, (compile_for_inference(optimized) if compile_optimized else optimized)


def inference_params(model: nn.Module) -> int:
    """Parameters used at inference: the night2day generator only, not the whole CycleGAN."""
    if isinstance(model, SegmentationPipeline):
        return n_params(model.translator.night2day) + n_params(model.segmenter)
    return n_params(model)


# ---- measuring -------------------------------------------------------------------------------
def bench_model(name: str, device: torch.device, hw: tuple[int, int], batch_size: int, runs: int,
                warmup: int, peak_gflops: float, compile_optimized: bool = False,
                onnx: bool = False) -> dict:
    reference, optimized = model_pair(name, device)
    image = torch.rand(batch_size, 3, *hw, device=device)
    macs = count_macs(reference, image[:1])
    ref_s = time_calls(reference, (image,), device, False, runs, warmup)
    opt_s = time_calls(optimized, (image,), device, True, runs, warmup)
    achieved = 2 * macs * batch_size / opt_s / 1e9
    row = {"gmacs": macs / 1e9, "params_m": inference_params(reference) / 1e6,
           "reference_ms": ref_s * 1e3, "auto_ms": opt_s * 1e3, "speedup": ref_s / opt_s,
           "fps": batch_size / opt_s, "peak_fraction": achieved / peak_gflops}
    if compile_optimized:  # the auto setting compiled, beside it in the same run
        compiled_s = time_calls(compile_for_inference(optimized), (image,), device, True, runs, warmup)
        row.update(compiled_ms=compiled_s * 1e3, compiled_speedup=ref_s / compiled_s)
    if onnx:
        with tempfile.TemporaryDirectory() as tmp:
            row["onnxruntime"] = bench_onnx(reference.cpu(), image.cpu(), macs, peak_gflops, runs, warmup,
                                            torch.get_num_threads(), Path(tmp))
    return row


def training_sample(name: str, hw: tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if name == "segmenter":
        return {"image": torch.rand(3, *hw, generator=g),
                "mask": torch.randint(0, NUM_CLASSES, hw, generator=g)}
    return {"day": torch.rand(3, *hw, generator=g), "night": torch.rand(3, *hw, generator=g)}


def bench_training(name: str, device: torch.device, hw: tuple[int, int], batch_size: int,
                   runs: int, warmup: int, compile_optimized: bool = False) -> dict:
    """fp32 NCHW eager against the auto setting, and with ``compile_optimized`` the auto setting
    with model.compile=true (every net compiled for the fit; the first warm-up steps compile)."""
    key = TRAINING[name]

    def build(optimized: bool, compiled: bool = False) -> pl.LightningModule:
        torch.manual_seed(0)
        layout = None if optimized else False  # the auto setting: the config's layout
        module = build_segmenter(layout) if key == "segmenter" else build_translator(key, layout)
        module.compile_training = compiled
        return module

    sample = training_sample(name, hw)
    ref_s = time_training_steps(build, sample, device, False, batch_size, runs, warmup)
    opt_s = time_training_steps(build, sample, device, True, batch_size, runs, warmup)
    row = {"reference_ms": ref_s * 1e3, "auto_ms": opt_s * 1e3, "speedup": ref_s / opt_s}
    if compile_optimized:
        compiled_s = time_training_steps(lambda optimized: build(optimized, compiled=True), sample,
                                         device, True, batch_size, runs, warmup)
        row.update(compiled_ms=compiled_s * 1e3, compiled_speedup=ref_s / compiled_s)
    return row
