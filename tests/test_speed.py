"""Training-speed options (nightseg.models.speed): model.compile compiles the nets a training step
runs for the fit only, with the checkpoint's keys and the trained weights of eager training; fused
Adam on CUDA only; a missing compiler is one line before any training."""

from __future__ import annotations

import types

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from nightseg.core.errors import ConfigError
from nightseg.models import speed
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.segmentation import SegmentationModule
from nightseg.training.config import validate
from tests.conftest import SMALL_D, SMALL_G, UnpairedImages, compose_cfg, cpu_trainer


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(3, 32, 32, generator=g),
                "mask": torch.randint(0, 3, (32, 32), generator=g)}


def _build(kind: str, compiled: bool) -> pl.LightningModule:
    torch.manual_seed(0)
    if kind == "segmenter":
        module = SegmentationModule(num_classes=3, max_epochs=1, channels_last=False)
    else:
        module = CycleGANModule(SMALL_G, SMALL_D, epochs_constant=1, epochs_decay=0, pool_size=0,
                                channels_last=False)
    module.compile_training = compiled
    return module


class _Compiled(torch.nn.Module):
    """A stand-in for torch.compile's result that counts its calls (no compiling: cheap)."""

    calls = 0

    def __init__(self, net, **_):
        super().__init__()
        self.net = net

    def forward(self, *args):
        type(self).calls += 1
        return self.net(*args)


def _fit(kind: str, compiled: bool) -> dict:
    module = _build(kind, compiled)
    pl.seed_everything(0)
    data = _Images() if kind == "segmenter" else UnpairedImages(2, (32, 32))
    # Two batches: the CycleGAN steps two optimizers per batch.
    cpu_trainer(max_steps=2 if kind == "segmenter" else 4).fit(
        module, DataLoader(data, batch_size=2 if kind == "segmenter" else 1))
    assert all(module.train_net(n) is getattr(module, n) for n in module.TRAINED_NETS)  # eager again
    return module.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["segmenter", "translator"])
def test_model_compile_runs_the_training_step_through_the_compiled_nets(kind, monkeypatch):
    monkeypatch.setattr(speed.torch, "compile", _Compiled)
    monkeypatch.setattr(_Compiled, "calls", 0)
    eager = _fit(kind, False)
    assert _Compiled.calls == 0
    compiled = _fit(kind, True)
    # Per batch: the segmenter's net once; each CycleGAN net 3 times (critics: once for the generators).
    assert _Compiled.calls == (2 if kind == "segmenter" else 2 * 4 * 3)
    assert list(compiled) == list(eager)  # the checkpoint's keys


@pytest.mark.slow
def test_compiled_training_trains_the_same_weights_under_the_same_keys(monkeypatch):
    """torch.compile with Dynamo's eager backend (tracing and guards without inductor's code
    generation: seconds, and bit-exact): eager training's weights under the same keys."""
    monkeypatch.setattr(speed.CompiledTraining, "compile_backend", "eager")
    eager, compiled = _fit("translator", False), _fit("translator", True)
    assert list(compiled) == list(eager)
    for key, value in eager.items():
        assert torch.equal(compiled[key], value), key


def test_fused_adam_only_where_every_parameter_is_on_cuda():
    on = types.SimpleNamespace(device=torch.device("cuda", 0))
    assert speed.fused_if_cuda([on, on]) == {"fused": True}
    assert speed.fused_if_cuda([on, torch.zeros(1)]) == {}
    assert speed.fused_if_cuda([]) == {}
    module = SegmentationModule(num_classes=3, max_steps=10, max_epochs=None)
    module.trainer = types.SimpleNamespace(estimated_stepping_batches=10)
    assert not module.configure_optimizers()["optimizer"].defaults.get("fused")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_adam_on_cuda():
    module = CycleGANModule(SMALL_G, SMALL_D).cuda()
    (opt_g, opt_d), _ = module.configure_optimizers()
    assert opt_g.defaults["fused"] and opt_d.defaults["fused"]


def test_model_compile_without_a_compiler_is_one_line_before_training(monkeypatch):
    from torch._inductor import cpp_builder

    def no_compiler():
        raise RuntimeError("no g++")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    cfg = compose_cfg(["trainer.accelerator=cpu"])
    validate(cfg)  # model.compile=false: nothing to check
    with pytest.raises(ConfigError, match=r"^model.compile=true: torch.compile needs a C\+\+ compiler"):
        validate(compose_cfg(["trainer.accelerator=cpu", "model.compile=true"]))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs a C compiler for Triton"):
        speed.check_compiler(cuda=True)
    with pytest.raises(ConfigError, match=r"^model.compile=yes: use true"):
        validate(compose_cfg(["trainer.accelerator=cpu", "model.compile=yes"]))
