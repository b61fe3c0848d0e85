"""What a resume checkpoint must hold beyond Lightning's own state, so that a stage killed after a
checkpoint and resumed trains exactly as the uninterrupted run would have (trainer.deterministic=
true): the global random states (torch, numpy, Python: dropout masks, the CycleGAN history pool's
draws), on CUDA every rank's CUDA generators (dropout masks on the GPU), and the CycleGAN history
pools' images.
Lightning restores weights, optimizers, schedulers and loop counters but none of these; without
them the fault-injection matrix (python -m nightseg.faults) found a resumed translator's metrics
differing from an uninterrupted run's.

The random states go back when the checkpoint is loaded, before Lightning builds the training
loader. On CUDA each rank draws from CUDA generators of its own
(:func:`nightseg.infra.distributed.seed_cuda_per_rank` at setup: the ranks' dropout masks differ),
and each rank gets its own saved states back. The data side is the DataModules' state
(nightseg.data.datamodules): the training order's seed, its epoch and the batches of that epoch
already trained on, so a resume in the middle of an epoch (a SIGTERM's checkpoint, a step-budget
one) goes on with the next batch of the same order, each sample augmented from its own seed.
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

from nightseg.infra import distributed

KEY = "nightseg_resume"


def _pools(module: pl.LightningModule) -> dict:
    return {name: pool for name, pool in vars(module).items() if name.startswith("pool_")
            and hasattr(pool, "images")}


class ResumeState(pl.Callback):
    """Saves and restores the random and buffered state listed in the module docstring."""

    def __init__(self):
        self._pools: dict | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if _on_cuda(trainer):  # before a resume's states are loaded, which replace these
            distributed.seed_cuda_per_rank(trainer.global_rank)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint[KEY] = {
            "torch": torch.get_rng_state(),
            # Every rank's CUDA generators, in rank order (Lightning saves on every rank and
            # writes rank zero's checkpoint; a collective, as saving already is).
            "cuda": (distributed.all_gather([s.cpu() for s in torch.cuda.get_rng_state_all()])
                     if _on_cuda(trainer) else None),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate(),
            "pools": {name: [img.cpu() for img in pool.images] for name, pool in _pools(pl_module).items()},
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        state = checkpoint.get(KEY)
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        cuda = state.get("cuda")
        if cuda and _on_cuda(trainer) and trainer.global_rank < len(cuda):
            for device, rng in enumerate(cuda[trainer.global_rank][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(rng, device)
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(_tuples(state["python"]))
        self._pools = state["pools"]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved, self._pools = self._pools, None
        for name, pool in _pools(pl_module).items() if saved is not None else ():
            pool.images = [img.to(pl_module.device) for img in saved.get(name, [])]


def _on_cuda(trainer: pl.Trainer) -> bool:
    """Whether the stage trains on CUDA (known before the module is moved there)."""
    return trainer.strategy.root_device.type == "cuda"


def _tuples(obj):
    """random.setstate wants back the tuples that a checkpoint round trip may have made lists."""
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list | tuple) else obj
