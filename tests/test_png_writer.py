"""The generated night images' writer: whole PNGs named by pool position, the batch read back to
the host once, a bounded queue of writes, their errors raised, the pool drained at the end."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from nightseg.core.visualize import to_uint8
from nightseg.training import png_writer
from nightseg.training.png_writer import PngWriter


def _batch(positions, hw=(6, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(positions)
    return (torch.rand(n, 3, *hw, generator=g) * 1.2 - 0.1,  # out of [0, 1] too: clamped
            {"mask": torch.randint(0, 19, (n, *hw), generator=g), "index": torch.tensor(positions)})


def _write(writer: PngWriter, k: int) -> None:
    prediction, batch = _batch([k], seed=k)
    writer.write_on_batch_end(None, None, prediction, None, batch, k)


def test_each_image_and_label_is_written_as_to_uint8_makes_it(tmp_path):
    writer = PngWriter(tmp_path)
    writer.on_predict_start(None, None)
    batches = [_batch([5, 2], seed=0), _batch([7], seed=1)]
    for i, (prediction, batch) in enumerate(batches):
        writer.write_on_batch_end(None, None, prediction, None, batch, i)
    writer.on_predict_end(None, None)
    assert writer.written == [5, 2, 7]
    for prediction, batch in batches:
        for img, mask, k in zip(prediction, batch["mask"], batch["index"].tolist(), strict=True):
            assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / f"{k:06d}.png")), to_uint8(img))
            assert np.array_equal(np.asarray(Image.open(tmp_path / "labels" / f"{k:06d}.png")),
                                  mask.byte().numpy())
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == []  # every file renamed into place


def test_a_failed_write_is_raised_and_the_queue_stays_bounded(tmp_path, monkeypatch):
    gate = threading.Event()
    real = png_writer.write_png_atomic

    def slow_then_failing(img, path):
        gate.wait(10)
        if path.name == "000003.png":
            raise OSError(f"{path}: No space left on device")
        real(img, path)

    monkeypatch.setattr(png_writer, "write_png_atomic", slow_then_failing)
    writer = PngWriter(tmp_path, workers=1)
    writer.on_predict_start(None, None)
    capacity = png_writer.PENDING_PER_WORKER
    for k in range(capacity):  # the writes wait: the queue fills up to its bound
        _write(writer, k)
    assert len(writer._pending) == capacity and writer.written == []
    gate.set()
    _write(writer, capacity)  # waits for the first batch to be written
    assert writer.written == [0] and len(writer._pending) == capacity
    _write(writer, 3)
    with pytest.raises(OSError, match="000003.png: No space left"):
        writer.on_predict_end(None, None)
    writer.on_exception(None, None, OSError())
    assert writer._pool is None and not (tmp_path / "images" / "000003.png").exists()
