"""GPU choices made without a GPU: the decision functions, fed a faked CUDA device."""

import logging

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator
from torch.utils.data import DataLoader, Dataset

from nightseg import hardware
from nightseg.bench_timing import autocast_dtype, training_precision
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule, TranslationDataModule, init_worker
from nightseg.data.io import batch_to_float
from nightseg.utils import ConfigError
from tests.conftest import compose_cfg


@pytest.fixture
def fake_gpu(monkeypatch):
    """One visible CUDA device of the given compute capability. Like the real torch on a V100,
    is_bf16_supported() answers True there (bf16 is emulated)."""

    def install(capability: tuple[int, int], name: str = "Tesla V100-SXM2-16GB"):
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return install


@pytest.mark.parametrize("capability, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                               ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bench_counts_emulated_bf16_as_missing(fake_gpu, capability, dtype):
    fake_gpu(capability)
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda) == dtype
    assert training_precision(cuda, optimized=True) == ("16-mixed" if dtype == torch.float16
                                                        else "bf16-mixed")
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16


def test_bf16_mixed_becomes_16_mixed_on_a_v100_and_says_so(fake_gpu, caplog):
    fake_gpu((7, 0))
    with caplog.at_level(logging.WARNING):
        assert hardware.choose_precision("bf16-mixed", cuda=True) == "16-mixed"
    assert "Tesla V100-SXM2-16GB has no native bf16" in caplog.text
    assert hardware.choose_precision("32-true", cuda=True) == "32-true"
    assert hardware.choose_precision("bf16-mixed", cuda=False) == "bf16-mixed"
    fake_gpu((8, 6), "NVIDIA A10")
    assert hardware.choose_precision("bf16-mixed", cuda=True) == "bf16-mixed"


def test_resolved_trainer_on_a_v100(fake_gpu):
    fake_gpu((7, 5), "Tesla T4")
    trainer = OmegaConf.to_container(compose_cfg().trainer)
    out = hardware.resolve_trainer(trainer)
    assert out["precision"] == "16-mixed" and out["benchmark"] is True
    assert hardware.resolve_trainer({**trainer, "deterministic": "warn"})["benchmark"] is False
    assert hardware.resolve_trainer({**trainer, "benchmark": False})["benchmark"] is False
    with pytest.raises(ConfigError, match="trainer.deterministic=warn"):
        hardware.resolve_trainer({**trainer, "deterministic": True})


def test_resolved_trainer_on_the_cpu_is_the_config():
    """What single-process CPU runs pass to Lightning (and their cache keys) does not change."""
    for overrides in ([], ["trainer.deterministic=true"], ["trainer.precision=32-true"]):
        trainer = OmegaConf.to_container(compose_cfg(overrides + ["trainer.accelerator=cpu"]).trainer)
        assert hardware.resolve_trainer(trainer) == trainer


def test_uses_cuda(fake_gpu):
    assert not hardware.uses_cuda("cpu") and not hardware.uses_cuda(CPUAccelerator())
    assert hardware.uses_cuda(CUDAAccelerator()) and hardware.uses_cuda("gpu")
    fake_gpu((8, 0))
    assert hardware.uses_cuda("auto")


class _FakeTrainer:
    world_size, global_rank = 1, 0

    def __init__(self, accelerator):
        self.accelerator = accelerator


def _write_image(path, size=(24, 16)):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
    return path


def _sets(tmp_path):
    img = _write_image(tmp_path / "a.png")
    label = tmp_path / "a_l.png"
    Image.fromarray(np.full((16, 24), 3, np.uint8)).save(label)
    return SampleSet("s", [Sample(img, label)] * 4), SampleSet("n", [Sample(img)] * 4)


def test_loaders_pin_memory_for_cuda_only(tmp_path):
    labelled, images = _sets(tmp_path)
    for accelerator, pinned in ((CUDAAccelerator(), True), (CPUAccelerator(), False)):
        seg = SegmentationDataModule([labelled], val_sets=[labelled], batch_size=2, hflip=False)
        tra = TranslationDataModule(images, images, batch_size=2)
        seg.trainer = tra.trainer = _FakeTrainer(accelerator)
        loaders = [seg.train_dataloader(), *seg.val_dataloader(), tra.train_dataloader()]
        assert [dl.pin_memory for dl in loaders] == [pinned] * 3


def test_workers_send_uint8_and_the_device_gets_floats(tmp_path):
    labelled, images = _sets(tmp_path)
    seg = SegmentationDataModule([labelled], batch_size=2, hflip=False)
    batch = next(iter(seg.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8
    expected = batch["image"].float() / 255
    out = seg.on_after_batch_transfer(batch, 0)
    assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.long
    assert torch.equal(out["image"], expected) and set(out["mask"].unique().tolist()) == {3}
    tra = TranslationDataModule(images, images, batch_size=2)
    pair = next(iter(tra.train_dataloader()))
    assert pair["day"].dtype == pair["night"].dtype == torch.uint8
    assert batch_to_float(pair)["night"].dtype == torch.float32


class _OpenCVThreads(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return cv2.getNumThreads()


def test_loader_workers_run_opencv_single_threaded():
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)  # what a worker inherits from this process without init_worker
    try:
        plain = DataLoader(_OpenCVThreads(), num_workers=1)
        assert next(iter(plain)).item() == 2
        ours = DataLoader(_OpenCVThreads(), num_workers=1, worker_init_fn=init_worker)
        assert next(iter(ours)).item() == 1  # setNumThreads(0): no thread pool of its own
    finally:
        cv2.setNumThreads(before)
