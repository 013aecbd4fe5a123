"""Report pictures: class colours, PCA maps and the confusion picture."""
from __future__ import annotations

import numpy as np
import torch

from evaluate.report_pictures import (NO_CLASS_COLOUR, class_palette, colourise, confusion_picture, panel,
                                      pca_rgb)
from shared.labels import IGNORE


def test_palettes_follow_cityscapes_colours():
    paper, picie = class_palette("paper"), class_palette("picie")
    assert paper.shape == (19, 3) and picie.shape == (27, 3)
    assert tuple(paper[0]) == (128, 64, 128)  # road
    assert tuple(paper[13]) == (0, 0, 142)  # car is trainId 13
    assert tuple(picie[19]) == (0, 0, 142)  # and class 19 (labelId 26) of PiCIE's 27
    assert tuple(picie[2]) == (250, 170, 160)  # parking exists only in the 27-class protocol


def test_colourise_marks_ignore_black_and_unmatched_white():
    pal = class_palette("paper")
    rgb = colourise(np.array([[0, 13], [19, IGNORE]]), pal)
    assert rgb.tolist() == [[[128, 64, 128], [0, 0, 142]], [list(NO_CLASS_COLOUR), [0, 0, 0]]]


def test_pca_separates_two_feature_regions_and_is_deterministic():
    f = torch.zeros(8, 4, 6)
    f[0, :, :3] = 1.0  # left half points along e0, right half along e1
    f[1, :, 3:] = 1.0
    a = pca_rgb([f, f.flip(-1)])
    b = pca_rgb([f, f.flip(-1)])
    assert a[0].shape == (4, 6, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    left, right = a[0][:, :3].reshape(-1, 3), a[0][:, 3:].reshape(-1, 3)
    assert (left == left[0]).all() and (right == right[0]).all()
    assert not np.array_equal(left[0], right[0])
    # the map fitted jointly: the flipped map gets the same two colours, swapped sides
    assert np.array_equal(a[1][:, :3], a[0][:, 3:])


def test_confusion_picture_shows_present_classes_only():
    cc = np.zeros((19, 20), np.int64)
    cc[0, 0], cc[0, 1], cc[1, 1], cc[2, 19] = 30, 10, 40, 5  # class 2 predicted only as "no class"
    img = confusion_picture(cc, [f"c{i}" for i in range(19)], cell=10)
    assert img.ndim == 3 and img.shape[2] == 3
    # 3 present rows of 10 px below the header; 3 class columns + "none"
    one = confusion_picture(cc[:2, :2], ["a", "b"], cell=10)
    assert img.shape[1] - one.shape[1] >= 2 * 10  # two more columns (class 2 and "none")


def test_panel_has_content():
    tiles = [("a", np.zeros((8, 16, 3), np.uint8)), ("b", np.full((4, 4, 3), 200, np.uint8))]
    p = panel(tiles, height=20)
    assert p.shape[0] > 20 and p.shape[1] >= 40 + 20
