"""The matplotlib plots: honest axis ranges (known answers), labelled axes, spreads drawn as bars."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluate.plots import Series, honest_range, iou_bars, line_plot


@pytest.mark.parametrize("values,top,expected", [
    ([0.30, 0.20, 0.15], None, (0.0, 0.3 + 0.05 * 0.3)),  # a falling loss: the axis starts at 0, not at 0.15
    ([4.8, 4.6], None, (0.0, 4.8 * 1.05)),
    ([20.0, 80.0], 100.0, (0.0, 84.0)),
    ([20.0, 99.0], 100.0, (0.0, 100.0)),                  # capped at the top of a percentage
    ([-2.0, 2.0], None, (-2.2, 2.2)),                     # negative values: padded below too
    ([math.nan, 1.0], None, (0.0, 1.05)),
    ([], 100.0, (0.0, 100.0)),
])
def test_honest_range_known_answers(values, top, expected):
    assert honest_range(values, top=top) == pytest.approx(expected)


def test_line_plot_records_its_labels_and_draws_a_picture():
    plot = line_plot("t", [Series("a", [1, 2, 3], [0.3, 0.2, 0.15])], "training step", "loss (unitless)")
    assert (plot.x_label, plot.y_label, plot.legend) == ("training step", "loss (unitless)", ("a",))
    assert plot.y_range[0] == 0.0
    assert plot.rgb.dtype == np.uint8 and plot.rgb.ndim == 3 and plot.rgb.shape[2] == 3
    assert len(np.unique(plot.rgb.reshape(-1, 3), axis=0)) > 20  # text, line and grid, not a blank canvas


def test_error_bars_widen_the_range_and_change_the_picture():
    kw = dict(x_label="M", y_label="mIoU (%)", y_top=100.0)
    plain = line_plot("t", [Series("a", [1, 2], [50.0, 60.0])], **kw)
    bars = line_plot("t", [Series("a", [1, 2], [50.0, 60.0], spread=[30.0, 30.0])], **kw)
    assert plain.y_range == pytest.approx((0.0, 63.0)) and bars.y_range == pytest.approx((0.0, 94.5))
    assert plain.rgb.shape == bars.rgb.shape and (plain.rgb != bars.rgb).any()


def test_iou_bars_span_0_to_100_percent():
    plot = iou_bars(["road", "sky"], [("pre-trained", np.array([50.0, np.nan])), ("random init", np.array([10.0, 5.0]))])
    assert plot.x_label == "IoU (%)" and plot.y_range == (0.0, 100.0) and plot.legend == ("pre-trained", "random init")
    assert plot.rgb.shape[1] >= 600


def test_method_lines_never_take_a_peer_colour():
    series = [Series(f"m{i}", [4], [10.0 + i], spread=[1.0]) for i in range(9)]
    series += [Series("picie", [0, 4], [12.0, 12.0], colour="tab:brown", dashed=True)]
    plot = line_plot("t", series, "M", "mIoU (%)", dodge=0.06)
    assert plot.colours[-1] == "tab:brown" and "tab:brown" not in plot.colours[:-1]
    assert len(set(plot.colours[:9])) == 9  # nine methods, nine colours
