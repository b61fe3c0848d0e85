"""Loaders under several workers and several processes: augmentation seeds per worker, and
evaluation shards that score every image once and in the same batches as one process."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import EvalSet, EvalShards, SegmentationDataModule, TranslationDataModule


def coordinate_set(root) -> SampleSet:
    """8 samples of one image whose pixels encode their column, so a crop tells its offset and
    whether it was flipped."""
    cols = np.tile(np.arange(96, dtype=np.uint8), (64, 1))
    image = root / "x.png"
    Image.fromarray(np.stack([cols, cols, cols], -1)).save(image)
    label = root / "x_l.png"
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(label)
    return SampleSet("s", [Sample(image, label)] * 8)


@pytest.fixture
def coordinates(tmp_path):
    return coordinate_set(tmp_path)


def _crops(make_loader, seed: int = 0, epochs: int = 1) -> list[tuple[int, int]]:
    """(first column, last column) of every sample's crop, in loading order."""
    pl.seed_everything(seed, workers=True)
    loader = make_loader()
    out = []
    for _ in range(epochs):
        for batch in loader:
            images = batch["image"] if "image" in batch else batch["day"]
            if images.is_floating_point():  # [0, 1] floats: back to the stored values
                images = (images * 255).round()
            out += [(int(x[0, 0, 0]), int(x[0, 0, -1])) for x in images]
    return out


@pytest.mark.parametrize("module", ["segmentation", "translation"])
def test_each_worker_crops_its_own_way_and_a_rerun_crops_alike(coordinates, module):
    def make_loader():
        if module == "segmentation":
            dm = SegmentationDataModule([coordinates], batch_size=1, num_workers=2,
                                        train_crop=[32, 32], hflip=True)
        else:
            dm = TranslationDataModule(coordinates, coordinates, batch_size=1, num_workers=2,
                                       crop=[32, 32], hflip=True)
        return dm.train_dataloader()

    crops = _crops(make_loader, epochs=2)
    # Batches alternate between the two workers: without seeds of their own they replay the
    # same crops and flips, (w0, w1, w0, w1, ...) = (a, a, b, b, ...).
    worker0, worker1 = crops[0::2], crops[1::2]
    assert worker0 != worker1
    assert crops == _crops(make_loader, epochs=2)
    assert crops != _crops(make_loader, seed=1, epochs=2)
    assert len(set(crops)) > 4  # and they do vary (offsets and flips)


def test_without_workers_a_rerun_crops_alike(coordinates):
    def make_loader():
        return SegmentationDataModule([coordinates], batch_size=2, train_crop=[32, 32]).train_dataloader()

    assert _crops(make_loader) == _crops(make_loader) != _crops(make_loader, seed=1)


@pytest.mark.parametrize("n, batch, world", [(5, 2, 2), (50, 8, 8), (3, 8, 2), (8, 2, 2),
                                             (7, 3, 3), (1, 4, 4)])
def test_eval_shards_deal_whole_batches_without_repeating_images(n, batch, world):
    """50 Nighttime Driving images on 8 GPUs: Lightning's sampler pads to 56 and scores 6 twice."""
    ds = EvalSet(list(range(n)))
    one_process = [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]
    per_rank = []
    for rank in range(world):
        shard = EvalShards(ds, batch, world, rank)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=shard,
                                             collate_fn=lambda items: items)
        per_rank.append([b for b in loader])
    assert len({len(b) for b in per_rank}) == 1  # every rank steps as often as the others
    real = [b for batches in per_rank for b in batches if b != [{"pad": True}]]
    assert sorted(real) == one_process  # every image once, in its one-process batch


@pytest.mark.slow
def test_eval_loaders_use_the_shards_under_ddp(coordinates):
    class Trainer:
        world_size, global_rank, accelerator = 2, 1, "cpu"

    dm = SegmentationDataModule([], test_sets=[coordinates], eval_batch_size=3)
    dm.trainer = Trainer()
    [loader] = dm.test_dataloader()
    assert isinstance(loader.sampler, EvalShards)
    # Rank 1 of 2: the second of three batches, then a placeholder for the third's step.
    assert [b["index"].tolist() if "index" in b else "pad" for b in loader] == [[3, 4, 5], "pad"]
    dm.trainer = None
    [loader] = dm.test_dataloader()
    assert [b["index"].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7]]


class _Recorder(pl.LightningModule):
    """Records what every training step was given: the epoch, the sample indices and each
    image's crop (first and last column, see ``coordinates``); raises ``_Stop`` at step ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list = []
        self.stop_at = stop_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.stop_at:
            raise _Stop
        images = batch["image"] if "image" in batch else torch.cat([batch["day"], batch["night"]])
        crops = [(round(float(x[0, 0, 0]) * 255), round(float(x[0, 0, -1]) * 255)) for x in images]
        self.seen.append((self.current_epoch, batch.get("index", torch.empty(0)).tolist(), crops))
        return self.w * images.mean() + (self.w - 1) ** 2

    def configure_optimizers(self):
        # As SegmentationModule's poly schedule does: with an epoch budget this makes Lightning
        # build the training loader before it restores the loops from a resume checkpoint.
        total = self.trainer.estimated_stepping_batches
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / (total + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class _Stop(RuntimeError):
    pass


def fit_recording(dm_factory, root, stop_at=None, resume=False, workers=0, **trainer_args) -> _Recorder:
    """Fit a _Recorder on ``dm_factory(workers)`` for 3 epochs with a checkpoint at every step in
    ``root``, from ``root/last.ckpt`` if ``resume``; stopped before step ``stop_at``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    pl.seed_everything(0, workers=True)
    module = _Recorder(stop_at)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, deterministic=True,
                         callbacks=[ModelCheckpoint(dirpath=root, filename="last", save_top_k=1,
                                                    every_n_train_steps=1, enable_version_counter=False)],
                         **trainer_args)
    try:
        trainer.fit(module, datamodule=dm_factory(workers),
                    ckpt_path=str(root / "last.ckpt") if resume else None)
    except _Stop:
        pass
    return module


