"""The processes of one job: started together and joined in one process group before any stage,
so that rank zero alone decides what the stage cache does and every rank follows it.

A job gets several processes in one of three ways, all resolved by Lightning's own cluster
environments and strategy choice (a probe Trainer built from ``cfg.trainer``):

- torchrun (RANK, LOCAL_RANK, GROUP_RANK, WORLD_SIZE) or srun (SLURM_PROCID, SLURM_LOCALID,
  SLURM_NODEID, SLURM_NTASKS) starts every process of every node itself;
- ``trainer.devices=N`` alone: Lightning starts the other processes of this node. It would do so
  inside the first ``Trainer.fit``; here it happens at the start of the job, so that every rank runs
  the job from the top and makes the same stage decisions at the same points;
- ``ddp_spawn``/``ddp_fork``: only this process runs the job and each Trainer forks its workers;
  nothing needs coordinating (and evaluation, whose results stay in the workers, runs here).

Rank zero's decisions reach the other ranks through small collectives on the default process
group (``broadcast``, ``all_gather``); without a process group they are plain returns.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from nightseg.core.errors import ConfigError

log = logging.getLogger(__name__)

# Lightning's strategy names by DDP start method; "<name>_find_unused_parameters_true" lets DDP
# step a module whose parameters do not all get gradients (the CycleGAN, see gan_strategy).
DDP_NAMES = {"popen": "ddp", "spawn": "ddp_spawn", "fork": "ddp_fork"}


@dataclass(frozen=True)
class World:
    """The processes a job's training stages run on."""

    size: int = 1  # processes that train together (devices x nodes); part of cache keys when > 1
    ddp: str | None = None  # the DDP flavour Lightning resolved ("ddp", "ddp_spawn", ...), or None
    spawns: bool = False  # each Trainer forks its own workers (ddp_spawn/ddp_fork)


def plan(trainer_kwargs: dict[str, Any]) -> tuple[World, Any]:
    """The World the job's Trainers will use, and Lightning's strategy for it (nothing started)."""
    probe = _probe_trainer(trainer_kwargs)
    strategy = probe.strategy
    size = probe.num_nodes * probe.num_devices
    _check_launch_matches(size)
    if size <= 1:
        return World(), strategy
    start_method = getattr(strategy, "_start_method", None)  # DDPStrategy's flavour (Lightning 2.x)
    ddp = DDP_NAMES.get(start_method) if start_method else None
    if start_method in ("spawn", "fork"):
        env = strategy.cluster_environment
        if probe.num_nodes > 1 or env.creates_processes_externally:
            raise ConfigError(
                f"trainer.strategy={trainer_kwargs.get('strategy')} starts its workers from one "
                "process per node and cannot span nodes or run under torchrun/srun; use "
                "trainer.strategy=ddp (README: Multi-GPU and clusters)")
        return World(size=size, ddp=ddp, spawns=True), strategy
    return World(size=size, ddp=ddp), strategy


def start(trainer_kwargs: dict[str, Any]) -> World:
    """Resolve how many processes the job's Trainers use, start the missing local ones and join
    all of them in the default process group. Call once, at the start of the job."""
    world, strategy = plan(trainer_kwargs)
    if world.size <= 1 or world.spawns:
        return world
    if strategy.launcher is not None:
        strategy.launcher.launch(lambda: None)  # this node's other processes, unless torchrun/srun
    strategy.setup_environment()  # joins the process group; later Trainers find it initialized
    log.info("rank %d of %d on %s (%s)", rank(), world.size, socket.gethostname(),
             world.ddp or type(strategy).__name__)
    return world


def _probe_trainer(trainer_kwargs: dict[str, Any]):
    """A Trainer that is never run: Lightning's own resolution of accelerator, devices, strategy
    and cluster environment, exactly as every stage's Trainer will see them."""
    import pytorch_lightning as pl

    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the device summary is printed by every stage's Trainer
    try:
        return pl.Trainer(**trainer_kwargs, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    finally:
        quiet.setLevel(level)


def _check_launch_matches(size: int) -> None:
    """torchrun/srun started more processes than the config trains on: each would run the whole
    job alone. (Lightning checks the other direction when the processes meet.)"""
    launched = _launched_world_size()
    if launched is not None and launched > 1 and size == 1:
        raise ConfigError(
            f"{launched} processes were launched (torchrun/srun) but trainer.devices x "
            "trainer.num_nodes is 1; set trainer.devices to the processes per node and "
            "trainer.num_nodes to the number of nodes")


def _launched_world_size() -> int | None:
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return int(os.environ["WORLD_SIZE"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_NTASKS"])
    return None


# ---- rank zero decides, every rank follows ----------------------------------------------------
def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_rank_zero() -> bool:
    """Whether this process is the job's global rank zero, the one that takes stage locks,
    publishes artefacts and writes the run directory (the one test of it in nightseg).

    Lightning's record of the rank: from the launcher's environment (RANK, SLURM_PROCID, ...) at
    start, set again by every strategy once its processes meet; so it holds before the process
    group exists too, and in a ``ddp_spawn`` worker.
    """
    from pytorch_lightning.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def broadcast(obj: Any) -> Any:
    """Rank zero's ``obj`` on every rank (any picklable object)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()


def seed_cuda_per_rank(global_rank: int) -> None:
    """CUDA generators of this rank's own: the stage's seed (``pl.seed_everything``, the same on
    every rank) plus the rank. Without it every rank's dropout masks on the GPU were the same.
    Rank zero keeps the seed itself, so one-GPU runs draw as before. Lazy where CUDA is not
    initialised yet (torch queues the call), so forking strategies can still fork."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is None or global_rank == 0:
        return
    import torch

    torch.cuda.manual_seed_all(int(seed) + global_rank)


def gan_strategy(strategy: Any, world: World) -> Any:
    """The Trainer strategy for a GAN stage: DDP with unused-parameter detection, whatever way DDP
    was chosen (strategy auto with several devices or nodes, ddp, ddp_spawn, ddp_fork). Each
    optimizer's step leaves the other networks' parameters without gradients, which plain DDP
    rejects at the first step."""
    if isinstance(strategy, str) and strategy in (*DDP_NAMES.values(), "ddp_notebook"):
        return f"{strategy}_find_unused_parameters_true"
    if world.size <= 1 or world.ddp is None:
        return strategy
    return f"{world.ddp}_find_unused_parameters_true"
