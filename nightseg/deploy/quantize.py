"""Static int8 (QDQ, per-channel) copies of exported graphs, calibrated on training images of the
dataset (never test frames)."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from nightseg.core.files import atomic_path
from nightseg.core.paths import CONF_DIR


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
