"""Prepared data (nightseg.data.prepared, the stage nightseg.training.prepare): the loaders read the
same arrays as from the files, so the training batches are bit-identical; bad files are reported
as from the files; the memory maps never travel to worker processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_layouts import TRAIN_IDS, make_bdd10k, write_image, write_label

from nightseg.core.errors import DataError
from nightseg.data.bdd import build_bdd10k_catalog
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule, TranslationDataModule
from nightseg.data.io import SegmentationDataset
from nightseg.data.prepared import PreparedArrays, PreparedRef
from nightseg.data.synthetic import build_catalog
from nightseg.training.prepare import build_prepared

SMOKE_COUNTS = {"translate_day": 8, "translate_night": 8, "train": 16, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    # The smoke configuration's images, where the smoke runs of this session render them.
    root = tmp_path_factory.getbasetemp() / "cache" / "synthetic"
    return build_catalog(root, 0, [64, 96], SMOKE_COUNTS)


def prepared(s: SampleSet, where: Path, resize=None, labels=True, references=None,
             on_error="raise", num_classes=19) -> SampleSet:
    references = s.has_reference if references is None else references
    build_prepared(s, where, resize, labels, references, num_classes, on_error)
    return s.with_prepared(PreparedRef(where, tuple(range(len(s)))))


def train_batches(sets, epochs=2, seed=0, **kw) -> list[dict]:
    torch.manual_seed(seed)  # the sampler's seed comes from the global generator
    dm = SegmentationDataModule(sets, num_classes=19, batch_size=3, num_workers=0, hflip=True, **kw)
    loader = dm.train_dataloader()
    out = []
    for epoch in range(epochs):
        dm._sampler.set_epoch(epoch)
        out += list(loader)
    return out


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


@pytest.mark.parametrize("resize", [None, (48, 80)])
def test_synthetic_training_batches_are_bit_identical(synthetic, tmp_path, resize):
    files = synthetic.train
    arrays = prepared(files, tmp_path / "arrays", resize=resize)
    kw = {"resize": resize, "train_crop": (40, 64)}
    assert_same_batches(train_batches([files], **kw), train_batches([arrays], **kw))
    # Evaluation sets (with the true day rendering as reference) alike, and in another order.
    test = synthetic.test[0]
    assert test.has_reference
    test_arrays = prepared(test, tmp_path / "test")
    order = [3, 1, 0, 2]
    for a, b in ((test, test_arrays), (test.reordered(order), test_arrays.reordered(order))):
        ds_a, ds_b = SegmentationDataset(a, num_classes=19), SegmentationDataset(b, num_classes=19)
        for i in range(len(a)):
            x, y = ds_a[i], ds_b[i]
            assert x["name"] == y["name"]
            for k in ("image", "mask", "reference"):
                assert torch.equal(x[k], y[k]), k


def test_translation_batches_are_bit_identical(synthetic, tmp_path):
    day, night = synthetic.translate_day, synthetic.translate_night
    p_day = prepared(day, tmp_path / "day", labels=False)
    p_night = prepared(night, tmp_path / "night", labels=False)

    def batches(d, n):
        torch.manual_seed(0)
        dm = TranslationDataModule(d, n, batch_size=1, crop=(48, 48), hflip=True)
        return list(dm.train_dataloader())

    assert_same_batches(batches(day, night), batches(p_day, p_night))


def test_a_bdd_tree_of_1280x720_jpegs_at_270x480(tmp_path):
    root = make_bdd10k(tmp_path / "bdd10k")
    for jpg in sorted((root / "images/10k").rglob("*.jpg")):  # real frame sizes
        write_image(jpg, size=(720, 1280), seed=len(jpg.stem))
    for png in sorted((root / "labels").rglob("*.png")):
        write_label(png, TRAIN_IDS, size=(720, 1280))
    train = build_bdd10k_catalog(root).train
    arrays = prepared(train, tmp_path / "arrays", resize=(270, 480))
    assert np.load(tmp_path / "arrays" / "images.npy", mmap_mode="r").size == len(train) * 270 * 480 * 3
    kw = {"resize": (270, 480), "train_crop": (256, 256)}
    assert_same_batches(train_batches([train], epochs=3, **kw), train_batches([arrays], epochs=3, **kw))


def _with_corrupt(synthetic, tmp_path) -> SampleSet:
    """The smoke training set with its third image replaced by a truncated copy."""
    s = synthetic.train.head(6)
    bad = tmp_path / "bad" / s.samples[2].image.name
    bad.parent.mkdir()
    bad.write_bytes(s.samples[2].image.read_bytes()[:100])
    samples = list(s.samples)
    samples[2] = Sample(bad, samples[2].label)
    return SampleSet(s.name, samples)


def test_bad_files_are_reported_as_from_the_files(synthetic, tmp_path):
    s = _with_corrupt(synthetic, tmp_path)
    # on_error=raise: the build stops at the bad file, naming it, and leaves nothing behind.
    with pytest.raises(DataError, match=str(s.samples[2].image)):
        build_prepared(s, tmp_path / "raise", None, True, False, 19, "raise")
    # on_error=skip: recorded with its reason; read as from the files (the next readable sample
    # replaces it in training, counted in "skipped").
    arrays = prepared(s, tmp_path / "skip", on_error="skip")
    assert list(PreparedArrays(tmp_path / "skip").errors) == [2]
    files_ds = SegmentationDataset(s, num_classes=19, on_error="skip", replace_skipped=True)
    arrays_ds = SegmentationDataset(arrays, num_classes=19, on_error="skip", replace_skipped=True)
    for i in range(len(s)):
        x, y = files_ds[i], arrays_ds[i]
        assert x.get("skipped") == y.get("skipped") and x["index"] == y["index"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    # A run with on_error=raise over arrays prepared with skip stops before reading anything.
    with pytest.raises(DataError, match=str(s.samples[2].image)):
        SegmentationDataset(arrays, num_classes=19, on_error="raise")


def test_unknown_label_values_are_checked_when_prepared(synthetic, tmp_path):
    with pytest.raises(DataError, match="unknown label values"):
        build_prepared(synthetic.train.head(2), tmp_path / "a", None, True, False, 3, "raise")


def test_memory_maps_are_opened_lazily_and_never_pickled(synthetic, tmp_path):
    arrays = prepared(synthetic.train.head(4), tmp_path / "arrays")
    ds = SegmentationDataset(arrays, num_classes=19)
    assert ds.prepared._maps is None
    ds[0]
    assert isinstance(ds.prepared._maps["image"], np.memmap)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.prepared._maps is None
    assert torch.equal(copy[1]["image"], ds[1]["image"])


def test_the_prepared_set_keeps_the_fingerprint(synthetic, tmp_path):
    s = synthetic.train.head(4)
    arrays = prepared(s, tmp_path / "arrays")
    assert arrays.fingerprint() == s.fingerprint()
    assert arrays.head(2).prepared.rows == (0, 1)
    assert arrays.reordered([3, 0]).prepared.rows == (3, 0)


def test_preparing_draws_nothing_from_the_global_generator(synthetic, tmp_path):
    # A stage prepares its sets after seed_everything: a draw would shift every dropout mask.
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_prepared(synthetic.train.head(3), tmp_path / "a", None, True, False, 19, "raise")
    assert torch.equal(torch.rand(3), expected)


def test_too_little_disk_is_reported_before_decoding(synthetic, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from nightseg.data import io

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    decoded = []
    monkeypatch.setattr(io, "read_image", lambda p: decoded.append(p))
    with pytest.raises(DataError, match=f"{tmp_path}: preparing .* needs .* data.prepared=false"):
        build_prepared(synthetic.train.head(2), tmp_path / "a", None, True, False, 19, "raise")
    assert not decoded and not (tmp_path / "a").exists()


def test_a_full_disk_while_writing_publishes_nothing(synthetic, tmp_path, monkeypatch):
    import errno

    from nightseg.data.prepared import PreparedWriter
    from nightseg.infra.cache import StageCache

    real = PreparedWriter.write

    def write(self, row, arrays):
        if row == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, row, arrays)

    monkeypatch.setattr(PreparedWriter, "write", write)
    cache = StageCache(tmp_path / "stages")
    s = synthetic.train.head(4)
    with pytest.raises(OSError, match="No space"):
        cache.obtain("prepared", {"x": 1}, "arrays",
                     lambda stage, out: build_prepared(s, out, None, True, False, 19, "raise"))
    assert not list((tmp_path / "stages").rglob("arrays")) and not list((tmp_path / "stages").rglob("*.npy"))
