"""Device-dependent choices: precision, memory layout, cuDNN autotuning, determinism.

Every speed switch is a small function of what the hardware reports, chosen so that no machine
runs slower than plain fp32 eager NCHW (README: Speed):

- the CPU's class (:func:`cpu_class`): AVX2 only (most laptops: bf16 is emulated by oneDNN, ~10x
  slower than fp32), AVX-512 without bf16, AVX-512 bf16 (bf16 ~2x fp32), AMX (bf16 several times
  fp32), read from the instruction sets torch reports and the limits a user set on torch and oneDNN
  (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``: an AVX-512 machine held to AVX2 is an AVX2
  machine for every choice here);
- the GPU's compute capability (bf16 is native from 8.0, Ampere).

No GPU and only one CPU class are at hand where nightseg is developed, so each choice is tested
with faked capabilities (tests/test_hardware.py) and, for AVX2, by holding the real CPU to AVX2.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from nightseg.core.errors import ConfigError

log = logging.getLogger(__name__)

# Lightning's names for bf16 autocast; "bf16-true" (weights in bf16) is left as the user asked.
BF16_MIXED = ("bf16-mixed", "bf16")
BF16_ANY = (*BF16_MIXED, "bf16-true")
AUTO = "auto"

# ---- the CPU's class ---------------------------------------------------------------------------
# Tiers of x86 instruction sets that change which precision is fast, lowest first. "baseline" is
# anything below AVX2 and every non-x86 CPU (where nightseg has no measurement: fp32, the safe side).
TIERS = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
# oneDNN's ONEDNN_MAX_CPU_ISA (also DNNL_MAX_CPU_ISA) values -> the highest tier they allow.
_ONEDNN_ISA_TIER = {
    "SSE41": "baseline", "AVX": "baseline",
    "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512",
    "AVX512_CORE_BF16": "avx512_bf16", "AVX512_CORE_FP16": "avx512_bf16", "AVX10_1_512": "avx512_bf16",
}
# torch's ATEN_CPU_CAPABILITY as torch.backends.cpu.get_cpu_capability() reports it -> highest tier.
_ATEN_TIER = {"AVX512": "amx", "AVX2": "avx2"}


@dataclass(frozen=True)
class CpuClass:
    """The CPU as the precision and layout choices see it: its tier and why (hardware, limits)."""

    tier: str
    hardware: str  # the tier the instruction sets allow, before ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA
    held_by: str = ""  # e.g. "ONEDNN_MAX_CPU_ISA=AVX2" when a limit lowered the tier

    @property
    def native_bf16(self) -> bool:
        return TIERS.index(self.tier) >= TIERS.index("avx512_bf16")

    def describe(self) -> str:
        held = f", held to it by {self.held_by} on {self.hardware} hardware" if self.held_by else ""
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        return f"CPU class {self.tier} ({bf16}{held})"


def hardware_tier() -> str:
    """The highest tier the CPU's instruction sets reach (torch's cpuinfo; False off x86)."""
    if torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported():
        return "amx"
    if torch.cpu._is_avx512_bf16_supported():
        return "avx512_bf16"
    if torch.cpu._is_avx512_supported():
        return "avx512"
    if torch.cpu._is_avx2_supported():
        return "avx2"
    return "baseline"


def cpu_class() -> CpuClass:
    """:func:`hardware_tier`, lowered to what torch's own kernels and oneDNN's may use."""
    hardware = tier = hardware_tier()
    held = []
    limits = [("ATEN_CPU_CAPABILITY", _ATEN_TIER.get(torch.backends.cpu.get_cpu_capability(), "baseline"))]
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(var, "").strip().upper()
        if value in _ONEDNN_ISA_TIER:  # ALL, DEFAULT, the AMX names: no limit below AMX
            limits.append((f"{var}={value}", _ONEDNN_ISA_TIER[value]))
            break
    for name, limit in limits:
        if TIERS.index(limit) < TIERS.index(hardware):
            tier = min(tier, limit, key=TIERS.index)
            held.append(name if "=" in name else f"{name}={torch.backends.cpu.get_cpu_capability()}")
    return CpuClass(tier=tier, hardware=hardware, held_by=" and ".join(held))


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it ("AMD EPYC"), or the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def device_summary(accelerator: Any = "auto") -> str:
    """One line for metrics.json and the bench: the GPUs, or the CPU's model and class."""
    if uses_cuda(accelerator):
        return "cuda: " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"cpu: {cpu_model()}, {cpu_class().describe()}, {torch.get_num_threads()} threads"


