"""Device-dependent choices: precision, memory layout, cuDNN autotuning, determinism.

Every speed switch is a small function of what the hardware reports, chosen so that no machine
runs slower than plain fp32 eager NCHW (README: Speed):

- the CPU's class (:func:`cpu_class`): AVX2 only (most laptops: bf16 is emulated by oneDNN, ~10x
  slower than fp32), AVX-512 without bf16, AVX-512 bf16 (bf16 ~2x fp32), AMX (bf16 several times
  fp32), read from the instruction sets torch reports and the limits a user set on torch and oneDNN
  (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``: an AVX-512 machine held to AVX2 is an AVX2
  machine for every choice here);
- the GPU's compute capability (bf16 is native from 8.0, Ampere), read from torch, or from NVML
  (nightseg.infra.nvml) before a ``ddp_fork``/``ddp_notebook`` Trainer forks: torch's query
  initialises CUDA, after which Lightning cannot fork.

``trainer.accelerator=auto`` on a node whose driver sees a GPU that torch cannot use stops the job
(:func:`check_gpu_visible`) instead of training on the CPU.

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
from nightseg.infra import nvml

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
        return "cuda: " + ", ".join(gpu_names(init_cuda=torch.cuda.is_initialized()))
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


# ---- the GPUs ----------------------------------------------------------------------------------
def gpu_names(init_cuda: bool = True) -> list[str]:
    """The GPUs' names: torch's (which initialises CUDA), or without ``init_cuda`` NVML's (every
    GPU of the node)."""
    if init_cuda:
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    seen = nvml.probe()
    return list(seen.names) if seen is not None else [f"{torch.cuda.device_count()} CUDA devices"]


def gpu_capabilities(init_cuda: bool = True) -> list[tuple[int, int]] | None:
    """The visible GPUs' compute capabilities from torch (which initialises CUDA), or without
    ``init_cuda`` from NVML, which does not: every GPU of the node, so on a node that mixes GPU
    generations the oldest decides. None where NVML cannot tell."""
    if init_cuda:
        return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    seen = nvml.probe()
    return list(seen.capabilities) if seen is not None and seen.capabilities else None


def native_bf16(init_cuda: bool = True) -> bool | None:
    """bf16 in hardware on every visible GPU: compute capability 8.0 (Ampere) or newer, or ROCm;
    None where the capability is unknown (no NVML, and CUDA must not be initialised).

    ``torch.cuda.is_bf16_supported()`` also answers True on older GPUs (V100 7.0, T4 7.5), where
    bf16 is emulated through fp32 and runs slower than fp16 autocast.
    """
    if torch.version.hip:
        return True
    caps = gpu_capabilities(init_cuda)
    return None if caps is None else all(c >= (8, 0) for c in caps)


def auto_precision(cuda: bool, init_cuda: bool = True) -> tuple[str, str]:
    """(Lightning precision, why) for ``trainer.precision=auto``: bf16 autocast where the hardware
    computes in bf16 natively (Ampere+ GPUs; AVX-512 bf16 and AMX CPUs), fp16 autocast on older
    GPUs (and where a forking strategy leaves the capability unknown: fp16 runs on every GPU),
    fp32 on every other CPU (AVX2: emulated bf16 is ~10x slower than fp32)."""
    if cuda:
        names = ", ".join(sorted(set(gpu_names(init_cuda))))
        native = native_bf16(init_cuda)
        if native:
            return "bf16-mixed", f"{names}: native bf16"
        if native is None:
            return "16-mixed", (f"{names}: compute capability unknown without NVML before a forking "
                                "strategy (trainer.precision=bf16-mixed on Ampere or newer)")
        return "16-mixed", f"{names}: no native bf16 (compute capability < 8.0)"
    cpu = cpu_class()
    return ("bf16-mixed" if cpu.native_bf16 else "32-true"), cpu.describe()


# Lightning precision -> the dtype inference autocasts to (None: no autocast, fp32).
AUTOCAST_DTYPE = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None}


def auto_autocast_dtype(cuda: bool) -> torch.dtype | None:
    """The dtype inference autocasts to under ``auto``: :func:`auto_precision`'s, for inference."""
    return AUTOCAST_DTYPE[auto_precision(cuda)[0]]


