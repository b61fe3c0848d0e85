"""Build the synthetic dataset on disk and describe it as a DataCatalog (``build_catalog``).

Images are written once as PNG under ``root/v<GENERATOR_VERSION>_seed<seed>_<rows>x<cols>/`` and
reused: a larger count only renders the missing scenes. A file lock keeps concurrent jobs from
rendering twice, every file appears atomically and the manifest is written last; many scenes are
rendered in worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from numbers import Integral
from pathlib import Path

import cv2
import numpy as np
from filelock import FileLock

from nightseg.core.errors import ConfigError
from nightseg.core.files import atomic_path, write_json
from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, Sample, SampleSet
from nightseg.data.synthetic.render import (
    GENERATOR_VERSION,
    SPLIT_FILES,
    SPLIT_STREAMS,
    SPLITS,
    render_scene,
)

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 64, 4096
POOL_MIN = 48      # below this many scenes, starting worker processes costs more than it saves
MAX_WORKERS = 2


def dataset_dir(root: str | os.PathLike, seed: int, image_size: Sequence[int]) -> Path:
    """Where one (seed, size, generator version) dataset lives under ``root``."""
    rows, cols = image_size
    return Path(root) / f"v{GENERATOR_VERSION}_seed{seed}_{rows}x{cols}"


def _path(key: Path, split: str, kind: str, index: int) -> Path:
    return key / split / kind / f"{split}_{index:05d}.png"


def build_catalog(root: str | os.PathLike, seed: int, image_size: Sequence[int],
                  counts: Mapping[str, int], day_test: bool = False) -> DataCatalog:
    """The synthetic dataset as a DataCatalog, rendering whatever ``root`` does not hold yet.

    ``image_size`` = [rows, cols]; ``counts`` maps split names (translate_day, translate_night,
    train, val, test) to image counts, missing splits meaning 0. ``day_test``: also score the
    test scenes by day (their true day renderings, the same labels) as the test set
    ``synthetic_day_test`` beside ``synthetic_night``: a mixed day+night test for the gate.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A spawned worker is importing a main script that calls us at top level; waiting for the
        # lock our parent holds would hang forever, so fail (the parent then renders serially).
        raise RuntimeError("nightseg.data.synthetic.build_catalog was called while a worker process "
                           "imported the main script; put the script's top-level code under "
                           "`if __name__ == '__main__':`")
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise ConfigError(f"data.catalog.root must be a directory path, got {root!r}; "
                          "e.g. data.catalog.root=.cache/nightseg/synthetic (the default is "
                          "${paths.cache_dir}/synthetic)")
    seed = check_seed(seed)
    size = check_size(image_size)
    counts = _check_counts(counts)
    key = dataset_dir(root, seed, size)
    if _missing(key, counts) or not _manifest_covers(key, counts):
        key.mkdir(parents=True, exist_ok=True)
        with FileLock(str(key / ".lock")):
            _remove_stale_temporaries(key)
            todo = _missing(key, counts)  # again: another job may have rendered them meanwhile
            if todo:
                _generate(key, seed, size, todo)
            _write_manifest(key, seed, size, counts)
    return _catalog(key, counts, bool(day_test))


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ConfigError(f"data.seed must be a non-negative integer, got {seed!r}; e.g. data.seed=0")
    return int(seed)


def check_size(image_size) -> tuple[int, int]:
    ok = (isinstance(image_size, Sequence) and not isinstance(image_size, (str, bytes))
          and len(image_size) == 2
          and all(isinstance(v, Integral) and not isinstance(v, bool) for v in image_size))
    if not ok or not all(MIN_SIZE <= v <= MAX_SIZE for v in image_size):
        raise ConfigError(f"data.image_size must be [rows, cols], two integers from {MIN_SIZE} to "
                          f"{MAX_SIZE}, got {_show(image_size)}; e.g. data.image_size=[128,256]")
    return int(image_size[0]), int(image_size[1])


