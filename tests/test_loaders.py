"""Loaders under several workers and several processes: augmentation seeds per worker, and
evaluation shards that score every image once and in the same batches as one process."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import EvalSet, EvalShards, SegmentationDataModule, TranslationDataModule


@pytest.fixture
def coordinates(tmp_path):
    """8 samples of one image whose pixels encode their column, so a crop tells its offset and
    whether it was flipped."""
    cols = np.tile(np.arange(96, dtype=np.uint8), (64, 1))
    image = tmp_path / "x.png"
    Image.fromarray(np.stack([cols, cols, cols], -1)).save(image)
    label = tmp_path / "x_l.png"
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(label)
    return SampleSet("s", [Sample(image, label)] * 8)


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
