"""Compute of experiment=cityscapes_acdc_night, estimated: FLOPs counted, times derived.

    .venv/bin/python experiments/cityscapes_acdc_night/estimate.py [--gpu-tflops 30]

Counts the FLOPs of one forward pass of each net (torch.utils.flop_counter) at the preset's sizes
and takes a training step as 3x its forward passes (forward + backward: the usual rule). The CPU's
sustained rate comes from measured figures: the training steps of experiments/bench (480x272, this
CPU, bf16 auto) divided by their FLOPs counted the same way. A GPU's rate is an assumption
(--gpu-tflops), not a measurement. Prints per stage: FLOPs, CPU hours, GPU hours.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nightseg.nets.discriminator import PatchDiscriminator
from nightseg.nets.erf_pspnet import ERFPSPNet
from nightseg.nets.generator import ResnetGenerator
from nightseg.tools.bench.timing import count_macs

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cpu_480x272_auto_avx512bf16.json"


def flops(net: torch.nn.Module, batch: int, hw: tuple[int, int]) -> float:
    return 2 * count_macs(net.eval(), torch.rand(batch, 3, *hw))


def cyclegan_step(g: float, d: float) -> float:
    """One CycleGAN step (batch 1): the generators' update runs 6 generator passes (two fakes, two
    reconstructions, two identities) and 2 critic passes; the critics' update 4 critic passes."""
    return 3 * (6 * g + 2 * d) + 3 * 4 * d


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-tflops", type=float, default=30.0,
                        help="sustained bf16 TFLOP/s assumed for these nets on one GPU")
    args = parser.parse_args()
    torch.manual_seed(0)
    seg, gen, disc = ERFPSPNet(num_classes=19), ResnetGenerator(64, 9), PatchDiscriminator(64, 3)
    bench = json.loads(BENCH.read_text())["training"]

    # The CPU's sustained rate from the bench's measured steps at 480x272 (bf16 auto, 2 cores).
    seg_480 = 3 * flops(seg, 8, (272, 480))
    cg_480 = cyclegan_step(flops(gen, 1, (272, 480)), flops(disc, 1, (272, 480)))
    cpu_rate = {"segmenter": seg_480 / (bench["segmenter"]["auto_ms"] / 1e3),
                "translator": cg_480 / (bench["translator_paper"]["auto_ms"] / 1e3)}

    cs_train, epochs_t, epochs_s, batch = 2975, 20 + 20, 100, 8
    stages = {  # name: (FLOPs, which CPU rate applies)
        "translator (40 epochs x 2975 steps, 256x256 crops)":
            (epochs_t * cs_train * cyclegan_step(flops(gen, 1, (256, 256)), flops(disc, 1, (256, 256))),
             "translator"),
        "generated night (2975 Cityscapes images, 512x1024)":
            (cs_train * flops(gen, 1, (512, 1024)), "translator"),
        "segmenter N=0 (100 epochs x 371 steps, batch 8, 512x512)":
            (epochs_s * (cs_train // batch) * 3 * flops(seg, batch, (512, 512)), "segmenter"),
        "segmenter N=2975 (100 epochs x 743 steps)":
            (epochs_s * (2 * cs_train // batch) * 3 * flops(seg, batch, (512, 512)), "segmenter"),
        "scoring ACDC night val raw + night2day (106 images, 540x960)":
            (106 * (2 * flops(seg, 1, (540, 960)) + flops(gen, 1, (540, 960))), "translator"),
    }
    print(f"CPU rates measured (bench, 480x272, bf16 auto): segmenter {cpu_rate['segmenter'] / 1e9:.0f} "
          f"GFLOP/s, CycleGAN {cpu_rate['translator'] / 1e9:.0f} GFLOP/s; GPU assumed "
          f"{args.gpu_tflops:.0f} TFLOP/s")
    print(f"{'stage':<64} {'PFLOP':>8} {'CPU h':>9} {'GPU h':>7}")
    for name, (f, kind) in stages.items():
        print(f"{name:<64} {f / 1e15:8.2f} {f / cpu_rate[kind] / 3600:9.0f} "
              f"{f / (args.gpu_tflops * 1e12) / 3600:7.2f}")


if __name__ == "__main__":
    main()