def _check_counts(counts) -> dict[str, int]:
    if not isinstance(counts, Mapping):
        raise ConfigError(f"data.counts must be a mapping of split -> image count, got {_show(counts)}; "
                          f"e.g. data.counts={{train: 1000, val: 100}} (splits: {', '.join(SPLITS)})")
    out = dict.fromkeys(SPLITS, 0)
    for name, n in counts.items():
        if name not in SPLIT_STREAMS:
            raise ConfigError(f"data.counts.{name} is not a synthetic split; remove it or use one of "
                              f"{', '.join(SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
            raise ConfigError(f"data.counts.{name} must be a non-negative integer, got {n!r}; "
                              f"e.g. data.counts.{name}=100")
        out[name] = int(n)
    return out


def _show(value) -> str:
    if isinstance(value, Mapping):
        return repr(dict(value))
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return repr(list(value))
    return repr(value)


def _listing(directory: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(directory)
                if e.name.endswith(".png") and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def _missing(key: Path, counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(split, index) of every requested scene with a file not on disk (one listing per folder)."""
    todo = []
    for split, n in counts.items():
        if not n:
            continue
        kinds = [k for k in SPLIT_FILES[split] if k]
        have = [_listing(key / split / k) for k in kinds]
        todo += [(split, i) for i in range(n)
                 if not all(f"{split}_{i:05d}.png" in h for h in have)]
    return todo


def _manifest_covers(key: Path, counts: Mapping[str, int]) -> bool:
    import json

    try:
        done = json.loads((key / "manifest.json").read_text())["counts"]
    except (OSError, ValueError, KeyError):
        return False
    return all(done.get(s, 0) >= n for s, n in counts.items())


def _write_manifest(key: Path, seed: int, size: tuple[int, int], counts: Mapping[str, int]) -> None:
    """Record what the folder holds (counts only grow); written after every image it lists."""
    import json

    try:
        old = json.loads((key / "manifest.json").read_text()).get("counts", {})
    except (OSError, ValueError):
        old = {}
    merged = {s: max(int(old.get(s, 0)), counts.get(s, 0)) for s in SPLITS}
    write_json(key / "manifest.json", {
        "generator": "nightseg.data.synthetic", "generator_version": GENERATOR_VERSION, "seed": seed,
        "image_size": list(size), "counts": merged,
        "files": {s: {"image": f[0], "label": f[1], "reference": f[2]} for s, f in SPLIT_FILES.items()},
        "classes": list(CITYSCAPES_CLASSES)})


def _remove_stale_temporaries(key: Path) -> None:
    """Temporaries left by a killed job (we hold the lock, so nobody is writing them)."""
    for tmp in key.glob("*/*/.*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a file, as written by versions before atomic_path
            tmp.unlink(missing_ok=True)


def _write_png(path: Path, image: np.ndarray) -> None:
    """Encode and write a PNG atomically (nightseg.core.files.atomic_path)."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV wants BGR
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _render_task(task: tuple) -> None:
    """Worker: render one scene and write the files its split needs (label, reference, image)."""
    key, seed, size, split, index = task
    key = Path(key)
    image_kind, label_kind, ref_kind = SPLIT_FILES[split]
    arrays = render_scene(seed, split, index, size, kinds=(image_kind, ref_kind or image_kind))
    for kind in (label_kind, ref_kind, image_kind):  # the image last: it marks the scene as done
        if kind:
            _write_png(_path(key, split, kind, index), arrays[kind])


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _generate(key: Path, seed: int, size: tuple[int, int], todo: list[tuple[str, int]]) -> None:
    for split in {s for s, _ in todo}:
        for kind in SPLIT_FILES[split]:
            if kind:
                (key / split / kind).mkdir(parents=True, exist_ok=True)
    tasks = [(str(key), seed, size, split, i) for split, i in todo]
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    parallel = len(tasks) >= POOL_MIN and workers > 1 and not multiprocessing.current_process().daemon
    log.info("rendering %d synthetic scenes into %s (%s)", len(tasks), key,
             f"{workers} processes" if parallel else "serial")
    start = time.perf_counter()
    if len(tasks) < POOL_MIN:
        for t in tasks:
            _render_task(t)
    else:
        from rich.progress import Progress

        with Progress(transient=False) as progress:
            bar = progress.add_task("synthetic scenes", total=len(tasks))
            if parallel:
                tasks = _render_parallel(tasks, workers, lambda: progress.advance(bar))
            for t in tasks:  # serial, or what a failed pool left
                _render_task(t)
                progress.advance(bar)
    log.info("rendered %d scenes in %.1f s", len(todo), time.perf_counter() - start)


def _render_parallel(tasks: list[tuple], workers: int, advance) -> list[tuple]:
    """Render in worker processes; returns the tasks still to do if the pool broke (empty if not).

    spawn, not fork: safe whatever threads the parent (torch, OpenCV, rich) has started.
    ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies while starting (e.g. a main
    script without a ``__main__`` guard) breaks the pool instead of being restarted forever.
    Errors raised by rendering itself (a full disk, ...) propagate unchanged.
    """
    finished = 0
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            for _ in pool.map(_render_task, tasks, chunksize=8):
                finished += 1
                advance()
        return []
    except BrokenProcessPool as e:
        # The image file is written last, so its presence means the scene is complete.
        left = [t for t in tasks if not _path(Path(t[0]), t[3], SPLIT_FILES[t[3]][0], t[4]).exists()]
        log.warning("synthetic: worker processes failed (%s); rendering the remaining %d scenes "
                    "serially. A script that builds the dataset at import time needs an "
                    "`if __name__ == '__main__':` guard to use worker processes.", e, len(left))
        for _ in range(len(tasks) - len(left) - finished):
            advance()
        return left


def _catalog(key: Path, counts: Mapping[str, int], day_test: bool = False) -> DataCatalog:
    def samples(split: str) -> list[Sample]:
        image, label, ref = SPLIT_FILES[split]
        return [Sample(_path(key, split, image, i), _path(key, split, label, i),
                       _path(key, split, ref, i) if ref else None) for i in range(counts[split])]

    test = [SampleSet("synthetic_night", samples("test"), domain="night")]
    if day_test:  # the same scenes by day: their references as the images
        test.append(SampleSet("synthetic_day_test", [Sample(s.reference, s.label)
                                                     for s in test[0].samples], domain="day"))

    return DataCatalog(
        name="synthetic", class_names=CITYSCAPES_CLASSES,
        translate_day=SampleSet("synthetic_translate_day", samples("translate_day")),
        translate_night=SampleSet("synthetic_translate_night", samples("translate_night")),
        train=SampleSet("synthetic_train", samples("train")),
        val=[SampleSet("synthetic_day_val", samples("val"), domain="day")],
        test=test)
