"""Training-speed options that change how a module trains, not what it learns: its nets
torch.compile'd for the fit (``model.compile``) and fused Adam on CUDA. Neither is in a cache key:
like cuDNN's algorithm choice they change results only by rounding."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

import torch
from torch import nn

from nightseg.core.errors import ConfigError


class CompiledTraining:
    """For LightningModules whose training step calls its nets through :meth:`train_net`: with
    ``compile_training`` set (by the stage, from ``model.compile``), every net named in
    ``TRAINED_NETS`` is torch.compile'd when the fit starts (on the fit's device and in its
    process, a ddp_spawn worker too) and dropped when it ends. The compiled callables live outside
    the module tree: state_dict keys, checkpoints and the stage cache are eager training's, and
    what runs the module after the fit (generation, evaluation, export) runs the eager nets."""

    TRAINED_NETS: tuple[str, ...] = ()
    compile_training: bool = False
    compile_backend: str = "inductor"

    def on_fit_start(self) -> None:
        compiled = {}
        if self.compile_training:
            compiled = {name: torch.compile(getattr(self, name), backend=self.compile_backend)
                        for name in self.TRAINED_NETS}
        self.__dict__["_compiled"] = compiled  # a plain attribute: not a submodule, not saved

    def on_fit_end(self) -> None:
        self.__dict__["_compiled"] = {}

    def train_net(self, name: str) -> nn.Module:
        """The net ``name`` as the training step runs it: compiled during a compiled fit."""
        compiled = self.__dict__.get("_compiled", {}).get(name)
        return compiled if compiled is not None else getattr(self, name)


def fused_if_cuda(params: Iterable[torch.Tensor]) -> dict:
    """Adam's keyword arguments for these parameters: ``fused=True`` where all of them are on a
    CUDA device (one kernel per step instead of several per tensor, and step counters kept on the
    device, so the step reads nothing back), the default elsewhere."""
    params = list(params)
    return {"fused": True} if params and all(p.device.type == "cuda" for p in params) else {}


def check_compiler(cuda: bool, key: str = "model.compile=true", off: str = "model.compile=false") -> None:
    """torch.compile writes and builds C++ (CPU) or Triton kernels, whose launchers are C (CUDA):
    say so in one line, before any training, where the compiler is missing."""
    if cuda:
        found = os.environ.get("CC") or next(
            (c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
        what = "a C compiler for Triton's kernel launchers (cc, gcc or clang; or set CC)"
    else:
        from torch._inductor import cpp_builder

        try:
            found = cpp_builder.get_cpp_compiler()
        except Exception:  # inductor's own error when none of its candidates is installed
            found = None
        what = "a C++ compiler (g++; or set CXX)"
    if not found:
        raise ConfigError(f"{key}: torch.compile needs {what} and none was found on this machine; "
                          f"install one (e.g. apt-get install g++) or use {off}")
