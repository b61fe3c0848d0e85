"""Where and in which precision a loaded pipeline runs outside a Trainer (python -m nightseg.predict):
``device`` (auto, cpu, cuda, cuda:N) and ``precision`` (auto, bf16, 32) as an autocast dtype.
(Training and evaluation take both from the Trainer, nightseg.infra.hardware.)"""

from __future__ import annotations

import torch

from nightseg.core.errors import ConfigError
from nightseg.infra.hardware import auto_autocast_dtype, native_bf16

PRECISIONS = ("auto", "bf16", "32")


def choose_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={device}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device is visible here; use device=cpu")
    return dev


def inference_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, fp16 on GPUs without native bf16 (as nightseg.infra.hardware does for training),
    or None for fp32. ``auto``: fp32 on CPUs without native bf16 (AVX2), where bf16 is emulated."""
    if precision == "auto":
        return auto_autocast_dtype(device.type == "cuda")
    if precision == "32":
        return None
    if device.type == "cuda" and not native_bf16():
        return torch.float16
    return torch.bfloat16
