"""The bench's data rows (python -m nightseg.bench --data): training samples per second through the
real DataLoader path (ResumableSampler, per-sample augmentation seeds, random crop and flip,
collate; one loader worker), reading the files as before (decode 1280x720 JPEG + PNG label,
resize to 270x480) against reading prepared arrays (nightseg.data.prepared) with a warm and with a
cold page cache; and what preparing costs: build time per 1,000 images and size on disk.

Without ``--data-root`` the frames are the embedded synthetic street scenes rendered at 1280x720
with sensor-like noise and saved as JPEG (quality 90), so their decode cost is near a real BDD
frame's (the mean file size is reported beside the rows); ``--data-root`` names a BDD10K tree
(images/10k/train, labels/sem_seg/masks/train) to time real frames instead.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nightseg.core.errors import DataError
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule
from nightseg.data.prepared import ARRAYS, PreparedRef
from nightseg.training.prepare import build_prepared

FRAME = (720, 1280)  # BDD100K / BDD10K frames, rows x cols


def synthetic_frames(where: Path, n: int, seed: int = 0) -> list[Sample]:
    """``n`` synthetic 1280x720 street scenes as JPEG frames with PNG labels under ``where``."""
    from nightseg.data.synthetic.render import render_scene

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        scene = render_scene(seed, "train", i, FRAME, kinds=("day",))
        noisy = np.clip(scene["day"] + rng.normal(0, 4, scene["day"].shape), 0, 255).astype(np.uint8)
        image, label = where / "images" / f"{i:05d}.jpg", where / "labels" / f"{i:05d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(image, quality=90)
        Image.fromarray(scene["label"]).save(label)
        samples.append(Sample(image, label))
    return samples


def _bdd10k_frames(root: Path, n: int) -> list[Sample]:
    from nightseg.data.bdd import bdd10k_split

    samples = bdd10k_split(root, "train")[:n]
    if not samples:
        raise DataError(f"{root}: no BDD10K training frames (images/10k/train with "
                        "labels/sem_seg/masks/train); check --data-root")
    return samples


def _drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the cached pages of the prepared arrays (clean pages only: the
    build fsyncs them), so the next pass reads them from the disk."""
    for name in ARRAYS:
        f = path / name
        if f.exists():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _samples_per_s(s: SampleSet, resize, crop, batch: int, workers: int, epochs: int,
                   before_epoch=None) -> float:
    """Training samples per second over ``epochs`` passes, after the first batch of the first
    (the worker's start-up is not the loader's throughput)."""
    torch.manual_seed(0)
    dm = SegmentationDataModule([s], num_classes=19, batch_size=batch, num_workers=workers,
                                resize=resize, train_crop=crop, hflip=True)
    loader = dm.train_dataloader()
    count, elapsed = 0, 0.0
    for epoch in range(epochs):
        dm._sampler.set_epoch(epoch)
        if before_epoch is not None:
            before_epoch()
        it = iter(loader)
        if epoch == 0:
            next(it)
        start = time.perf_counter()
        for b in it:
            count += len(b["image"])
        elapsed += time.perf_counter() - start
    del loader
    return count / elapsed


def bench_data(root: Path | None, images: int, resize: Sequence[int], crop: Sequence[int] | None,
               batch: int = 8, workers: int = 1, epochs: int = 3, work: Path | None = None) -> dict:
    """The data rows: samples/s per loader worker for files, prepared warm and prepared cold; the
    build's seconds per 1,000 images and its bytes on disk."""
    with tempfile.TemporaryDirectory(prefix="nightseg-bench-data-", dir=work) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        samples = synthetic_frames(tmp / "frames", images) if root is None else _bdd10k_frames(root, images)
        made_s = time.perf_counter() - start
        files = SampleSet("bench_frames", samples)
        jpeg_kb = float(np.mean([x.image.stat().st_size for x in samples])) / 1024
        with Image.open(samples[0].image) as im:
            source = [im.height, im.width]
        # Prepared once, timed: what the stage costs per 1,000 images (decode, check, resize, write).
        start = time.perf_counter()
        build_prepared(files, tmp / "arrays", resize, True, False, 19, "raise", num_workers=0)
        build_s = time.perf_counter() - start
        arrays = files.with_prepared(PreparedRef(tmp / "arrays", tuple(range(len(files)))))
        size = sum(f.stat().st_size for f in (tmp / "arrays").iterdir())
        rows = {
            "files": _samples_per_s(files, resize, crop, batch, workers, epochs),
            "prepared_warm": _samples_per_s(arrays, resize, crop, batch, workers, epochs),
            "prepared_cold": _samples_per_s(arrays, resize, crop, batch, workers, epochs,
                                            before_epoch=lambda: _drop_page_cache(tmp / "arrays")),
        }
    return {
        "source": "synthetic" if root is None else str(root), "images": len(samples),
        "source_size": source, "mean_file_kb": round(jpeg_kb, 1), "frames_made_s": round(made_s, 1),
        "resize": list(resize), "crop": list(crop) if crop else None, "batch_size": batch,
        "workers": workers, "epochs": epochs,
        "samples_per_s": {k: round(v, 1) for k, v in rows.items()},
        "speedup_warm": round(rows["prepared_warm"] / rows["files"], 2),
        "speedup_cold": round(rows["prepared_cold"] / rows["files"], 2),
        "build_s_per_1000": round(build_s / len(samples) * 1000, 1),
        "bytes_per_image": size // len(samples),
        "gb_per_7000": round(size / len(samples) * 7000 / 1e9, 2),
    }
