"""The CUDA paths a CPU can check: a GPU that torch cannot use stops the job, forking strategies
read the GPUs without initialising CUDA, resume checkpoints keep each rank's CUDA random state.
The tests marked ``cuda`` run the same paths for real where a GPU is there (make gpu-check)."""

import stat
from types import SimpleNamespace

import pytest
import torch

from nightseg.core.errors import ConfigError
from nightseg.infra import hardware, nvml

H100 = nvml.NvidiaGpus(("NVIDIA H100 80GB HBM3",) * 2, ((9, 0), (9, 0)), (12, 4))
V100 = nvml.NvidiaGpus(("Tesla V100-SXM2-16GB",), ((7, 0),), (12, 2))


@pytest.fixture
def driver_sees(monkeypatch):
    """The NVIDIA driver (NVML) sees ``gpus``; each probe is recorded."""
    calls = []

    def install(gpus):
        def probe():
            calls.append(1)
            return gpus
        monkeypatch.setattr(hardware.nvml, "probe", probe)
        return calls

    return install


# ---- item 6: a GPU the driver sees but torch does not ------------------------------------------
def test_auto_accelerator_stops_where_the_driver_sees_a_gpu_torch_cannot_use(monkeypatch, driver_sees):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = driver_sees(H100)
    with pytest.raises(ConfigError) as e:
        hardware.resolve_trainer({"accelerator": "auto", "precision": "auto"})
    msg = str(e.value)
    assert "\n" not in msg and "2 x NVIDIA H100 80GB HBM3" in msg and "the driver supports CUDA 12.4" in msg
    assert "--index-url https://download.pytorch.org/whl/cu126" in msg and "trainer.accelerator=cpu" in msg
    # Insisting on the CPU, or hiding the GPUs on purpose: no stop, and no probe for the first.
    calls.clear()
    assert hardware.resolve_trainer({"accelerator": "cpu"}) == {"accelerator": "cpu"}
    assert not calls
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hardware.resolve_trainer({"accelerator": "auto"})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    driver_sees(None)  # no NVIDIA GPU on the node: the CPU, as before
    hardware.resolve_trainer({"accelerator": "auto"})


def test_the_driver_probe_reads_nvidia_smi_where_nvml_is_missing(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1234)'\n"
                   "echo 'GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-5678)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nvml, "_from_nvml", lambda: None)
    nvml.probe.cache_clear()
    try:
        seen = nvml.probe()
    finally:
        nvml.probe.cache_clear()
    assert seen.names == ("NVIDIA A100-SXM4-80GB",) * 2 and seen.capabilities is None
    assert seen.source == "nvidia-smi" and seen.describe() == "2 x NVIDIA A100-SXM4-80GB"


# ---- item 8: forking strategies ----------------------------------------------------------------
@pytest.fixture
def cuda_that_must_not_initialise(monkeypatch):
    """Two visible CUDA devices whose torch queries (which would initialise CUDA) fail the test."""

    def initialises(*args, **kwargs):
        raise AssertionError("torch.cuda was asked for device properties: that initialises CUDA")

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", initialises)
    monkeypatch.setattr(torch.cuda, "get_device_name", initialises)


@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_notebook", "ddp_fork_find_unused_parameters_true"])
def test_forking_strategies_read_the_gpus_without_initialising_cuda(cuda_that_must_not_initialise,
                                                                     driver_sees, strategy):
    trainer = {"accelerator": "auto", "devices": 2, "strategy": strategy, "precision": "auto"}
    driver_sees(H100)
    assert hardware.resolve_trainer(trainer)["precision"] == "bf16-mixed"
    assert hardware.device_summary("auto") == "cuda: NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3"
    driver_sees(V100)
    assert hardware.resolve_trainer(trainer)["precision"] == "16-mixed"
    assert hardware.resolve_trainer({**trainer, "precision": "bf16-mixed"})["precision"] == "16-mixed"
    driver_sees(None)  # no NVML: fp16 autocast, which every GPU runs
    assert hardware.resolve_trainer(trainer)["precision"] == "16-mixed"
    assert not torch.cuda.is_initialized()


