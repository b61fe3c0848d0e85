"""Device choices made without the device: the decision functions, fed a faked CUDA device or CPU
class, and this machine's CPU held to AVX2 for real."""

import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator
from torch.utils.data import DataLoader, Dataset

from nightseg.core.errors import ConfigError
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule, TranslationDataModule, init_worker
from nightseg.data.io import batch_to_float
from nightseg.inference.device import inference_autocast_dtype as predict_dtype
from nightseg.infra import hardware
from nightseg.tools.bench.timing import autocast_dtype, training_precision
from nightseg.training.specs import trainer_spec
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


# The instruction sets torch's cpuinfo reports for each class (AVX-512 bf16: AMD Zen 4, Intel
# Cooper Lake; AMX: Sapphire Rapids and later; AVX2 only: most laptops, AMD Zen 2/3).
CPUS = {
    "baseline": dict(avx2=False, avx512=False, bf16=False, amx=False),  # and every non-x86 CPU
    "avx2": dict(avx2=True, avx512=False, bf16=False, amx=False),
    "avx512": dict(avx2=True, avx512=True, bf16=False, amx=False),  # Skylake-X, Ice Lake
    "avx512_bf16": dict(avx2=True, avx512=True, bf16=True, amx=False),
    "amx": dict(avx2=True, avx512=True, bf16=True, amx=True),
}


@pytest.fixture
def fake_cpu(monkeypatch):
    """A CPU of the given class, with optional ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA limits."""

    def install(name: str, aten: str | None = None, onednn: str | None = None):
        f = CPUS[name]
        monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: f["avx2"])
        monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: f["avx512"])
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: f["bf16"])
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: f["amx"])
        native = "AVX512" if f["avx512"] else ("AVX2" if f["avx2"] else "DEFAULT")
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten or native)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if onednn is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    return install


@pytest.mark.parametrize("cpu, aten, onednn, tier, precision", [
    ("avx2", None, None, "avx2", "32-true"),
    ("baseline", None, None, "baseline", "32-true"),
    ("avx512", None, None, "avx512", "32-true"),
    ("avx512_bf16", None, None, "avx512_bf16", "bf16-mixed"),
    ("amx", None, None, "amx", "bf16-mixed"),
    ("amx", None, "ALL", "amx", "bf16-mixed"),
    ("amx", None, "AVX512_CORE_BF16", "avx512_bf16", "bf16-mixed"),
    # held to AVX2, as the tests do on an AVX-512 machine to stand in for a laptop
    ("avx512_bf16", "AVX2", "AVX2", "avx2", "32-true"),
    ("avx512_bf16", None, "AVX2", "avx2", "32-true"),
    ("amx", "AVX2", None, "avx2", "32-true"),
    ("amx", None, "AVX512_CORE", "avx512", "32-true"),
])
def test_auto_precision_follows_the_cpu_class(fake_cpu, cpu, aten, onednn, tier, precision):
    fake_cpu(cpu, aten, onednn)
    assert hardware.cpu_class().tier == tier
    assert hardware.auto_precision(cuda=False)[0] == precision
    assert hardware.choose_precision("auto", cuda=False) == precision
    trainer = OmegaConf.to_container(compose_cfg(["trainer.accelerator=cpu"]).trainer)
    assert trainer["precision"] == "auto"  # the default
    assert hardware.resolve_trainer(trainer)["precision"] == precision
    assert trainer_spec(compose_cfg(["trainer.accelerator=cpu"])) == {"precision": precision}
    # the bench's auto path and predict's precision=auto make the same choice
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    assert autocast_dtype(torch.device("cpu")) == dtype
    assert training_precision(torch.device("cpu"), optimized=True) == precision
    assert training_precision(torch.device("cpu"), optimized=False) == "32-true"
    assert predict_dtype("auto", torch.device("cpu")) == dtype
    assert predict_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: kept
    assert predict_dtype("32", torch.device("cpu")) is None


def test_the_choice_and_a_held_cpu_are_logged_once(fake_cpu, caplog, monkeypatch):
    monkeypatch.setattr(hardware, "_said", set())
    fake_cpu("avx512_bf16", "AVX2", "AVX2")
    with caplog.at_level(logging.INFO, logger="nightseg.infra.hardware"):
        for _ in range(3):  # every stage's Trainer resolves it again
            hardware.choose_precision("auto", cuda=False)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["trainer.precision=auto: 32-true (CPU class avx2 (no native bf16, held to it by "
                     "ATEN_CPU_CAPABILITY=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 on avx512_bf16 hardware))"]


@pytest.mark.parametrize("cpu, warned", [("avx2", True), ("avx512", True), ("avx512_bf16", False),
                                         ("amx", False)])
