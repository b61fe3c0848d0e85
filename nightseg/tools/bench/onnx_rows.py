"""onnxruntime rows of ``nightseg.bench``: fp32 and static int8 graphs beside the PyTorch rows, and
what int8 costs in mIoU on a dataset's test sets.

Speed rows export the bench's own modules (untrained weights, as for the PyTorch rows: speed does
not depend on them) with nightseg.deploy, quantize them with calibration images drawn like the
parity inputs (smooth random images: the ranges, not the speed, depend on them), and time
``session.run`` on the same input as the PyTorch rows. The mIoU rows use trained models and
calibrate on the dataset's training images (nightseg.quantize.calibration_sets), never test frames.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nightseg.deploy import export, graphs, parity, quantize, runtime
from nightseg.inference.pipeline import SegmentationPipeline

SPEED_CALIBRATION_IMAGES = 16


def graph_for(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The export wrapper of a bench model: a pipeline with a translator and a segmenter, a
    translator alone (identity segmenter), or a segmenter."""
    if isinstance(model, SegmentationPipeline):
        if isinstance(model.segmenter, nn.Identity):
            return graphs.GeneratorGraph(model.translator, "night2day"), ["translated"]
        return graphs.PipelineGraph(model), ["logits", "day"]
    return graphs.SegmenterGraph(model), ["logits"]


def time_session(sess, image: np.ndarray, runs: int, warmup: int) -> float:
    """Median seconds per ``sess.run`` after ``warmup`` untimed runs."""
    name = sess.get_inputs()[0].name
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        sess.run(None, {name: image})
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_onnx(model: nn.Module, image: torch.Tensor, macs: float, peak_gflops: float, runs: int,
               warmup: int, threads: int, work_dir: Path) -> dict:
    """{"fp32": {...}, "int8": {...}}: ms, fps and fraction of the conv peak of each graph, plus
    the max abs difference of int8's first output to fp32's on the timed input."""
    module, outputs = graph_for(model)
    batch, _, h, w = image.shape
    fp32 = graphs.export_onnx(module, work_dir / "fp32.onnx", outputs, example_size=(h, w))
    calibration = (parity.parity_images(1, (h, w), seed=1 + i).numpy()
                   for i in range(SPEED_CALIBRATION_IMAGES))
    int8 = quantize.quantize_int8(fp32, work_dir / "int8.onnx", calibration)
    x = np.ascontiguousarray(image.float().cpu().numpy())
    result, first = {}, {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        sess = runtime.session(path, threads=threads)
        s = time_session(sess, x, runs, warmup)
        first[name] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        result[name] = {"ms": s * 1e3, "fps": batch / s,
                        "peak_fraction": 2 * macs * batch / s / 1e9 / peak_gflops}
    if outputs[0] == "logits":
        result["int8"]["argmax_agreement_vs_fp32"] = float(
            (first["int8"].argmax(1) == first["fp32"].argmax(1)).mean())
    return result


# ---- mIoU cost of int8 -------------------------------------------------------------------------
def score(run, sample_set, num_classes: int, class_names: Sequence[str], ignore_index: int,
          resize, batch_size: int = 4) -> float:
    """mIoU (percent) of ``run(images) -> logits`` on one test set, as nightseg.inference.evaluation scores
    it (SetScores: the set's own class space)."""
    from nightseg.core.metrics import SetScores
    from nightseg.data.datamodules import build_transform, make_loader
    from nightseg.data.io import SegmentationDataset, batch_to_float

    ds = SegmentationDataset(sample_set, build_transform(sample_set.resize or resize), num_classes)
    scores = SetScores(sample_set, num_classes, class_names, ignore_index)
    with torch.inference_mode():
        for batch in make_loader(ds, batch_size, 0, shuffle=False):
            batch = batch_to_float(batch)
            scores.update(batch["image"], run(batch["image"]), batch)
    return scores.compute()["miou"]


def int8_cost(segmenter, translator, catalog, resize, calibration_count: int = 64,
              threads: int | None = None, work_dir: Path | None = None) -> list[dict]:
    """Per test set: mIoU of PyTorch fp32, onnxruntime fp32 and onnxruntime int8 (calibrated on
    ``calibration_count`` training images), for the segmenter alone (condition raw) or behind the
    translator (night2day)."""
    graph = "night2day_pipeline" if translator is not None else "segmenter"
    pipeline = SegmentationPipeline(segmenter, translator).eval()
    hp = segmenter.hparams
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        export.export_models(tmp, segmenter, translator, graphs=[graph], sizes=[tuple(resize or (96, 192))],
                             int8=True, calibration=lambda g, n: quantize.calibration_images(
                                 quantize.calibration_sets(catalog, g), n, resize),
                             calibration_count=calibration_count, threads=threads)
        runs = {"pytorch_fp32": pipeline,
                "onnxruntime_fp32": runtime.OnnxPipeline(Path(tmp) / f"{graph}.onnx", threads=threads),
                "onnxruntime_int8": runtime.OnnxPipeline(Path(tmp) / f"{graph}.int8.onnx", threads=threads)}
        rows = []
        for s in catalog.test:
            row = {"test_set": s.name, "condition": pipeline.condition}
            for name, run in runs.items():
                row[f"miou_{name}"] = score(run, s, hp.num_classes, hp.class_names, hp.ignore_index, resize)
            row["int8_cost"] = row["miou_onnxruntime_fp32"] - row["miou_onnxruntime_int8"]
            rows.append(row)
    return rows
