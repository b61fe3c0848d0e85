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
import sys
from pathlib import Path

from nightseg.core.errors import ConfigError, DataError
from nightseg.deploy.export import export_models
from nightseg.deploy.graphs import GRAPHS
from nightseg.deploy.parity import PARITY_SIZES, ParityError
from nightseg.deploy.quantize import calibration_images, calibration_sets, data_catalog
from nightseg.inference.loading import (  # one loader, with its checks
    checkpoints_from_options,
    load_segmenter,
    load_translator,
)


# ---- naming the models -----------------------------------------------------------------------
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
        found = checkpoints_from_options(args.run, args.segmenter, args.translator, args.cache_dir)
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
