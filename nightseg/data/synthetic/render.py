"""One synthetic scene from (seed, split, index, image size): layout, G-buffer, day and night light.

Every image is a pure function of those four: each split draws its scenes from its own random
stream, and within a scene the layout, the rasterizer, the day and the night lighting each take
their own generator, so one split's count never changes another's images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nightseg.data.synthetic.day import render_day
from nightseg.data.synthetic.layout import sample_layout
from nightseg.data.synthetic.night import render_night
from nightseg.data.synthetic.scene import rasterize

# Bump whenever a change to the generator alters any pixel: old caches then stay untouched
# under their own directory instead of being mixed with new images.
GENERATOR_VERSION = 1
SPLITS = ("translate_day", "translate_night", "train", "val", "test")
# Each split draws its scenes from its own random stream (never renumber: it changes the images).
SPLIT_STREAMS = {"translate_day": 1, "translate_night": 2, "train": 3, "val": 4, "test": 5}
# Files per split: (image kind, label kind, reference kind); the image kind is what a model sees.
SPLIT_FILES = {"translate_day": ("day", "label", None), "translate_night": ("night", "label", None),
               "train": ("day", "label", None), "val": ("day", "label", None),
               "test": ("night", "label", "day")}


def render_scene(seed: int, split: str, index: int, image_size: Sequence[int],
                 kinds: Sequence[str] = ("day", "night", "label")) -> dict[str, np.ndarray]:
    """Render one scene: ``day``/``night`` (H, W, 3) uint8 RGB and ``label`` (H, W) uint8 ids."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"unknown synthetic split {split!r}; use one of {', '.join(SPLITS)}")

    def rng(stream: int) -> np.random.Generator:
        return np.random.default_rng([seed, SPLIT_STREAMS[split], index, stream])

    rows, cols = (int(v) for v in image_size)
    layout = sample_layout(rng(0))
    gb = rasterize(layout, rows, cols, rng(1))
    out = {"label": gb.label}
    if "day" in kinds:
        out["day"] = render_day(gb, layout, rng(2))
    if "night" in kinds:
        out["night"] = render_night(gb, layout, rng(3))
    return out
