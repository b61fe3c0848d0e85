"""python -m nightseg.predict: segment your own frames (a folder, a glob, a video) with trained models.

    python -m nightseg.predict input=night_drive.mp4 models.run=outputs/2026-11-26/10-00-00
    python -m nightseg.predict "input='frames/**/*.jpg'" models.segmenter=<key> resize=[272,480]

Per frame, under ``output_dir`` (an image keeps its path below the input folder, a video's frames
are ``<video name>/000000.png``...): ``mask/`` a palette PNG whose pixel values are the class ids,
drawn in the Cityscapes colours (nightseg.core.visualize.palette); ``overlay/`` the frame with the mask
blended in; with a translator ``night2day/`` what the segmenter saw (with a gate, only for the
frames it translated). A video also gets ``overlay/<video name>.mp4`` at its own frame rate (PyAV;
an odd width or height loses its last column or row there, as yuv420p needs even sizes).
Every output is at the frame's own size and is written atomically. An image that cannot be read is
named, skipped and counted. The models come from nightseg.inference.loading, the same pipeline evaluation
scores; conf/predict.yaml has the options.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from torch.utils.data import DataLoader, Dataset

from nightseg.core.cli import errors_as_one_line
from nightseg.core.errors import ConfigError
from nightseg.core.files import atomic_path
from nightseg.core.visualize import palette
from nightseg.deploy.pipelines import check_runtime, load_pipeline
from nightseg.inference.loading import Classes, resolve
from nightseg.infra.hardware import cpu_class, native_bf16

log = logging.getLogger("nightseg")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
PRECISIONS = ("auto", "bf16", "32")


# ---- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One input file and the name its outputs take below ``output_dir`` (no suffix)."""

    path: Path
    name: str

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def find_inputs(spec: str) -> list[Item]:
    """The images and videos named by ``input``: a file, a folder (recursively) or a glob."""
    path = Path(spec)
    if path.is_file():
        return [Item(path, path.stem)]
    if path.is_dir():
        files, base = [p for p in path.rglob("*") if p.is_file()], path
    else:
        files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        if not files:
            raise ConfigError(f"input={spec}: no such file or folder, and no file matches it as a "
                              "pattern; give a folder, a glob such as 'frames/**/*.png', or a video")
        base = Path(os.path.commonpath([str(p.parent) for p in files]))
    files = sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise ConfigError(f"input={spec}: no images ({', '.join(IMAGE_SUFFIXES)}) or videos "
                          f"({', '.join(VIDEO_SUFFIXES)}) in it")
    return [Item(p, p.relative_to(base).with_suffix("").as_posix()) for p in files]


