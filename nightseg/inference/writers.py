"""Prediction outputs: a frame's mask (palette PNG), overlay and night->day image, and a video's
overlay frames as a video; every file written atomically."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from nightseg.core.files import PngPool, atomic_path
from nightseg.core.visualize import palette
from nightseg.inference.frames import Frame
from nightseg.inference.loading import Classes


class Writer:
    """Writes a frame's mask, overlay and night->day image below ``out_dir``.

    PNG encoding (zlib, which releases the GIL) runs in a few threads beside the models: on the
    2-core development CPU it took about a third of the time of ERF-PSPNet's forward pass at
    480x272. RGB outputs use a fast compression level (larger files, a fraction of the time).
    Call :meth:`close` to wait for the last files (and raise what failed).
    """

    MAX_PENDING = 64  # files queued at most, so a fast model does not pile frames up in memory

    def __init__(self, out_dir: Path, classes: Classes, alpha: float, threads: int = 2):
        self.out_dir, self.alpha = out_dir, alpha
        self.colours = palette(classes.names)
        # A palette PNG: class ids as pixel values, the palette makes them the class colours.
        self.png_palette = np.zeros((256, 3), dtype=np.uint8)
        self.png_palette[:len(self.colours)] = self.colours
        self.pngs = PngPool(threads, self.MAX_PENDING)

    def overlay(self, frame: np.ndarray, pred: np.ndarray) -> np.ndarray:
        blend = (1 - self.alpha) * frame.astype(np.float32) + self.alpha * self.colours[pred]
        return blend.round().clip(0, 255).astype(np.uint8)

    def _submit(self, img: Image.Image, path: Path, compress_level: int) -> None:
        self.pngs.save(img, path, compress_level)

    def write(self, frame: Frame, pred: np.ndarray, translated: np.ndarray | None) -> np.ndarray:
        mask = Image.fromarray(pred.astype(np.uint8), mode="P")
        mask.putpalette(self.png_palette.tobytes())
        self._submit(mask, self.out_dir / "mask" / f"{frame.out}.png", 6)
        overlay = self.overlay(frame.frame, pred)
        self._submit(Image.fromarray(overlay), self.out_dir / "overlay" / f"{frame.out}.png", 1)
        if translated is not None:
            self._submit(Image.fromarray(translated), self.out_dir / "night2day" / f"{frame.out}.png", 1)
        return overlay

    def close(self) -> None:
        self.pngs.close()


class VideoWriter:
    """The overlay frames of one video as H.264 (MPEG-4 part 2 where the build has no H.264) at
    the source frame rate, published atomically when the video ends."""

    def __init__(self, path: Path, rate: Fraction):
        import av

        self.path, self.rate = path, rate
        self._tmp_cm = atomic_path(path)
        tmp = self._tmp_cm.__enter__()
        self.container = av.open(str(tmp), mode="w", format=path.suffix.lstrip("."))
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":  # a quarter of the default preset's encoding time, a bit larger
            self.stream.options = {"preset": "veryfast"}
        self.opened = False

    def add(self, img: np.ndarray) -> None:
        import av

        h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2  # yuv420p needs even sizes
        if not self.opened:
            self.stream.height, self.stream.width = h, w
            self.opened = True
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self, ok: bool) -> None:
        try:
            if ok and self.opened:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
        finally:
            if ok and self.opened:
                self._tmp_cm.__exit__(None, None, None)
            else:  # nothing, or half a video: publish nothing
                self._tmp_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
