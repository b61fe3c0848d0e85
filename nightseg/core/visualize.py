"""Image panels: colourised labels and input | translated | prediction | ground-truth grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nightseg.core.classes import CITYSCAPES_CLASSES, IGNORE_INDEX

# The Cityscapes train-id colours (Cordts et al. 2016), used for any 19-class label map.
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)


# Other datasets' class names that mean a Cityscapes class, so that e.g. CamVid's "tree" is drawn
# in Cityscapes' vegetation green.
ALIASES = {"pavement": "sidewalk", "tree": "vegetation", "sign_symbol": "traffic_sign",
           "pedestrian": "person", "bicyclist": "bicycle"}


def palette(class_names: Sequence[str]) -> np.ndarray:
    """A colour per class: the Cityscapes colour of the class (or of its alias), else a fixed
    pseudo-random colour."""
    rng = np.random.default_rng(0)
    colours = []
    for name in class_names:
        name = ALIASES.get(name, name)
        if name in CITYSCAPES_CLASSES:
            colours.append(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)])
        else:
            colours.append(rng.integers(0, 256, size=3, dtype=np.uint8))
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def colorize(mask: np.ndarray | torch.Tensor,
             class_names: Sequence[str] = CITYSCAPES_CLASSES) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ignore (255) is black."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(class_names)] = palette(class_names)
    lut[IGNORE_INDEX] = 0
    return lut[m.astype(np.uint8)]


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) float [0, 1] tensor or (H, W, 3) uint8 array -> (H, W, 3) uint8."""
    if isinstance(img, torch.Tensor):
        return img.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.asarray(img, dtype=np.uint8)


def gate_marked(img: np.ndarray, translated: bool, height: int = 4) -> np.ndarray:
    """``img`` with a bar along its top: green where the day/night gate translated the image,
    grey where it kept it as it was."""
    out = img.copy()
    out[:height] = (0, 200, 0) if translated else (128, 128, 128)
    return out


def panel(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile rows of equally sized (H, W, 3) uint8 images into one image with white gaps between
    them (none around the edge); a shorter row is filled up with white."""
    from torchvision.utils import make_grid

    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    white = np.full((h, w, 3), 255, dtype=np.uint8)
    tiles = [img for row in rows for img in [*row, *[white] * (ncol - len(row))]]
    if len(tiles) == 1:  # make_grid returns a lone image as it is, without padding
        return np.array(tiles[0], dtype=np.uint8)
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    grid = make_grid(batch, nrow=ncol, padding=gap, pad_value=255)  # also pads the outer edge
    return grid[:, gap:grid.shape[1] - gap, gap:grid.shape[2] - gap].permute(1, 2, 0).numpy().copy()


def save_png(img: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path
