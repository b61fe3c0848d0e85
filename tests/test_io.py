"""Readers name bad files; skip mode logs and counts them instead of failing."""

import logging

import numpy as np
import pytest
from PIL import Image

from nightseg.core.errors import DataError
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule
from nightseg.data.io import SegmentationDataset, collate_skipping


def _write(tmp_path, name, rgb=True, size=(40, 32), value=1):
    arr = np.full((size[1], size[0], 3) if rgb else (size[1], size[0]), value, np.uint8)
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def sets(tmp_path):
    good = Sample(_write(tmp_path, "a.png"), _write(tmp_path, "a_l.png", rgb=False))
    corrupt = tmp_path / "b.png"
    corrupt.write_bytes(_write(tmp_path, "tmp.png").read_bytes()[:60])  # truncated PNG
    bad_image = Sample(corrupt, _write(tmp_path, "b_l.png", rgb=False))
    mismatch = Sample(_write(tmp_path, "c.png"), _write(tmp_path, "c_l.png", rgb=False, size=(20, 16)))
    unknown = Sample(_write(tmp_path, "d.png"), _write(tmp_path, "d_l.png", rgb=False, value=40))
    return good, bad_image, mismatch, unknown


@pytest.mark.parametrize("which, match", [(1, r"b\.png: cannot decode image"),
                                          (2, r"c_l\.png: label size 20x16 differs"),
                                          (3, r"d_l\.png: unknown label values \[40\]")])
def test_raise_mode_names_the_file_and_the_problem(sets, which, match):
    ds = SegmentationDataset(SampleSet("s", [sets[which]]), num_classes=19)
    with pytest.raises(DataError, match=match):
        ds[0]


def test_skip_mode_logs_and_counts(sets, caplog):
    ds = SegmentationDataset(SampleSet("s", list(sets)), num_classes=19, on_error="skip")
    with caplog.at_level(logging.WARNING):
        batch = collate_skipping([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 3 and batch["image"].shape[0] == 1
    assert sum("skipped" in r.message for r in caplog.records) == 3


def test_datamodule_applies_resize_to_image_and_label_alike(sets):
    dm = SegmentationDataModule([SampleSet("s", [sets[0]] * 2)], num_classes=19, batch_size=2,
                                resize=[64, 48], hflip=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 48) and batch["mask"].shape == (2, 64, 48)
    assert set(batch["mask"].unique().tolist()) == {1}  # nearest-neighbour: no new label values


def test_training_sets_replace_a_skipped_sample_so_batches_keep_their_size(sets, caplog):
    """Under DDP a rank whose batch came out empty would take no step while the others wait
    for its gradients: a training set draws the next readable sample instead."""
    good, bad_image, mismatch, unknown = sets
    ds = SegmentationDataset(SampleSet("s", [bad_image, mismatch, good, unknown]), num_classes=19,
                             on_error="skip", replace_skipped=True)
    with caplog.at_level(logging.WARNING):
        batch = collate_skipping([ds[i] for i in range(len(ds))])
    assert batch["image"].shape[0] == 4 and batch["index"].tolist() == [2, 2, 2, 2]
    assert batch["skipped"] == 2 + 1 + 0 + 3  # bad files passed over on the way to sample 2
    bad_only = SegmentationDataset(SampleSet("bad", [bad_image, mismatch]), num_classes=19,
                                   on_error="skip", replace_skipped=True)
    with pytest.raises(DataError, match="bad: none of its 2 samples could be read"):
        bad_only[0]


def test_unpaired_pairs_replace_bad_day_and_night_images(sets):
    from nightseg.data.io import UnpairedDataset

    good, bad_image = Sample(sets[0].image), Sample(sets[1].image)
    ds = UnpairedDataset(SampleSet("day", [bad_image, good]), SampleSet("night", [bad_image, good]),
                         on_error="skip")
    batch = collate_skipping([ds[0] for _ in range(8)])
    assert batch["day"].shape[0] == 8 and batch["night"].shape[0] == 8  # CycleGAN: batch of 1
    assert 8 <= batch["skipped"] <= 16  # each day image 0 was replaced, about half the nights
    with pytest.raises(DataError, match="b.png: cannot decode"):
        UnpairedDataset(SampleSet("day", [bad_image]), SampleSet("night", [good]))[0]
