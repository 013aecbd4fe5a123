"""The PIL line plot draws each series where its values are: known pixels of a tiny plot."""
from __future__ import annotations

import numpy as np

from evaluate.plots import PALETTE, Series, _nice_range, line_plot


def test_nice_range_rounds_outwards_to_round_steps():
    assert _nice_range(3.2, 17.9) == (0.0, 20.0, 5.0)
    lo, hi, step = _nice_range(5.0, 5.0)  # a flat series still gets a range
    assert lo < 5.0 < hi and step > 0


def _colour_columns(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    mask = (img == np.array(colour, dtype=np.uint8)).all(-1)
    return np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))


def test_rising_series_is_drawn_rising_and_errors_make_it_taller():
    up = Series("up", [0, 2, 4, 8], [10, 20, 30, 40], [0, 0, 0, 0])
    img = line_plot([up], "t", "M", "mIoU", size=(400, 300))
    assert img.shape == (300, 400, 3) and img.dtype == np.uint8
    cols, rows = _colour_columns(img, PALETTE[0])
    # the first marker is low and left, the last high and right (image rows grow downwards)
    mask = (img == np.array(PALETTE[0], dtype=np.uint8)).all(-1)
    plot_cols = cols[cols < 400 - 190]  # leave the legend out
    left_rows = np.flatnonzero(mask[:, plot_cols.min()])
    right_rows = np.flatnonzero(mask[:, plot_cols.max()])
    assert left_rows.mean() > right_rows.mean()
    err = line_plot([Series("up", [0, 2, 4, 8], [10, 20, 30, 40], [5, 5, 5, 5])], "t", "M", "mIoU", size=(400, 300))
    count = lambda im: int((im == np.array(PALETTE[0], dtype=np.uint8)).all(-1).sum())  # noqa: E731
    assert count(err) > count(img) + 4 * 10  # four bars of several pixels each on top of the same line


def test_missing_values_are_skipped_not_drawn_at_zero():
    img = line_plot([Series("gap", [0, 1, 2], [5.0, float("nan"), 5.0], [0, 0, 0])], "t", "x", "y",
                    size=(300, 200))
    assert img.shape == (200, 300, 3)