def test_other_strategies_ask_torch(cuda_that_must_not_initialise, driver_sees):
    driver_sees(H100)
    with pytest.raises(AssertionError, match="initialises CUDA"):
        hardware.resolve_trainer({"accelerator": "auto", "devices": 2, "strategy": "ddp",
                                  "precision": "auto"})


def test_forks():
    assert hardware.forks("ddp_fork") and hardware.forks("ddp_notebook_find_unused_parameters_false")
    assert not any(map(hardware.forks, ("ddp", "ddp_spawn", "auto", None)))


def test_deterministic_true_on_cuda_names_every_kernel_without_a_deterministic_backward():
    with pytest.raises(ConfigError) as e:
        hardware.check_deterministic(True, cuda=True)
    for kernel in ("bilinear upsampling", "adaptive average pooling", "reflection_pad2d", "NLLLoss",
                   "trainer.deterministic=warn"):
        assert kernel in str(e.value)


# ---- item 10: CUDA random states in resume checkpoints, a CUDA seed per rank -------------------
def _trainer(device: str, rank: int = 0):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=rank)


def test_resume_checkpoints_keep_every_ranks_cuda_generators(monkeypatch):
    from nightseg.training.resume import KEY, ResumeState

    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    checkpoint = {}
    ResumeState().on_save_checkpoint(_trainer("cuda:0"), SimpleNamespace(), checkpoint)
    assert [[s.tolist() for s in rank] for rank in checkpoint[KEY]["cuda"]] == [[[1, 2], [3, 4]]]

    # Two ranks' states saved; rank 1 gets its own back, on each of its devices.
    other = [torch.tensor([5, 6], dtype=torch.uint8), torch.tensor([7, 8], dtype=torch.uint8)]
    checkpoint[KEY]["cuda"] = [states, other]
    restored = {}
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.update({device: s.tolist()}))
    ResumeState().on_load_checkpoint(_trainer("cuda:1", rank=1), SimpleNamespace(), checkpoint)
    assert restored == {0: [5, 6], 1: [7, 8]}


def test_cpu_stages_leave_cuda_alone(monkeypatch):
    from nightseg.training.resume import KEY, ResumeState

    def touches(*args, **kwargs):
        raise AssertionError("a CPU stage asked torch.cuda for its generators")

    for name in ("get_rng_state_all", "set_rng_state", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, touches)
    callback, checkpoint = ResumeState(), {}
    callback.setup(_trainer("cpu", rank=1), SimpleNamespace(), "fit")
    callback.on_save_checkpoint(_trainer("cpu"), SimpleNamespace(), checkpoint)
    assert checkpoint[KEY]["cuda"] is None
    callback.on_load_checkpoint(_trainer("cpu"), SimpleNamespace(), checkpoint)


def test_each_rank_seeds_its_cuda_generators_apart(monkeypatch):
    from nightseg.training.resume import ResumeState

    seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeds.append)
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    for rank in range(3):
        ResumeState().setup(_trainer(f"cuda:{rank}", rank), SimpleNamespace(), "fit")
    assert seeds == [8, 9]  # rank zero keeps seed_everything's 7: one-GPU runs draw as before


@pytest.mark.cuda
def test_a_resumed_stage_draws_the_same_dropout_masks_on_cuda():
    """For real on a GPU: the saved states give back the very masks the run would have drawn."""
    from nightseg.training.resume import ResumeState

    checkpoint, trainer = {}, _trainer("cuda:0")
    ResumeState().on_save_checkpoint(trainer, SimpleNamespace(), checkpoint)
    x = torch.ones(1 << 16, device="cuda")
    expected = torch.nn.functional.dropout(x, 0.5)
    ResumeState().on_load_checkpoint(trainer, SimpleNamespace(), checkpoint)
    assert torch.equal(torch.nn.functional.dropout(x, 0.5), expected)


