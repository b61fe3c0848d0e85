"""Waits for the device in a training step: every read of a tensor's value on the host (item,
bool, float, tolist, ...) and every collective drains a GPU's queue of work. A stage's Trainer
(nightseg.training.stages._fit, with all its callbacks) may read values and run its one collective
only on the steps Lightning logs (trainer.log_every_n_steps), where the logged values are read
anyway; counted here on the CPU, with the collectives of a 2-process job stood in for."""

from __future__ import annotations

import collections
import sys

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from nightseg.core.errors import TrainingError
from nightseg.infra import preemption
from nightseg.infra.job import Job
from nightseg.infra.tracking import CSVTracker
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.segmentation import SegmentationModule
from nightseg.training import stages
from tests.conftest import SMALL_D, SMALL_G, UnpairedImages, compose_cfg

pytestmark = pytest.mark.slow

READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "cpu")
COLLECTIVES = ("all_reduce", "broadcast", "barrier", "all_gather", "all_gather_object",
               "broadcast_object_list", "reduce")
EVERY = 3  # trainer.log_every_n_steps
STEPS = 6
# On a logged step: the agreement (one read, one collective), the logger's values (one read
# each: the segmenter logs train/loss, the CycleGAN five losses and train/loss_g) and the progress
# bar's loss. On every other step: nothing.
LOGGED = {"segmenter": 1, "translator": 6}


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 2 * STEPS

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(3, 32, 32, generator=g),
                "mask": torch.randint(0, 3, (32, 32), generator=g)}


class _Data(pl.LightningDataModule):
    def __init__(self, dataset, batch_size):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size)


class _Counter(pl.Callback):
    """Per training step (from its batch start to the next one, or to the epoch's end hooks):
    the host reads made outside torch.optim (Adam's step counters live on the CPU unless the
    optimizer is fused or capturable, so reading them waits for nothing) and the collectives."""

    def __init__(self):
        self.step: int | None = None
        self.reads: dict[int, list[str]] = collections.defaultdict(list)
        self.collectives: dict[int, list[str]] = collections.defaultdict(list)

    def on_train_start(self, trainer, pl_module):
        # Lightning's own per-step broadcast of its stop flag (DDP only) is replaced by nothing.
        self.step = -1
        trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor()
        self.step = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = batch_idx

    def on_train_epoch_end(self, trainer, pl_module):
        self.step = None


def _instrument(monkeypatch, counter: _Counter) -> None:
    for name in READS:
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            if counter.step is not None and "torch/optim/" not in caller.replace("\\", "/"):
                counter.reads[counter.step].append(f"{_name} {caller}:{sys._getframe(1).f_lineno}")
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    for name in COLLECTIVES:
        def collective(*a, _name=name, **k):
            if counter.step is not None:
                counter.collectives[counter.step].append(_name)

        monkeypatch.setattr(dist, name, collective)
    monkeypatch.setattr(preemption, "_multiprocess", lambda: True, raising=False)  # 2 processes


def _job(tmp_path, *overrides: str) -> Job:
    cfg = compose_cfg(["experiment=smoke", "logger=csv", f"paths.cache_dir={tmp_path}/c",
                       "trainer.accelerator=cpu", "trainer.precision=32-true",
                       f"trainer.log_every_n_steps={EVERY}", *overrides])
    return Job(cfg=cfg, run_dir=tmp_path, tracker=CSVTracker(save_dir=tmp_path), catalog=None)


def _module_and_data(kind: str):
    torch.manual_seed(0)
    if kind == "segmenter":
        return SegmentationModule(num_classes=3, max_epochs=1, channels_last=False), _Data(_Images(), 2)
    module = CycleGANModule(generator=SMALL_G, discriminator=SMALL_D, epochs_constant=1, epochs_decay=0,
                            channels_last=False)
    return module, _Data(UnpairedImages(STEPS, (32, 32)), 1)


@pytest.mark.parametrize("kind", ["segmenter", "translator"])
def test_a_stage_waits_for_the_device_only_on_the_steps_it_logs(tmp_path, monkeypatch, kind):
    counter = _Counter()
    real_make_trainer = stages.make_trainer
    monkeypatch.setattr(stages, "make_trainer", lambda job, stage, callbacks=(), **kw: real_make_trainer(
        job, stage, callbacks=[counter, *callbacks], **kw))
    module, data = _module_and_data(kind)
    _instrument(monkeypatch, counter)
    stages._fit(_job(tmp_path), kind, module, data, 1, tmp_path / "work", tmp_path / "out.ckpt")
    monkeypatch.undo()

    assert counter.reads.get(-1) is None and counter.collectives.get(-1) is None
    for step in range(STEPS):
        reads, collectives = counter.reads.get(step, []), counter.collectives.get(step, [])
        if (step + 1) % EVERY:
            assert reads == [] and collectives == [], (step, reads, collectives)
        else:
            assert len(reads) <= 1 + LOGGED[kind] + 1, (step, reads)
            assert collectives == ["all_reduce"], (step, collectives)


def test_a_non_finite_loss_between_checks_is_caught_before_the_next_checkpoint(tmp_path, monkeypatch):
    """log_every_n_steps=3 (checks after steps 3, 6, 9) and a resume checkpoint every 4 steps
    (max_steps=40): a NaN loss in step 7 is found as step 8's checkpoint is about to be saved, not
    after step 9: nothing is published and the resume checkpoint stays step 4's."""
    real_step = SegmentationModule.training_step
    steps = []

    def nan_in_step_7(self, *a):
        steps.append(self.global_step)
        loss = real_step(self, *a)
        return loss * float("nan") if self.global_step == 6 else loss

    monkeypatch.setattr(SegmentationModule, "training_step", nan_in_step_7)
    module = SegmentationModule(num_classes=3, max_epochs=None, max_steps=40, channels_last=False)
    with pytest.raises(TrainingError, match=r"stage segmenter: the training loss is not finite "
                                            r"\(train/loss=nan\) in epoch \d, by step 8"):
        stages._fit(_job(tmp_path), "segmenter", module, _Data(_Images(), 2), None, tmp_path / "work",
                    tmp_path / "out.ckpt", max_steps=40)
    assert steps == list(range(8))
    assert not (tmp_path / "out.ckpt").exists()
    last = torch.load(tmp_path / "work" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
