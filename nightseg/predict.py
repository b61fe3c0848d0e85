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

``format=acdc`` or ``format=dark_zurich`` writes that benchmark's submission instead (its folders
and a zip, nightseg.inference.submission), e.g.

    python -m nightseg.predict format=acdc input=data/acdc/rgb_anon/night/test models.run=<run>
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
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

from nightseg.core.cli import errors_as_one_line
from nightseg.core.errors import ConfigError
from nightseg.deploy.pipelines import check_runtime, load_pipeline
from nightseg.inference.device import PRECISIONS, choose_device, inference_autocast_dtype
from nightseg.inference.frames import Item, NotAVideo, batched, find_inputs, image_frames, say, video_frames
from nightseg.inference.loading import resolve
from nightseg.inference.predictor import Predictor
from nightseg.inference.submission import (
    SubmissionWriter,
    check_classes,
    check_inputs,
    check_options,
)
from nightseg.inference.writers import VideoWriter, Writer

log = logging.getLogger("nightseg")


# ---- running -----------------------------------------------------------------------------------
class _FpsColumn(ProgressColumn):
    """Frames per second so far."""

    def render(self, task: Task) -> Text:
        fps = task.completed / task.elapsed if task.elapsed else 0.0
        return Text(f"{fps:.1f} fps")


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
    sub = cfg.get("submission") or {}
    check_options(str(cfg.get("format", "files")), str(sub.get("ids", "train")),
                  sub.get("invalid_below"))
    return precision, size


def predict(cfg: DictConfig, console: Console | None = None) -> dict:
    """Segment ``cfg.input``; returns ``{"frames", "files", "skipped", "videos", "output_dir",
    "submission"}`` (the zip's path with a benchmark ``format``, else None)."""
    console = console or Console(stderr=True)
    precision, size = check(cfg)
    fmt = str(cfg.get("format", "files"))
    models = resolve(cfg.models, cfg.paths.cache_dir)
    items = find_inputs(str(cfg.input))
    if fmt != "files":
        check_inputs(fmt, items)
    device = choose_device(str(cfg.device))
    loaded = load_pipeline(models, cfg.runtime, cfg.paths.cache_dir)
    out_dir = Path(str(cfg.output_dir))
    if fmt == "files":
        writer = Writer(out_dir, loaded.classes, float(cfg.overlay_alpha))
    else:
        check_classes(fmt, loaded.classes.names)
        sub = cfg.submission
        writer = SubmissionWriter(out_dir, fmt, str(sub.ids), bool(sub.zip), sub.invalid_below)
    run = Predictor(loaded.pipeline, writer, device, inference_autocast_dtype(precision, device))
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
    submission = None
    if fmt != "files":
        submission = writer.package()
        if skipped:  # the server wants every test image: say so beside the zip
            say(console, f"{fmt} submission is incomplete: {len(skipped)} test image(s) could not "
                         "be read (above); restore them and run again before submitting")
        if submission is not None:
            say(console, f"{fmt} submission: {submission}")
    return {"frames": frames, "files": len(items), "skipped": skipped, "videos": videos,
            "output_dir": str(out_dir), "submission": None if submission is None else str(submission)}


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
    except (av.error.FFmpegError, NotAVideo) as e:
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