# ---- item 11: hydra/launcher=gpus, one sweep job per GPU ---------------------------------------
def test_the_gpus_launcher_composes_with_one_worker_per_visible_gpu(monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nightseg.infra import gpu_slots  # registers the launcher's resolver, as nightseg.run does
    from tests.conftest import CONF_DIR

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=gpus", "strategy=augment"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["backend"] == "loky"
    assert launcher["n_jobs"] == 3
    assert cfg.hydra.runtime.choices["hydra/launcher"] == gpu_slots.LAUNCHER
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots._gpu_count() == 1  # no GPU: one job at a time, on the CPU


def test_each_worker_of_the_gpus_launcher_claims_a_gpu_of_its_own(monkeypatch, tmp_path):
    from nightseg.infra import gpu_slots

    held = []  # the workers' locks stay held while the "workers" live

    def new_worker(visible="0,1"):
        monkeypatch.setattr(gpu_slots, "_held", None)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        gpu = gpu_slots.one_gpu_per_job("gpus", 1, tmp_path)
        held.append(gpu_slots._held)
        return gpu

    assert gpu_slots.one_gpu_per_job("joblib", 4, tmp_path) is None  # other launchers: untouched
    assert new_worker() == "0"
    assert gpu_slots.os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpu_slots.one_gpu_per_job("gpus", 1, tmp_path) == "0"  # the same worker's next job
    assert new_worker() == "1"
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs to at most 2"):
        new_worker()
    held[0][1].release()  # a worker ended: its GPU is free again
    assert new_worker() == "0"
    with pytest.raises(ConfigError, match="trainer.devices=2"):
        gpu_slots.one_gpu_per_job("gpus", 2, tmp_path)


def test_a_forking_stage_after_the_process_used_cuda_stops_with_the_fix(monkeypatch):
    """ddp_fork: generating night images (augment) uses the GPU in this process, after which
    Lightning cannot fork the segmenter's workers; the stage stops with one line naming the fix."""
    from nightseg.infra.distributed import World
    from nightseg.infra.trainer import make_trainer

    job = SimpleNamespace(world=World(size=2, ddp="ddp_fork", spawns=True),
                          trainer_args=lambda: {"strategy": "ddp_fork", "devices": 2})
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_fork cannot fork the segmenter"):
        make_trainer(job, "segmenter")


# ---- for real, where a GPU is there (make gpu-check) -------------------------------------------
@pytest.mark.cuda
def test_nvml_sees_the_gpus_torch_sees():
    nvml.probe.cache_clear()
    seen = nvml.probe()
    assert seen is not None and seen.source == "NVML"
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    assert caps <= set(seen.capabilities)
    assert seen.driver_cuda is not None and seen.driver_cuda >= (int(torch.version.cuda.split(".")[0]), 0)
    hardware.check_gpu_visible("auto")  # torch sees them: no stop


@pytest.mark.cuda
def test_resolving_a_forking_strategy_leaves_cuda_uninitialised():
    """In a fresh process (this one may have used CUDA already), as ddp_fork needs it."""
    import subprocess
    import sys

    code = ("import torch; from nightseg.infra import hardware; "
            "out = hardware.resolve_trainer({'accelerator': 'auto', 'strategy': 'ddp_fork', "
            "'devices': 1, 'precision': 'auto'}); print(out['precision'], torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    precision, initialised = out.stdout.split()
    assert initialised == "False"
    assert precision == hardware.auto_precision(cuda=True)[0]


@pytest.mark.cuda
def test_the_confusion_matrix_on_cuda_under_deterministic_algorithms():
    from nightseg.core.metrics import ConfusionMatrix

    g = torch.Generator().manual_seed(0)
    target, pred = (torch.randint(0, 19, (2, 64, 96), generator=g) for _ in range(2))
    target[:, :8] = 255
    cpu = ConfusionMatrix(19, ignore_index=255)
    cpu.update(pred, target)
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)  # not warn_only: an op without a deterministic kernel raises
    try:
        gpu = ConfusionMatrix(19, ignore_index=255).cuda()
        gpu.update(pred.cuda(), target.cuda())
        assert torch.equal(gpu.compute().cpu(), cpu.compute())
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