_said: set[str] = set()


def _once(level: int, message: str, *args) -> None:
    """Log a device choice once per process (every stage's Trainer resolves it again)."""
    text = message % args
    if text not in _said:
        _said.add(text)
        log.log(level, text)


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


def auto_precision(cuda: bool) -> tuple[str, str]:
    """(Lightning precision, why) for ``trainer.precision=auto``: bf16 autocast where the hardware
    computes in bf16 natively (Ampere+ GPUs; AVX-512 bf16 and AMX CPUs), fp16 autocast on older
    GPUs, fp32 on every other CPU (AVX2: emulated bf16 is ~10x slower than fp32)."""
    if cuda:
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
        if native_bf16():
            return "bf16-mixed", f"{names}: native bf16"
        return "16-mixed", f"{names}: no native bf16 (compute capability < 8.0)"
    cpu = cpu_class()
    return ("bf16-mixed" if cpu.native_bf16 else "32-true"), cpu.describe()


# Lightning precision -> the dtype inference autocasts to (None: no autocast, fp32).
AUTOCAST_DTYPE = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None}


def auto_autocast_dtype(cuda: bool) -> torch.dtype | None:
    """The dtype inference autocasts to under ``auto``: :func:`auto_precision`'s, for inference."""
    return AUTOCAST_DTYPE[auto_precision(cuda)[0]]


def choose_precision(precision: Any, cuda: bool) -> Any:
    """``trainer.precision`` for this device: ``auto`` resolved (:func:`auto_precision`), bf16
    autocast replaced by fp16 autocast on GPUs without bf16; an explicit bf16 on a CPU without it
    is kept, with one warning."""
    if str(precision) == AUTO:
        chosen, why = auto_precision(cuda)
        _once(logging.INFO, "trainer.precision=auto: %s (%s)", chosen, why)
        return chosen
    if not cuda and str(precision) in BF16_ANY:
        cpu = cpu_class()
        if not cpu.native_bf16:
            _once(logging.WARNING, "trainer.precision=%s on a %s: bf16 is emulated there, about 10x "
                  "slower than fp32; trainer.precision=auto (or 32-true) trains in fp32",
                  precision, cpu.describe())
        return precision
    if cuda and str(precision) in BF16_MIXED and not native_bf16():
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
        log.warning("trainer.precision=%s: %s has no native bf16 (compute capability < 8.0), so "
                    "training uses 16-mixed instead (set trainer.precision=32-true for fp32)",
                    precision, names)
        return "16-mixed"
    return precision


def resolve_channels_last(value: Any, cuda: bool = False) -> bool:
    """ERF-PSPNet's ``channels_last: auto``: channels_last where bf16 is native (AVX-512 bf16 and
    AMX CPUs, GPUs), NCHW on the other CPUs. There it computes in fp32, and its training step is no
    faster in channels_last (AVX2: 343 against 358 ms at 96x192, 2599 against 3099 ms at 480x272,
    experiments/bench/README.md), while bf16 on AVX-512 is 10% faster in it. A bool is kept."""
    if value != AUTO:
        return bool(value)
    return cuda or cpu_class().native_bf16


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# CPU jobs with at most this many cores load data in the main process (data.num_workers=auto).
FEW_CORES = 4


def loader_workers(num_workers: Any, cuda: bool, processes_per_node: int = 1) -> int:
    """``data.num_workers`` for this machine: ``auto`` resolved, a number kept.

    On the CPU the loader shares the cores with torch's intra-op threads, and a worker that takes
    a core stalls every parallel region of the training step until its descheduled thread runs
    again: on 2 cores, 60 ERF-PSPNet steps took 56 s with 2 workers and 34 s loading in the main
    process (README: Speed). So a CPU job on few cores (<= FEW_CORES) loads in the main process
    (batches do not depend on the workers, nightseg.data.datamodules), a larger one keeps 2
    workers; a GPU job gets up to 8 workers per process, one core left for the process itself.
    """
    if num_workers != AUTO:
        return num_workers
    cores = usable_cores()
    if cuda:
        return max(1, min(8, cores // max(1, processes_per_node) - 1))
    return 0 if cores <= FEW_CORES else 2


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
