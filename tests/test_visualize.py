"""Panels and label colours."""

import numpy as np

from nightseg.data.catalog import CITYSCAPES_CLASSES
from nightseg.visualize import CITYSCAPES_PALETTE, colorize, panel


def test_colours_follow_class_meaning_across_datasets():
    camvid = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
              "pedestrian", "bicyclist"]
    out = colorize(np.array([[5, 255]]), camvid)
    assert tuple(out[0, 0]) == tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index("vegetation")])
    assert tuple(out[0, 1]) == (0, 0, 0)  # ignore
    unknown = colorize(np.array([[0, 1]]), ["thing_a", "thing_b"])
    assert tuple(unknown[0, 0]) != tuple(unknown[0, 1])


def test_panel_tiles_rows():
    img = np.zeros((4, 6, 3), np.uint8)
    out = panel([[img, img, img], [img, img, img]], gap=2)
    assert out.shape == (4 * 2 + 2, 6 * 3 + 4, 3)
