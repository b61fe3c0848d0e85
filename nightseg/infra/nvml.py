"""The NVIDIA GPUs the driver sees, read without initialising CUDA in this process.

Two questions need the GPUs before torch may touch CUDA: whether a GPU is there that torch cannot
use (a driver older than the CUDA the torch wheel was built for makes ``torch.cuda.is_available()``
answer False, and ``trainer.accelerator=auto`` would train on the CPU), and which compute
capability the GPUs have when a ``ddp_fork``/``ddp_notebook`` Trainer will fork this process
later (``torch.cuda.get_device_capability`` initialises CUDA, after which Lightning cannot fork).

NVML (``libnvidia-ml.so.1``, installed with every NVIDIA driver) answers both through ctypes in
well under a millisecond and creates no CUDA context; where it cannot be loaded, ``nvidia-smi -L``
gives the names. Read once per process, when a job resolves its Trainer arguments, never at import.
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
from dataclasses import dataclass

_NAME_BUFFER = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE


@dataclass(frozen=True)
class NvidiaGpus:
    """The node's NVIDIA GPUs as the driver reports them (all of them, whatever
    CUDA_VISIBLE_DEVICES says)."""

    names: tuple[str, ...]
    capabilities: tuple[tuple[int, int], ...] | None  # None where only nvidia-smi -L answered
    driver_cuda: tuple[int, int] | None = None  # the newest CUDA the driver supports, e.g. (12, 4)
    source: str = "NVML"

    def describe(self) -> str:
        names = ", ".join(sorted(set(self.names)))
        return f"{len(self.names)} x {names}" if len(set(self.names)) == 1 else names


def _from_nvml() -> NvidiaGpus | None:
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if lib.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        names, caps = [], []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                return None
            buf = ctypes.create_string_buffer(_NAME_BUFFER)
            lib.nvmlDeviceGetName(handle, buf, _NAME_BUFFER)
            names.append(buf.value.decode(errors="replace") or f"GPU {i}")
            major, minor = ctypes.c_int(), ctypes.c_int()
            if lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != 0:
                return None
            caps.append((major.value, minor.value))
        version = ctypes.c_int()
        driver = None
        if lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) == 0 and version.value > 0:
            driver = (version.value // 1000, version.value % 1000 // 10)  # 12040 -> (12, 4)
        return NvidiaGpus(tuple(names), tuple(caps), driver, "NVML")
    finally:
        lib.nvmlShutdown()


def _from_nvidia_smi() -> NvidiaGpus | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"
    names = [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.splitlines()
             if line.startswith("GPU ") and ":" in line]
    return NvidiaGpus(tuple(names), None, None, "nvidia-smi") if names else None


@functools.lru_cache(maxsize=1)
def probe() -> NvidiaGpus | None:
    """The node's NVIDIA GPUs (NVML, else ``nvidia-smi -L``), or None where neither sees one."""
    gpus = _from_nvml()
    if gpus is None or not gpus.names:
        gpus = _from_nvidia_smi()
    return gpus if gpus is not None and gpus.names else None
