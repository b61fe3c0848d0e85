"""Panels and label colours."""

import numpy as np

from nightseg.core.visualize import CITYSCAPES_PALETTE, colorize, panel
from nightseg.data.catalog import CITYSCAPES_CLASSES


def test_colours_follow_class_meaning_across_datasets():
    camvid = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
              "pedestrian", "bicyclist"]
    out = colorize(np.array([[5, 255]]), camvid)
    assert tuple(out[0, 0]) == tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index("vegetation")])
    assert tuple(out[0, 1]) == (0, 0, 0)  # ignore
    unknown = colorize(np.array([[0, 1]]), ["thing_a", "thing_b"])
    assert tuple(unknown[0, 0]) != tuple(unknown[0, 1])


def test_panel_tiles_rows_with_white_gaps():
    h, w, gap = 4, 6, 2
    tiles = [[np.full((h, w, 3), 10 * (3 * i + j + 1), np.uint8) for j in range(3)] for i in range(2)]
    tiles[1] = tiles[1][:2]  # a shorter row is filled up with white
    out = panel(tiles, gap=gap)
    assert out.shape == (h * 2 + gap, w * 3 + gap * 2, 3) and out.dtype == np.uint8
    white = np.ones(out.shape[:2], bool)
    for i, row in enumerate(tiles):
        for j, img in enumerate(row):
            y, x = i * (h + gap), j * (w + gap)
            assert np.array_equal(out[y:y + h, x:x + w], img), (i, j)  # each image at its place
            white[y:y + h, x:x + w] = False
    assert (out[white] == 255).all()  # gaps and the missing tile are white, no border outside
    single = tiles[0][0]
    assert np.array_equal(panel([[single]]), single)