@pytest.mark.parametrize("module", ["segmentation", "translation"])
@pytest.mark.parametrize("batch, limit, stop_at", [(2, 1.0, 1), (2, 1.0, 3), (2, 1.0, 4), (2, 1.0, 6),
                                                   (3, 1.0, 2), (3, 1.0, 5), (2, 3, 3), (2, 3, 5)])
@pytest.mark.slow
def test_a_resume_mid_epoch_goes_on_with_the_batches_the_uninterrupted_run_trained_on(
        coordinates, tmp_path, module, batch, limit, stop_at):
    """8 samples: 4 batches of 2 an epoch, or 2 of 3 (and 2 samples dropped), or the first 3 of 4
    (trainer.limit_train_batches=3), for 3 epochs; stopped before step ``stop_at`` and resumed
    from the checkpoint of the step before (stops 4, 2 and 3: that checkpoint was written at an
    epoch's last batch): every later step gets the same images, crops and flips as in the run
    that was never stopped, and the weights end equal."""
    def dm(workers):
        if module == "segmentation":
            return SegmentationDataModule([coordinates], batch_size=batch, num_workers=workers,
                                          train_crop=[32, 32], hflip=True)
        return TranslationDataModule(coordinates, coordinates, batch_size=batch, num_workers=workers,
                                     crop=[32, 32], hflip=True)

    whole = fit_recording(dm, tmp_path / "a", limit_train_batches=limit)
    assert len(whole.seen) == 3 * (8 // batch if limit == 1.0 else limit)
    first = fit_recording(dm, tmp_path / "b", stop_at=stop_at, limit_train_batches=limit)
    assert len(first.seen) == stop_at
    rest = fit_recording(dm, tmp_path / "b", resume=True, limit_train_batches=limit)
    assert first.seen + rest.seen == whole.seen
    assert torch.equal(rest.w, whole.w)


@pytest.mark.slow
def test_training_batches_do_not_depend_on_the_loader_workers(coordinates, tmp_path):
    def dm(workers):
        return SegmentationDataModule([coordinates], batch_size=2, num_workers=workers,
                                      train_crop=[32, 32], hflip=True)

    seen = fit_recording(dm, tmp_path / "a").seen
    assert fit_recording(dm, tmp_path / "b", workers=2).seen == seen
    assert len({c for _, _, crops in seen for c in crops}) > 4  # crops and flips do vary


class _DropoutRecorder(_Recorder):
    """Draws from the global generator in every training step, as ERF-PSPNet's dropout does, and
    validates every epoch."""

    def training_step(self, batch, batch_idx):
        self.seen.append(torch.rand(()).item())
        return (self.w - 1) ** 2

    def validation_step(self, batch, batch_idx):
        pass


def test_validation_leaves_the_training_randomness_alone_whatever_the_loader_workers(coordinates):
    """Validation loaders loading in the main process (data.num_workers=0) make a new iterator
    each validation, persistent workers one in all; neither may draw from the global generator,
    or every dropout mask after the first validation depends on data.num_workers."""
    def draws(workers):
        pl.seed_everything(0)
        module = _DropoutRecorder()
        dm = SegmentationDataModule([coordinates], val_sets=[coordinates], batch_size=2,
                                    num_workers=workers, train_crop=[32, 32])
        pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False,
                   ).fit(module, datamodule=dm)
        return module.seen

    assert len(draws(0)) == 12 and draws(0) == draws(2)


def test_the_resumable_sampler_deals_one_permutation_to_the_ranks_and_resumes_each():
    """Two ranks (what Lightning keeps under DDP, the sampler being a DistributedSampler): the
    shards together are one epoch's permutation, which changes with the epoch; each sample's
    augmentation entropy names the seed, epoch and index; a resume after k samples of a shard
    yields the rest of that shard."""
    from nightseg.data.datamodules import ResumableSampler

    ds = list(range(10))
    shards = {}
    for epoch in (0, 1):
        for rank in (0, 1):
            sampler = ResumableSampler(ds, seed=7, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            shards[epoch, rank] = list(sampler)
            assert all(entropy == (7, epoch, i) for i, entropy in shards[epoch, rank])
            sampler.resume_at(epoch, 3)
            assert list(sampler) == shards[epoch, rank][3:]
            assert list(sampler) == shards[epoch, rank]  # the skip is for one iteration only
    for epoch in (0, 1):
        assert sorted(i for rank in (0, 1) for i, _ in shards[epoch, rank]) == ds
    assert shards[0, 0] != shards[1, 0]
