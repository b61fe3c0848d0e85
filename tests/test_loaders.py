"""Loaders under several processes: evaluation shards that score every image once and in the same
batches as one process."""

import numpy as np
import pytest
import torch
from PIL import Image

from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import EvalSet, EvalShards, SegmentationDataModule


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
