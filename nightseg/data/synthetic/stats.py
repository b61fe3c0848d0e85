"""Looking at the synthetic dataset: a preview grid and the figures a dataset card needs
(per-class pixel frequency, day vs night luma and colour, rendering speed).

Used by ``python -m nightseg.data.synthetic --preview PATH --stats N``; timings are printed,
never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nightseg.core.files import atomic_path
from nightseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX
from nightseg.data.synthetic.day import render_day
from nightseg.data.synthetic.layout import sample_layout
from nightseg.data.synthetic.night import render_night
from nightseg.data.synthetic.render import SPLIT_STREAMS, render_scene
from nightseg.data.synthetic.scene import rasterize

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as in JPEG/YCbCr


def luma(img: np.ndarray) -> float:
    """Mean BT.601 luma of an (H, W, 3) uint8 image, 0..255."""
    return float((img.reshape(-1, 3).astype(np.float32) @ LUMA).mean())


def chroma(img: np.ndarray) -> np.ndarray:
    """Mean (Cb, Cr) offsets of an (H, W, 3) uint8 image: blue-yellow and red-cyan casts."""
    x = img.reshape(-1, 3).astype(np.float32)
    y = x @ LUMA
    return np.array([((x[:, 2] - y) * 0.564).mean(), ((x[:, 0] - y) * 0.713).mean()])


def preview(path: Path, seed: int, size: tuple[int, int], n: int, split: str = "train") -> None:
    """A grid with one row per scene: day | night | colourised label."""
    from PIL import Image

    from nightseg.core.visualize import colorize, panel

    rows = []
    for i in range(n):
        s = render_scene(seed, split, i, size)
        rows.append([s["day"], s["night"], colorize(s["label"])])
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(panel(rows)).save(tmp, format="PNG")


def print_stats(seed: int, size: tuple[int, int], n: int, split: str = "train") -> None:
    """Render ``n`` scenes and print class frequencies, luma/chroma and speed."""
    counts = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    day_l, night_l, day_c, night_c = [], [], [], []
    t = np.zeros(4)
    for i in range(n):
        rng = [np.random.default_rng([seed, SPLIT_STREAMS[split], i, k]) for k in range(4)]
        t0 = time.perf_counter()
        layout = sample_layout(rng[0])
        t1 = time.perf_counter()
        gb = rasterize(layout, size[0], size[1], rng[1])
        t2 = time.perf_counter()
        day = render_day(gb, layout, rng[2])
        t3 = time.perf_counter()
        night = render_night(gb, layout, rng[3])
        t4 = time.perf_counter()
        t += (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        c = np.bincount(gb.label.ravel(), minlength=256)
        counts += c
        present += c > 0
        day_l.append(luma(day))
        night_l.append(luma(night))
        day_c.append(chroma(day))
        night_c.append(chroma(night))
    total = counts.sum()
    print(f"{n} scenes at {size[0]}x{size[1]}, seed {seed}")
    print(f"{'class':<14}{'pixels %':>9}{'in scenes %':>13}")
    for k, name in enumerate(CITYSCAPES_CLASSES):
        print(f"{k:>2} {name:<11}{100 * counts[k] / total:>9.2f}{100 * present[k] / n:>13.0f}")
    print(f"{IGNORE_INDEX} {'ignore':<10}{100 * counts[IGNORE_INDEX] / total:>9.2f}"
          f"{100 * present[IGNORE_INDEX] / n:>13.0f}")
    dl, nl = np.mean(day_l), np.mean(night_l)
    print(f"mean luma: day {dl:.1f}, night {nl:.1f} (ratio {nl / dl:.2f}); "
          f"mean (Cb, Cr): day {np.round(np.mean(day_c, 0), 1)}, night {np.round(np.mean(night_c, 0), 1)}")
    ms = 1000 * t / n
    print(f"ms per scene: layout {ms[0]:.1f}, rasterize {ms[1]:.1f}, day {ms[2]:.1f}, night {ms[3]:.1f}, "
          f"total {ms.sum():.1f} (one core, PNG encoding not included)")