def choose_precision(precision: Any, cuda: bool, init_cuda: bool = True) -> Any:
    """``trainer.precision`` for this device: ``auto`` resolved (:func:`auto_precision`), bf16
    autocast replaced by fp16 autocast on GPUs without bf16; an explicit bf16 on a CPU without it
    is kept, with one warning. Without ``init_cuda`` the GPUs are read through NVML."""
    if str(precision) == AUTO:
        chosen, why = auto_precision(cuda, init_cuda)
        _once(logging.INFO, "trainer.precision=auto: %s (%s)", chosen, why)
        return chosen
    if not cuda and str(precision) in BF16_ANY:
        cpu = cpu_class()
        if not cpu.native_bf16:
            _once(logging.WARNING, "trainer.precision=%s on a %s: bf16 is emulated there, about 10x "
                  "slower than fp32; trainer.precision=auto (or 32-true) trains in fp32",
                  precision, cpu.describe())
        return precision
    if cuda and str(precision) in BF16_MIXED and native_bf16(init_cuda) is False:
        names = ", ".join(sorted(set(gpu_names(init_cuda))))
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
    """``trainer.deterministic=true`` stops at the first backward pass on CUDA."""
    if cuda and deterministic is True:
        raise ConfigError(
            "trainer.deterministic=true cannot train on CUDA: the backward passes of bilinear "
            "upsampling and adaptive average pooling (ERF-PSPNet) and of reflection_pad2d (the "
            "CycleGAN generators), and NLLLoss (the segmenter's cross-entropy), have no "
            "deterministic CUDA kernels; use trainer.deterministic=warn (deterministic where "
            "possible, a warning for each of those)")


def cudnn_benchmark(benchmark: Any, deterministic: Any, cuda: bool) -> Any:
    """``trainer.benchmark``: null picks true on CUDA unless determinism is asked for. Inputs have
    fixed sizes (training crops, one size per dataset or ``data.resize``), so cuDNN's autotuner
    measures each convolution once and then uses the fastest kernel."""
    if benchmark is not None or not cuda:
        return benchmark
    return not deterministic


# torch's answers to "no CUDA device wanted" in CUDA_VISIBLE_DEVICES.
_NO_DEVICES = ("", "-1", "none", "void", "nodevfiles")
# The wheel index of torch's CUDA 12 builds (pytorch.org's installation page lists the indexes).
CUDA12_WHEELS = "https://download.pytorch.org/whl/cu126"


def check_gpu_visible(accelerator: Any) -> None:
    """``trainer.accelerator=auto`` where torch sees no GPU but the NVIDIA driver does (NVML or
    nvidia-smi): stop, instead of training on the CPU about 100x slower. The usual cause is a
    driver older than the CUDA the torch wheel was built for (the default wheel of torch 2.14 is
    built for CUDA 13.0), or a CPU-only wheel. A job that hides the GPUs on purpose
    (CUDA_VISIBLE_DEVICES="") or asks for the CPU (``trainer.accelerator=cpu``) is not stopped.
    Called when a job resolves its Trainer arguments, never at import."""
    if accelerator != AUTO or torch.cuda.is_available():
        return
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip().lower() in _NO_DEVICES:
        return
    seen = nvml.probe()
    if seen is None:
        return
    built = torch.version.cuda
    if built is None:
        why = "this torch wheel has no CUDA"
    elif seen.driver_cuda is not None:
        why = (f"this torch was built for CUDA {built}, the driver supports CUDA "
               f"{seen.driver_cuda[0]}.{seen.driver_cuda[1]}")
    else:
        why = f"this torch was built for CUDA {built} and cannot initialise it with this driver"
    version = torch.__version__.split("+")[0]
    raise ConfigError(
        f"trainer.accelerator=auto: {seen.source} sees {seen.describe()} but torch "
        f"{torch.__version__} cannot use it ({why}), so the job would train on the CPU; install a "
        f"torch wheel for the driver's CUDA (CUDA 12: pip install torch=={version} torchvision "
        f"--index-url {CUDA12_WHEELS}) or update the NVIDIA driver, or set "
        "trainer.accelerator=cpu to train on the CPU")


# Lightning strategies that fork this process for their workers: CUDA must not be initialised
# before them (Lightning refuses to fork after it).
FORK_STRATEGIES = ("ddp_fork", "ddp_notebook")


def forks(strategy: Any) -> bool:
    """Whether ``trainer.strategy`` forks this process (``ddp_fork``, ``ddp_notebook``, also
    with ``_find_unused_parameters_true``/``_false``)."""
    return isinstance(strategy, str) and strategy.startswith(FORK_STRATEGIES)


def resolve_trainer(trainer: dict[str, Any]) -> dict[str, Any]:
    """The Trainer arguments every stage uses, after the device-dependent choices above. Where
    the strategy forks, nothing here initialises CUDA (the GPUs are read through NVML)."""
    out = dict(trainer)
    check_gpu_visible(out.get("accelerator", "auto"))
    cuda = uses_cuda(out.get("accelerator", "auto"))
    init_cuda = torch.cuda.is_initialized() or not forks(out.get("strategy"))
    if "precision" in out:
        out["precision"] = choose_precision(out["precision"], cuda, init_cuda)
    check_deterministic(out.get("deterministic"), cuda)
    if out.get("benchmark") is not None or cuda:
        out["benchmark"] = cudnn_benchmark(out.get("benchmark"), out.get("deterministic"), cuda)
    return out
