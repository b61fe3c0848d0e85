"""Writing the generated night images (strategy augment) as PNGs while the next batch translates."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter

WORKERS = 2  # PNG encoding (zlib) runs outside the GIL: two threads keep up with a GPU's batches
PENDING_PER_WORKER = 2  # batches waiting to be written, at most, per thread: a bounded queue


def write_png_atomic(img: np.ndarray, path: Path) -> None:
    """``img`` as a PNG at ``path``, whole or not at all (a temporary name, then os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(img).save(tmp, format="PNG")
    os.replace(tmp, path)


class PngWriter(BasePredictionWriter):
    """Writes each translated image (``prediction``, (N, 3, H, W) in [0, 1]) and its label
    (``batch["mask"]``) as ``images/NNNNNN.png`` and ``labels/NNNNNN.png`` named by pool position
    (``batch["index"]``), and remembers the positions written.

    The batch's images come to the host once (as uint8: one wait for the device per batch; labels
    and positions are expected on the host already) and are encoded and written by a small thread
    pool while the next batch translates; at most ``WORKERS * PENDING_PER_WORKER`` batches wait. A
    write's error is raised in the predicting thread at a later batch or at the end; the pool is
    drained when prediction ends (:meth:`on_predict_end`), so ``written`` is complete when
    ``trainer.predict`` returns."""

    def __init__(self, out_dir: Path, workers: int = WORKERS):
        super().__init__(write_interval="batch")
        self.out_dir = out_dir
        self.workers = workers
        self.written: list[int] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future, list[int]]] = deque()

    def on_predict_start(self, trainer, pl_module) -> None:
        for sub in ("images", "labels"):
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="png-writer")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        # As nightseg.core.visualize.to_uint8 converts one image, for the whole batch at once.
        images = prediction.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1)
        images = images.cpu().numpy()
        masks = batch["mask"].byte().cpu().numpy()
        positions = [int(k) for k in batch["index"].cpu().tolist()]
        while len(self._pending) >= self.workers * PENDING_PER_WORKER:
            self._collect_oldest()
        self._pending.append((self._pool.submit(self._write, images, masks, positions), positions))

    def _write(self, images: np.ndarray, masks: np.ndarray, positions: list[int]) -> None:
        for img, mask, k in zip(images, masks, positions, strict=True):
            write_png_atomic(img, self.out_dir / "images" / f"{k:06d}.png")
            write_png_atomic(mask, self.out_dir / "labels" / f"{k:06d}.png")

    def _collect_oldest(self) -> None:
        future, positions = self._pending.popleft()
        future.result()  # a write's exception, raised here
        self.written.extend(positions)

    def on_predict_end(self, trainer, pl_module) -> None:
        while self._pending:
            self._collect_oldest()
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
