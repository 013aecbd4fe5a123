"""Report pictures: class colours, PCA maps and the confusion picture."""
from __future__ import annotations

import numpy as np
import torch

from evaluate.report_pictures import (NO_CLASS_COLOUR, class_palette, colourise, confusion_picture, iou_bars,
                                      panel, pca_rgb)
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


def test_panel_and_bars_have_content():
    tiles = [("a", np.zeros((8, 16, 3), np.uint8)), ("b", np.full((4, 4, 3), 200, np.uint8))]
    p = panel(tiles, height=20)
    assert p.shape[0] > 20 and p.shape[1] >= 40 + 20
    bars = iou_bars(["x", "y"], [("m", np.array([50.0, np.nan]), (0, 0, 255))])
    assert (bars == [0, 0, 255]).all(-1).sum() > 50 * 3  # a bar of 50 % at 3 px per percent


def test_axis_map_known_pixels():
    from evaluate.report_pictures import axis_map

    lin = axis_map(0.0, 100.0, 10, 110)
    assert (lin(0), lin(50), lin(100), lin(-5), lin(500)) == (10, 60, 110, 10, 110)
    log = axis_map(10.0, 1000.0, 0, 200, log=True)
    assert (log(10), log(100), log(1000)) == (0, 100, 200)
    down = axis_map(0.0, 10.0, 100, 0)  # image rows grow downwards
    assert (down(0), down(10), down(2.5)) == (100, 0, 75)


def test_line_chart_draws_each_series_where_its_points_are():
    from evaluate.report_pictures import axis_map, line_chart

    red, blue = (214, 39, 40), (31, 119, 180)
    img = line_chart("t", [("a", [10, 100], [20, 80], red), ("b", [1000], [50], blue)], "regions", "mIoU",
                     x_range=(10, 1000), y_range=(0, 100), size=(300, 460))
    assert img.shape == (300, 460, 3) and img.dtype == np.uint8
    from evaluate.report_pictures import _font, _text_size

    legend_w = max(_text_size("a", _font())[0], _text_size("b", _font())[0]) + 26  # the legend's column
    to_x, to_y = axis_map(10, 1000, 44, 460 - 10 - legend_w, log=True), axis_map(0, 100, 270, 30)
    for (x, y), colour in (((10, 20), red), ((100, 80), red), ((1000, 50), blue)):
        assert tuple(img[to_y(y), to_x(x)]) == colour
    # the segment between the two red points passes through their midpoint
    mx, my = (to_x(10) + to_x(100)) // 2, (to_y(20) + to_y(80)) // 2
    near = img[my - 2:my + 3, mx - 2:mx + 3].reshape(-1, 3)
    assert any(tuple(p) == red for p in near)


def test_line_chart_error_bars_reach_above_and_below_the_point():
    from evaluate.report_pictures import axis_map, line_chart

    red = (214, 39, 40)
    kw = dict(x_label="M", y_label="mIoU", x_range=(0, 10), y_range=(0, 100), x_log=False, size=(200, 300))
    plain = line_chart("t", [("a", [5], [50], red)], **kw)
    bars = line_chart("t", [("a", [5], [50], red)], errors={"a": [20]}, **kw)
    to_y = axis_map(0, 100, 200 - 30, 30)  # the chart's own y mapping (top 30, bottom 30)
    plot = slice(44, 200)  # the plotting area's columns, left of the legend's swatches
    rows = np.flatnonzero((bars[:, plot] == np.array(red, dtype=np.uint8)).all(-1).any(1))
    plain_rows = np.flatnonzero((plain[:, plot] == np.array(red, dtype=np.uint8)).all(-1).any(1))
    assert rows.min() <= to_y(70) and rows.max() >= to_y(30)  # the bar spans 50 +- 20
    assert plain_rows.min() > to_y(70)  # no bar without errors
