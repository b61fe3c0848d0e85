"""Device-dependent choices: precision, cuDNN autotuning, determinism and pinned memory.

No GPU is at hand where nightseg is developed, so every CUDA-only choice is a small function of
what the device reports (tested with a faked capability) and is guarded by a check that CUDA is in
use; on the CPU each returns the setting unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nightseg.utils import ConfigError

log = logging.getLogger(__name__)

# Lightning's names for bf16 autocast; "bf16-true" (weights in bf16) is left as the user asked.
BF16_MIXED = ("bf16-mixed", "bf16")


def uses_cuda(accelerator: Any) -> bool:
    """Whether ``trainer.accelerator`` (a name or an Accelerator) trains on CUDA devices here."""
    if not isinstance(accelerator, str):
        from pytorch_lightning.accelerators import CUDAAccelerator

        return isinstance(accelerator, CUDAAccelerator)
    if accelerator in ("cuda", "gpu"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def native_bf16() -> bool:
    """bf16 in hardware on every visible GPU: compute capability 8.0 (Ampere) or newer, or ROCm.

    ``torch.cuda.is_bf16_supported()`` also answers True on older GPUs (V100 7.0, T4 7.5), where
    bf16 is emulated through fp32 and runs slower than fp16 autocast.
    """
    if torch.version.hip:
        return True
    return all(torch.cuda.get_device_capability(i) >= (8, 0) for i in range(torch.cuda.device_count()))


def choose_precision(precision: Any, cuda: bool) -> Any:
    """``trainer.precision``, with bf16 autocast replaced by fp16 autocast on GPUs without bf16."""
    if cuda and str(precision) in BF16_MIXED and not native_bf16():
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
        log.warning("trainer.precision=%s: %s has no native bf16 (compute capability < 8.0), so "
                    "training uses 16-mixed instead (set trainer.precision=32-true for fp32)",
                    precision, names)
        return "16-mixed"
    return precision


def check_deterministic(deterministic: Any, cuda: bool) -> None:
    """``trainer.deterministic=true`` stops at ERF-PSPNet's first backward pass on CUDA."""
    if cuda and deterministic is True:
        raise ConfigError(
            "trainer.deterministic=true cannot train on CUDA: bilinear upsampling and adaptive "
            "average pooling have no deterministic CUDA backward kernels; use "
            "trainer.deterministic=warn (deterministic where possible, warns for those two)")


def cudnn_benchmark(benchmark: Any, deterministic: Any, cuda: bool) -> Any:
    """``trainer.benchmark``: null picks true on CUDA unless determinism is asked for. Inputs have
    fixed sizes (training crops, one size per dataset or ``data.resize``), so cuDNN's autotuner
    measures each convolution once and then uses the fastest kernel."""
    if benchmark is not None or not cuda:
        return benchmark
    return not deterministic


def resolve_trainer(trainer: dict[str, Any]) -> dict[str, Any]:
    """The Trainer arguments every stage uses, after the device-dependent choices above."""
    out = dict(trainer)
    cuda = uses_cuda(out.get("accelerator", "auto"))
    if "precision" in out:
        out["precision"] = choose_precision(out["precision"], cuda)
    check_deterministic(out.get("deterministic"), cuda)
    if out.get("benchmark") is not None or cuda:
        out["benchmark"] = cudnn_benchmark(out.get("benchmark"), out.get("deterministic"), cuda)
    return out