def _resized(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """As evaluation resizes (nightseg.data.datamodules.build_transform: area interpolation)."""
    if size is None or img.shape[:2] == tuple(size):
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _as_is(sample: dict) -> dict:
    """Samples leave the workers as they are (numpy arrays, no tensors): a module-level function,
    so that spawned workers (macOS, Windows) can unpickle it."""
    return sample


class _Images(Dataset):
    """Reads images in loader workers; a file that cannot be read comes back as its error."""

    def __init__(self, items: list[Item], size: tuple[int, int] | None):
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        try:
            with Image.open(item.path) as im:
                frame = np.array(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for truncated or corrupt files
            return {"index": i, "error": f"{type(e).__name__}: {e}"}
        return {"index": i, "frame": frame, "input": _resized(frame, self.size)}


@dataclass
class Frame:
    """A frame to segment: ``frame`` as read (H, W, 3) uint8, ``input`` as the models see it, and
    ``out`` the outputs' name below ``output_dir`` (no suffix)."""

    frame: np.ndarray
    input: np.ndarray
    out: str


def say(console: Console, line: str) -> None:
    """One line as it is: no wrapping, no markup (paths may hold brackets)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def image_frames(items: list[Item], size, num_workers: int, skipped: list[str],
                 console: Console) -> Iterator[Frame]:
    loader = DataLoader(_Images(items, size), batch_size=None, num_workers=num_workers,
                        collate_fn=_as_is)
    for sample in loader:
        item = items[sample["index"]]
        if "error" in sample:
            say(console, f"skipped {item.path}: cannot read it as an image ({sample['error']})")
            skipped.append(str(item.path))
            continue
        yield Frame(sample["frame"], sample["input"], item.name)


def batched(frames: Iterable[Frame], batch_size: int) -> Iterator[list[Frame]]:
    """Consecutive frames of one input size, at most ``batch_size`` at a time."""
    batch: list[Frame] = []
    for f in frames:
        if batch and (len(batch) == batch_size or f.input.shape != batch[0].input.shape):
            yield batch
            batch = []
        batch.append(f)
    if batch:
        yield batch


# ---- outputs -----------------------------------------------------------------------------------
def _save(img: Image.Image, path: Path, compress_level: int) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=compress_level)


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
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png")
        self.pending: deque[Future] = deque()

    def overlay(self, frame: np.ndarray, pred: np.ndarray) -> np.ndarray:
        blend = (1 - self.alpha) * frame.astype(np.float32) + self.alpha * self.colours[pred]
        return blend.round().clip(0, 255).astype(np.uint8)

    def _submit(self, img: Image.Image, path: Path, compress_level: int) -> None:
        while len(self.pending) >= self.MAX_PENDING:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(_save, img, path, compress_level))

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
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


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


class _NotAVideo(Exception):
    pass


def video_frames(item: Item, size, state: dict) -> Iterator[Frame]:
    """Decoded frames of a video; ``state`` gets its frame rate and frame count first."""
    import av

    with av.open(str(item.path)) as container:
        if not container.streams.video:
            raise _NotAVideo("it has no video stream")
        stream = container.streams.video[0]
        state["rate"] = stream.average_rate or stream.guessed_rate or Fraction(25)
        state["frames"] = stream.frames or None
        for i, vf in enumerate(container.decode(stream)):
            frame = vf.to_ndarray(format="rgb24")
            yield Frame(frame, _resized(frame, size), f"{item.name}/{i:06d}")


# ---- running -----------------------------------------------------------------------------------
class _FpsColumn(ProgressColumn):
    """Frames per second so far."""

    def render(self, task: Task) -> Text:
        fps = task.completed / task.elapsed if task.elapsed else 0.0
        return Text(f"{fps:.1f} fps")


def choose_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={device}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA device is visible here; use device=cpu")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast, fp16 on GPUs without native bf16 (as nightseg.infra.hardware does for training),
    or None for fp32. ``auto``: fp32 on CPUs without native bf16 (AVX2), where bf16 is emulated."""
    if precision == "32" or (precision == "auto" and device.type == "cpu" and not cpu_class().native_bf16):
        return None
    if device.type == "cuda" and not native_bf16():
        return torch.float16
    return torch.bfloat16


class Predictor:
    """Runs the pipeline over batches of frames and writes their outputs."""

    def __init__(self, pipeline, writer: Writer, device: torch.device, dtype: torch.dtype | None):
        self.pipeline = pipeline.to(device).eval()
        self.writer, self.device, self.dtype = writer, device, dtype

    @torch.inference_mode()
    def __call__(self, batch: list[Frame]) -> list[np.ndarray]:
        x = torch.from_numpy(np.stack([f.input for f in batch])).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            inputs, picked = self.pipeline.translate(x)
            logits = self.pipeline.segmenter(inputs)
        overlays = []
        for i, f in enumerate(batch):
            size = f.frame.shape[:2]
            # Back to the frame's own size: logits bilinearly (then argmax), not the class ids.
            lg = logits[i:i + 1].float()
            if tuple(lg.shape[-2:]) != size:
                lg = F.interpolate(lg, size=size, mode="bilinear", align_corners=False)
            pred = lg.argmax(1)[0].byte().cpu().numpy()
            translated = None
            if picked is not None and bool(picked[i]):
                t = inputs[i:i + 1].float()
                if tuple(t.shape[-2:]) != size:
                    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                translated = t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            overlays.append(self.writer.write(f, pred, translated))
        return overlays


def check(cfg: DictConfig) -> tuple[str, tuple[int, int] | None]:
    """One-line errors for bad options, before any model or image is read."""
    if cfg.get("input") is None:
        raise ConfigError("input is missing: give input=<folder, glob or video file>")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be a positive integer")
    if not isinstance(cfg.num_workers, int) or cfg.num_workers < 0:
        raise ConfigError(f"num_workers={cfg.num_workers}: must be a non-negative integer")
    precision = str(cfg.precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={cfg.precision}: use auto (bf16 where the hardware has it, "
                          "else fp32), bf16 (autocast) or 32 (fp32)")
    size = cfg.get("resize")
    if size is not None:
        size = OmegaConf.to_container(size) if OmegaConf.is_config(size) else size
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 32
                                                                  for v in size)):
            raise ConfigError(f"resize={size}: give [rows, cols], both at least 32, e.g. "
                              "resize=[272,480], or resize=null for the frames' own size")
        size = (size[0], size[1])
    if not 0 <= float(cfg.overlay_alpha) <= 1:
        raise ConfigError(f"overlay_alpha={cfg.overlay_alpha}: must be between 0 and 1")
    check_runtime(cfg.runtime)
    return precision, size


def predict(cfg: DictConfig, console: Console | None = None) -> dict:
    """Segment ``cfg.input``; returns ``{"frames", "files", "skipped", "videos", "output_dir"}``."""
    console = console or Console(stderr=True)
    precision, size = check(cfg)
    models = resolve(cfg.models, cfg.paths.cache_dir)
    items = find_inputs(str(cfg.input))
    device = choose_device(str(cfg.device))
    loaded = load_pipeline(models, cfg.runtime, cfg.paths.cache_dir)
    out_dir = Path(str(cfg.output_dir))
    writer = Writer(out_dir, loaded.classes, float(cfg.overlay_alpha))
    run = Predictor(loaded.pipeline, writer, device, autocast_dtype(precision, device))
    skipped: list[str] = []
    frames, videos = 0, []
    images = [it for it in items if not it.is_video]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _FpsColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            if images:
                task = progress.add_task("images", total=len(images))
                for batch in batched(image_frames(images, size, cfg.num_workers, skipped, console),
                                     cfg.batch_size):
                    run(batch)
                    frames += len(batch)
                    progress.update(task, completed=frames + len(skipped))
                progress.update(task, completed=len(images))
            for item in (it for it in items if it.is_video):
                n = _predict_video(item, size, cfg.batch_size, run, out_dir, progress, console, skipped)
                if n:
                    frames += n
                    videos.append(str(out_dir / "overlay" / f"{item.name}.mp4"))
    finally:
        writer.close()  # the last files, before saying they are there
    say(console, f"{frames} frames from {len(items) - len(skipped)} files -> {out_dir}; "
                 f"skipped {len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''}")
    return {"frames": frames, "files": len(items), "skipped": skipped, "videos": videos,
            "output_dir": str(out_dir)}


def _predict_video(item: Item, size, batch_size: int, run: Predictor, out_dir: Path,
                   progress: Progress, console: Console, skipped: list[str]) -> int:
    """Segment one video's frames and write its overlay video; 0 when it cannot be read."""
    import av

    state: dict = {}
    frames = video_frames(item, size, state)
    writer, done, ok = None, 0, False
    try:
        task = None
        for batch in batched(frames, batch_size):
            if writer is None:
                writer = VideoWriter(out_dir / "overlay" / f"{item.name}.mp4", state["rate"])
                task = progress.add_task(item.name, total=state["frames"])
            for overlay in run(batch):
                writer.add(overlay)
            done += len(batch)
            progress.update(task, completed=done)
        ok = done > 0
    except (av.error.FFmpegError, _NotAVideo) as e:
        say(console, f"skipped {item.path}: cannot read it as a video ({e})")
        skipped.append(str(item.path))
        done = 0
    finally:
        if writer is not None:
            writer.close(ok)
    if not ok and str(item.path) not in skipped:
        say(console, f"skipped {item.path}: no frames in it")
        skipped.append(str(item.path))
    return done


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    if HydraConfig.initialized():
        log.info("outputs: %s", HydraConfig.get().runtime.output_dir)
    with errors_as_one_line([cfg.paths.cache_dir, cfg.output_dir]):
        predict(cfg)


if __name__ == "__main__":
    main()
