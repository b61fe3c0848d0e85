"""Memory layout per net: NCHW against channels_last, in fp32 and in bf16 autocast, on this CPU.

The evidence behind each model config's ``channels_last`` (README: Speed). Run it once as the
machine is and once held to AVX2 (what an AVX2-only laptop does):

    .venv/bin/python experiments/bench/layouts.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python experiments/bench/layouts.py

Training steps: the modules' own training_step under a Lightning Trainer (nightseg.tools.bench.timing),
at the default job's sizes (segmenter batch 8 at 96x192; CycleGAN batch 1 on 64x64 crops).
Inference: batch 1 at 480x272. Medians of --runs timed calls after a warm-up.
"""

from __future__ import annotations

import argparse

import torch

from nightseg.infra.hardware import device_summary
from nightseg.tools.bench import models as bench
from nightseg.tools.bench.timing import time_calls, time_training_steps

CPU = torch.device("cpu")
TRAINING = (("segmenter", "segmenter", 8, (96, 192)), ("translator_small", "cyclegan_small", 1, (64, 64)))
INFERENCE = ("segmenter", "translator_light", "translator_full")


def _precision(bf16: bool):
    """Patch the bench's setting so that 'optimized' means 'bf16 autocast' or 'fp32' here."""
    import nightseg.tools.bench.timing as bt

    bt.training_precision = lambda device, optimized: "bf16-mixed" if optimized else "32-true"
    bt.autocast_dtype = lambda device: torch.bfloat16
    return bf16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--no-bf16", action="store_true", help="fp32 only (emulated bf16 is slow)")
    p.add_argument("--no-full", action="store_true", help="skip the paper's generator (slowest)")
    args = p.parse_args()
    print(device_summary("cpu"))
    precisions = (False,) if args.no_bf16 else (False, True)
    for name, key, batch, hw in TRAINING:
        sample = bench.training_sample(name, hw)
        for bf16 in precisions:
            for cl in (False, True):
                def build(optimized, cl=cl, key=key):
                    torch.manual_seed(0)
                    if key == "segmenter":
                        return bench.build_segmenter(cl)
                    return bench.build_translator(key, cl)

                _precision(bf16)
                s = time_training_steps(build, sample, CPU, bf16, batch, args.runs, 2)
                print(f"train {name:17s} {'bf16' if bf16 else 'fp32'} {'CL  ' if cl else 'NCHW'} "
                      f"{s * 1e3:8.0f} ms", flush=True)
    for name in INFERENCE:
        if args.no_full and name == "translator_full":
            continue
        for cl in (False, True):
            model = bench.build_model(name, cl)
            x = torch.rand(1, 3, 272, 480)
            for bf16 in precisions:
                s = time_calls(model, (x,), CPU, _precision(bf16), args.runs, 1)
                print(f"infer {name:17s} {'bf16' if bf16 else 'fp32'} {'CL  ' if cl else 'NCHW'} "
                      f"{s * 1e3:8.1f} ms", flush=True)


if __name__ == "__main__":
    main()