def test_explicit_bf16_is_respected_and_warned_where_emulated(fake_cpu, caplog, monkeypatch, cpu, warned):
    monkeypatch.setattr(hardware, "_said", set())
    fake_cpu(cpu)
    with caplog.at_level(logging.WARNING, logger="nightseg.infra.hardware"):
        for precision in ("bf16-mixed", "bf16-mixed", "32-true"):
            assert hardware.choose_precision(precision, cuda=False) == precision
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert warnings[0].startswith(f"trainer.precision=bf16-mixed on a CPU class {cpu} (no native "
                                      "bf16): bf16 is emulated there, about 10x slower than fp32")


@pytest.mark.parametrize("capability, precision", [((7, 0), "16-mixed"), ((7, 5), "16-mixed"),
                                                   ((8, 0), "bf16-mixed"), ((9, 0), "bf16-mixed")])
def test_auto_precision_on_gpus(fake_gpu, capability, precision):
    fake_gpu(capability)
    assert hardware.choose_precision("auto", cuda=True) == precision
    trainer = OmegaConf.to_container(compose_cfg(["trainer.accelerator=gpu"]).trainer)
    assert hardware.resolve_trainer(trainer)["precision"] == precision


@pytest.mark.slow
def test_a_cpu_held_to_avx2_resolves_to_fp32_for_real():
    """This machine's own CPU under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (on an AVX2-only
    CPU the same without the variables): what torch reports there, not a fake, says fp32."""
    code = ("from nightseg.infra import hardware; c = hardware.cpu_class(); "
            "print(c.tier, hardware.auto_precision(cuda=False)[0], hardware.device_summary('cpu'))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[:2] in (["avx2", "32-true"], ["baseline", "32-true"])


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


def test_resolved_trainer_on_the_cpu_is_the_config_with_auto_resolved():
    """What single-process CPU runs pass to Lightning (and their cache keys): the config as it is,
    but for trainer.precision=auto."""
    for overrides in (["trainer.deterministic=true", "trainer.precision=32-true"],
                      ["trainer.precision=32-true"], ["trainer.precision=bf16-mixed"]):
        trainer = OmegaConf.to_container(compose_cfg(overrides + ["trainer.accelerator=cpu"]).trainer)
        assert hardware.resolve_trainer(trainer) == trainer
    trainer = OmegaConf.to_container(compose_cfg(["trainer.accelerator=cpu"]).trainer)
    assert hardware.resolve_trainer(trainer) == {**trainer, "precision": hardware.auto_precision(False)[0]}


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


@pytest.mark.parametrize("cores, cuda, per_node, workers", [
    (2, False, 1, 0), (4, False, 1, 0), (16, False, 1, 2),  # CPU jobs: workers stall the threads
    (2, True, 1, 1), (16, True, 1, 8), (64, True, 1, 8), (16, True, 4, 3), (8, True, 8, 1),
])
def test_loader_workers_auto(monkeypatch, cores, cuda, per_node, workers):
    monkeypatch.setattr(hardware, "usable_cores", lambda: cores)
    assert hardware.loader_workers("auto", cuda, per_node) == workers
    assert hardware.loader_workers(3, cuda, per_node) == 3  # a number is kept


def test_a_job_resolves_data_num_workers_auto_before_any_loader(monkeypatch, tmp_path):
    from nightseg.infra.job import Job

    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    cfg = compose_cfg(["trainer.accelerator=cpu"])
    assert cfg.data.num_workers == "auto"
    Job(cfg=cfg, run_dir=tmp_path, tracker=None, catalog=None)
    assert cfg.data.num_workers == 0
    cfg = compose_cfg(["trainer.accelerator=cpu", "data.num_workers=3"])
    Job(cfg=cfg, run_dir=tmp_path, tracker=None, catalog=None)
    assert cfg.data.num_workers == 3


@pytest.mark.parametrize("cpu, cuda, expected", [("avx2", False, False), ("avx512", False, False),
                                                 ("avx512_bf16", False, True), ("amx", False, True),
                                                 ("avx2", True, True)])
def test_segmenter_layout_auto_follows_the_class(fake_cpu, cpu, cuda, expected):
    """ERF-PSPNet trains in channels_last where bf16 is native, NCHW on the fp32 CPU classes; the
    resolved bool is what the module keeps (and, through the job, what its cache key holds)."""
    from nightseg.infra.job import Job
    from nightseg.models.segmentation import SegmentationModule

    fake_cpu(cpu)
    assert hardware.resolve_channels_last("auto", cuda) is expected
    assert hardware.resolve_channels_last(True, cuda) is True  # asked for: kept
    if not cuda:
        assert SegmentationModule(num_classes=19, channels_last="auto").hparams.channels_last is expected
        cfg = compose_cfg(["trainer.accelerator=cpu"])
        assert cfg.model.segmenter.channels_last == "auto"
        Job(cfg=cfg, run_dir=".", tracker=None, catalog=None)
        assert cfg.model.segmenter.channels_last is expected
