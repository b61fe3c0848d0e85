"""Speed benchmark: MACs, parameters, latency and training-step time, fp32 reference vs auto.

    python -m nightseg.bench                      # 480x272, batch 1, all models, training steps
    python -m nightseg.bench --no-training --models segmenter pipeline_light --json out.json
    python -m nightseg.bench --onnx --no-training --models segmenter pipeline_light   # + onnxruntime
    python -m nightseg.bench --int8-cost --segmenter KEY --cache-dir DIR data=synthetic
    python -m nightseg.bench --data               # the loader: files vs prepared arrays, per worker

Models (all the project's real modules with untrained weights; speed does not depend on them):
``segmenter`` is SegmentationModule (ERF-PSPNet, 19 classes, its own normalisation);
``pipeline_*`` is SegmentationPipeline (nightseg/inference/pipeline.py), what evaluation runs for the
strategy night2day_inference: translate night->day, clamp to [0, 1], segment; ``translator_full``
is its translator alone (an identity segmenter) with the paper's generator
(conf/model/translator/cyclegan.yaml: ResnetGenerator ngf=64, 9 blocks), ``translator_light``
the same with conf/model/translator/light.yaml (LightGenerator).
The reference path is fp32, eager, NCHW (``channels_last=False``); the auto path is what a run
uses on this machine: the precision ``trainer.precision=auto`` resolves to (bf16 autocast on
AVX-512 bf16 / AMX CPUs and Ampere+ GPUs, fp16 on older GPUs, fp32 on AVX2 CPUs; see
nightseg.infra.hardware) and each net's configured memory layout (channels_last for ERF-PSPNet and
LightGenerator, NCHW for the InstanceNorm CycleGAN nets) and, with ``--compile``, torch.compile.
With ``--onnx`` each model is also exported (nightseg.deploy) and run by onnxruntime in fp32 and
static int8 (nightseg.tools.bench.onnx_rows); ``--int8-cost`` scores a trained segmenter (behind a translator
with ``--translator``) on a dataset's test sets in PyTorch, onnxruntime fp32 and int8, instead of
the speed rows. Training steps time the modules' own ``training_step`` under a Lightning Trainer,
fp32 NCHW vs the auto setting: the segmenter, the default config's CycleGAN (cyclegan_small) and
the paper's (cyclegan). ``--data`` times the training loader instead: samples/s per worker from
1280x720 JPEG files and from prepared arrays (nightseg.tools.bench.data_rows).
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` runs the whole bench
as an AVX2-only CPU would (no native bf16).
Results: experiments/bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from nightseg.core.errors import ConfigError, DataError
from nightseg.core.files import write_json
from nightseg.infra.hardware import device_summary
from nightseg.models.speed import check_compiler
from nightseg.tools.bench.models import MODELS, TRAIN_BATCH, TRAINING, bench_model, bench_training
from nightseg.tools.bench.timing import (
    conv_peak_gflops,
    training_precision,
)


# ---- command line ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nightseg.bench", description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=272)
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, metavar="MODEL",
                   help=f"any of: {' '.join(MODELS)}")
    p.add_argument("--runs", type=int, default=20, help="timed inference calls per setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--train-runs", type=int, default=5, help="timed training steps per setting")
    p.add_argument("--train-warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--train-batch-size", type=int, default=None,
                   help="training batch for every module (default: the configs', 8 for the "
                        "segmenter and 1 for CycleGAN)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: all cores this process may use)")
    p.add_argument("--compile", action="store_true",
                   help="also time the auto inference path torch.compile'd (inductor, freezing; "
                        "5-20 s to compile each model on 2 CPU cores) and the auto training steps "
                        "with model.compile=true (a minute or more per module on 2 CPU cores)")
    p.add_argument("--no-training", action="store_true", help="skip the training-step timings")
    p.add_argument("--no-inference", action="store_true", help="skip the inference timings")
    p.add_argument("--onnx", action="store_true",
                   help="also export each model to ONNX and time it in onnxruntime, fp32 and "
                        "static int8 (QDQ, per-channel), with --threads intra-op threads")
    q = p.add_argument_group("int8 cost in mIoU (--int8-cost: instead of the speed rows)")
    q.add_argument("--int8-cost", action="store_true",
                   help="score a trained segmenter (behind --translator: the night2day pipeline) on "
                        "the test sets of the data named by the overrides, in PyTorch fp32, "
                        "onnxruntime fp32 and onnxruntime int8 calibrated on training images")
    q.add_argument("--run", type=Path, help="a run directory naming the checkpoints (metrics.json)")
    q.add_argument("--segmenter", help="segmenter checkpoint or stage-cache key")
    q.add_argument("--translator", help="translator checkpoint or stage-cache key")
    q.add_argument("--cache-dir", type=Path, help="paths.cache_dir holding the cache keys")
    q.add_argument("--calibration-images", type=int, default=64)
    d = p.add_argument_group("data loading (--data: instead of the speed rows)")
    d.add_argument("--data", action="store_true",
                   help="training samples/s per loader worker: 1280x720 JPEG + PNG label files "
                        "resized to 270x480 as before, vs prepared arrays with a warm and a cold "
                        "page cache; and the prepare stage's build time and size")
    d.add_argument("--data-root", type=Path, default=None,
                   help="a BDD10K tree to read frames from (default: synthetic 1280x720 JPEG frames)")
    d.add_argument("--data-images", type=int, default=48, help="frames to time")
    d.add_argument("--data-resize", type=int, nargs=2, default=[270, 480], metavar=("ROWS", "COLS"))
    d.add_argument("--data-crop", type=int, nargs=2, default=[256, 256], metavar=("ROWS", "COLS"))
    d.add_argument("--data-workers", type=int, default=1)
    d.add_argument("--data-epochs", type=int, default=3)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="--int8-cost: Hydra overrides naming the data, e.g. data=camvid")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the results here")
    args = p.parse_args(argv)
    for key in ("height", "width", "batch_size", "runs", "train_runs"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    for key in ("warmup", "train_warmup"):
        if getattr(args, key) < 0:
            p.error(f"--{key.replace('_', '-')} must be >= 0")
    if args.train_batch_size is not None and args.train_batch_size < 2 and not args.no_training:
        p.error("--train-batch-size must be >= 2: the segmenter's batch norm (pyramid pooling "
                "at 1x1) needs two images per training batch")
    if args.data:
        batch = args.batch_size if args.batch_size > 1 else 8
        if args.data_images < 2 * batch:  # the first batch is the worker's start-up, not timed
            p.error(f"--data-images must be at least twice the batch size ({2 * batch})")
        if args.data_epochs < 1 or args.data_workers < 0:
            p.error("--data-epochs must be >= 1 and --data-workers >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu")
    if args.compile:
        try:
            check_compiler(args.device == "cuda", key="--compile", off="the bench without --compile")
        except ConfigError as e:
            p.error(str(e))
    return args


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def warn_if_busy() -> None:
    """Timings assume the cores are ours; say so when other processes compete for them (a shared
    2-core machine makes every parallel region wait for a descheduled thread)."""
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: 1-minute load average {os.getloadavg()[0]:.1f}; other processes "
              f"are using the CPU, so timings will be slower and noisier than on an idle machine",
              file=sys.stderr)


def run_int8_cost(args: argparse.Namespace) -> dict:
    from nightseg.deploy.quantize import data_catalog
    from nightseg.inference.loading import checkpoints_from_options, load_segmenter, load_translator
    from nightseg.tools.bench.onnx_rows import int8_cost

    found = checkpoints_from_options(args.run, args.segmenter, args.translator, args.cache_dir)
    if "segmenter" not in found:
        raise SystemExit("error: --int8-cost needs a segmenter (--segmenter or --run)")
    segmenter = load_segmenter(found["segmenter"], "--segmenter")
    translator = load_translator(found["translator"], "--translator") if args.translator else None
    catalog, resize = data_catalog(args.overrides)
    rows = int8_cost(segmenter, translator, catalog, resize, args.calibration_images,
                     args.threads or default_threads())
    return {"int8_cost": {"data": catalog.name, "checkpoints": {k: str(v) for k, v in found.items()},
                          "calibration_images": args.calibration_images, "rows": rows}}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads or default_threads())
    if args.int8_cost:
        return run_int8_cost(args)
    if args.data:
        from nightseg.tools.bench.data_rows import bench_data

        return {"machine": device_summary("cpu"), "data": bench_data(
            args.data_root, args.data_images, args.data_resize, args.data_crop,
            args.batch_size if args.batch_size > 1 else 8, args.data_workers, args.data_epochs)}
    if device.type == "cuda":
        # The reference is true fp32: no TF32 tensor-core shortcut (autocast paths are unaffected).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    hw = (args.height, args.width)
    # Same run, same setting, so that peak_fraction compares like with like.
    peak = conv_peak_gflops(device, batch_size=args.batch_size)
    result = {"device": device.type, "machine": device_summary(device.type),
              "auto_precision": training_precision(device, optimized=True),
              "resolution": [args.height, args.width],
              "conv_peak_gflops": peak, "models": {}, "training": {}}
    for name in [] if args.no_inference else args.models:
        result["models"][name] = bench_model(name, device, hw, args.batch_size, args.runs,
                                             args.warmup, peak, args.compile, args.onnx)
    if not args.no_training:
        for name in TRAINING:
            batch = args.train_batch_size or TRAIN_BATCH[name]
            result["training"][name] = bench_training(name, device, hw, batch, args.train_runs,
                                                      args.train_warmup, args.compile)
    return result


def print_bench_table(result: dict, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the whole table
        console = Console(width=120)
    if "int8_cost" in result:
        r = result["int8_cost"]
        t = Table(title=f"int8 cost on {r['data']} (calibrated on {r['calibration_images']} training images)")
        for col in ("test set", "condition", "PyTorch fp32", "ORT fp32", "ORT int8", "int8 cost"):
            t.add_column(col, justify="left" if col in ("test set", "condition") else "right")
        for row in r["rows"]:
            t.add_row(row["test_set"], row["condition"], f"{row['miou_pytorch_fp32']:.2f}",
                      f"{row['miou_onnxruntime_fp32']:.2f}", f"{row['miou_onnxruntime_int8']:.2f}",
                      f"{row['int8_cost']:+.2f}")
        console.print(t)
        return
    if "data" in result:
        r = result["data"]
        (sh, sw), (h, w) = r["source_size"], r["resize"]
        t = Table(title=f"Training loader, {result['machine']}: {r['images']} {r['source']} {sw}x{sh} frames "
                        f"({r['mean_file_kb']:.0f} KB) -> {w}x{h}, crop {r['crop']}, flip, batch "
                        f"{r['batch_size']}, {r['workers']} worker(s)")
        for col in ("path", "samples/s", "vs files"):
            t.add_column(col, justify="left" if col == "path" else "right", no_wrap=True)
        base = r["samples_per_s"]["files"]
        for name, v in r["samples_per_s"].items():
            t.add_row(name, f"{v:.0f}", f"{v / base:.1f}x")
        console.print(t)
        kib = r["bytes_per_image"] / 2**10
        console.print(f"prepare: {r['build_s_per_1000']:.1f} s per 1,000 images, {kib:.0f} KiB per "
                      f"image ({r['gb_per_7000']:.2f} GB per 7,000)")
        return
    h, w = result["resolution"]
    title = (f"{result['machine']}; {w}x{h} batch {args.batch_size}; auto = {result['auto_precision']}"
             f" + configured layouts; conv peak {result['conv_peak_gflops']:.0f} GFLOP/s")
    if result["models"]:
        _inference_tables(console, result, args, title, w, h)
    if result["training"]:
        t = Table(title=f"Training step (training_step + backward + optimizer steps): {title}")
        compiled = any("compiled_ms" in r for r in result["training"].values())
        cols = ["module", "fp32 NCHW ms", "auto ms", "speedup"]
        for col in cols + (["compiled ms", "compiled speedup"] if compiled else []):
            t.add_column(col, justify="left" if col == "module" else "right", no_wrap=True)
        for name, r in result["training"].items():
            extra = [f"{r['compiled_ms']:.0f}", f"{r['compiled_speedup']:.2f}x"] if compiled else []
            t.add_row(name, f"{r['reference_ms']:.0f}", f"{r['auto_ms']:.0f}", f"{r['speedup']:.2f}x",
                      *extra)
        console.print(t)


def _inference_tables(console, result: dict, args: argparse.Namespace, title: str, w: int, h: int) -> None:
    from rich.table import Table

    t = Table(title=f"Inference: {title}")
    compiled = any("compiled_ms" in r for r in result["models"].values())
    cols = ["model", "GMACs", "params M", "fp32 ms", "auto ms", "speedup", "fps", "% peak"]
    for col in cols + (["compiled ms", "compiled speedup"] if compiled else []):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for name, r in result["models"].items():
        extra = [f"{r['compiled_ms']:.1f}", f"{r['compiled_speedup']:.2f}x"] if compiled else []
        t.add_row(name, f"{r['gmacs']:.2f}", f"{r['params_m']:.2f}", f"{r['reference_ms']:.1f}",
                  f"{r['auto_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['fps']:.1f}",
                  f"{100 * r['peak_fraction']:.1f}", *extra)
    console.print(t)
    onnx_rows = {n: r["onnxruntime"] for n, r in result["models"].items() if "onnxruntime" in r}
    if onnx_rows:
        t = Table(title=f"onnxruntime {w}x{h} batch {args.batch_size}, {torch.get_num_threads()} "
                        "intra-op threads (ms, fps, % of the same conv peak; speedup vs PyTorch auto)")
        for col in ("model", "runtime", "ms", "fps", "% peak", "vs auto"):
            t.add_column(col, justify="left" if col in ("model", "runtime") else "right", no_wrap=True)
        for name, rows in onnx_rows.items():
            for rt, r in rows.items():
                t.add_row(name, f"onnxruntime {rt}", f"{r['ms']:.1f}", f"{r['fps']:.1f}",
                          f"{100 * r['peak_fraction']:.1f}",
                          f"{result['models'][name]['auto_ms'] / r['ms']:.2f}x")
        console.print(t)


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(x, 4) if isinstance(x, float) else x


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    warn_if_busy()
    try:
        result = _rounded(run(args))
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print_bench_table(result, args)
    if args.json is not None:
        write_json(args.json, result)  # never a half-written results file
    return result


if __name__ == "__main__":
    main()
