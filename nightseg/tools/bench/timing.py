"""Measuring helpers for ``nightseg.bench``: MAC counting, latency, the conv peak, training steps.

Everything here takes a device and a flag for the reference (fp32, eager, NCHW) or the auto
setting (the precision ``trainer.precision=auto`` resolves to on this device, see
nightseg.infra.hardware, and each net's configured memory layout), so one code path serves both devices
and every CPU class. Timings are medians of repeated runs after a warm-up; CUDA work is
synchronized before every clock read.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nightseg.infra.hardware import auto_autocast_dtype, auto_precision


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The auto setting's autocast dtype: bf16 where the hardware has it (AVX-512 bf16 / AMX CPUs,
    Ampere+ GPUs), fp16 on older GPUs (V100, T4: bf16 there is emulated, which
    torch.cuda.is_bf16_supported() counts as support), None (fp32) on other CPUs (AVX2)."""
    return auto_autocast_dtype(device.type == "cuda")


def inference_context(device: torch.device, optimized: bool) -> contextlib.ExitStack:
    """inference_mode, plus autocast on the auto path where it resolves to a lower precision."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    dtype = autocast_dtype(device) if optimized else None
    if dtype is not None:
        stack.enter_context(torch.autocast(device.type, dtype=dtype))
    return stack


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_macs(fn: Callable, *args) -> float:
    """Multiply-accumulates of one call (FLOPs / 2, as torch.utils.flop_counter counts 2 per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn(*args)
    return counter.get_total_flops() / 2


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def time_calls(fn: Callable, args: tuple, device: torch.device, optimized: bool, runs: int,
               warmup: int) -> float:
    """Median seconds per call of ``fn(*args)`` after ``warmup`` untimed calls."""
    times = []
    with inference_context(device, optimized):
        for i in range(warmup + runs):
            synchronize(device)
            t0 = time.perf_counter()
            fn(*args)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


# A few large 3x3 convs (channels x rows x cols); the best of them is the machine's conv peak.
# Wide channels keep the GEMM compute-bound; the sizes keep one run well under a second on CPU.
PEAK_SHAPES = ((128, 68, 120), (256, 68, 120), (256, 34, 60))


def conv_peak_gflops(device: torch.device, runs: int = 10, warmup: int = 3,
                     batch_size: int = 1) -> float:
    """GFLOP/s of the fastest large 3x3 conv, channels_last, in the auto precision."""
    best = 0.0
    for ch, h, w in PEAK_SHAPES:
        conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last)
        x = torch.randn(batch_size, ch, h, w, device=device).contiguous(memory_format=torch.channels_last)
        seconds = time_calls(conv, (x,), device, True, runs, warmup)
        flops = 2 * batch_size * h * w * ch * ch * 9
        best = max(best, flops / seconds / 1e9)
    return best


class _StepTimer(pl.Callback):
    """Wall time from on_train_batch_start to on_train_batch_end: the module's training_step with
    its backward passes and optimizer steps, but not the data loader."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter() - self._t0)


class _FixedBatches(torch.utils.data.Dataset):
    """The same (pre-made) sample ``length`` times, so loading costs nothing and every step sees
    identical data."""

    def __init__(self, sample: dict[str, torch.Tensor], length: int):
        self.sample, self.length = sample, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.sample


def training_precision(device: torch.device, optimized: bool) -> str:
    return auto_precision(device.type == "cuda")[0] if optimized else "32-true"


def time_training_steps(build: Callable[[bool], pl.LightningModule], sample: dict[str, torch.Tensor],
                        device: torch.device, optimized: bool, batch_size: int, runs: int,
                        warmup: int) -> float:
    """Median seconds per training step of ``build(optimized)`` under a real Lightning Trainer
    (its precision plugin, manual or automatic optimization, logging), one epoch of fixed batches."""
    module = build(optimized)
    timer = _StepTimer(device)
    steps = warmup + runs
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        precision=training_precision(device, optimized), max_epochs=1, limit_train_batches=steps,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    loader = torch.utils.data.DataLoader(_FixedBatches(sample, steps * batch_size),
                                         batch_size=batch_size, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    if len(timer.times) != steps:
        raise RuntimeError(f"expected {steps} timed training steps, got {len(timer.times)}")
    return statistics.median(timer.times[warmup:])
