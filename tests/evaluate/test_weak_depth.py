"""The benchmark's depth degradation: a pure, seeded function with known answers per step."""
from __future__ import annotations

import numpy as np
import pytest

from evaluate.weak_depth import WeakDepth, degrade_depth

OFF = WeakDepth(blur_px=0.0, noise=0.0, clip_percentile=0.0)  # range compression only


def street(h: int = 96, w: int = 192) -> np.ndarray:
    """Depth of a ground plane below the horizon and a wall at 60 m above it: 1..60 m."""
    rows = np.arange(h)[:, None] + 0.5
    below = rows > h / 2
    ground = 1.5 * (0.6 * w) / np.maximum(rows - h / 2, 1e-3)
    return np.where(below, np.minimum(ground, 60.0), 60.0).repeat(w, axis=1).astype(np.float32)


def test_range_is_compressed_to_the_ratio_and_order_is_kept():
    depth = street()
    out = degrade_depth(depth, seed=0, weak=OFF)
    disp = 1.0 / out.astype(np.float64)
    assert disp.min() == pytest.approx(1.0) and disp.max() == pytest.approx(4.0)
    # an affine map of disparity: nearer stays nearer, equal stays equal
    order = np.argsort(depth.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)
    a = 1.0 / depth.astype(np.float64)
    np.testing.assert_allclose(disp, 1 + 3 * (a - a.min()) / (a.max() - a.min()), rtol=1e-6)


def test_outliers_beyond_the_percentiles_are_clipped():
    depth = street()
    depth[0, 0] = 1e-3  # one absurdly near pixel
    out = degrade_depth(depth, seed=0, weak=WeakDepth(blur_px=0.0, noise=0.0, clip_percentile=1.0))
    disp = 1.0 / out.astype(np.float64)
    assert disp.max() == pytest.approx(4.0) and disp[0, 0] == pytest.approx(4.0)


def test_blur_smears_a_step_symmetrically():
    depth = np.ones((64, 64), np.float32)
    depth[:, 32:] = 4.0  # disparity 1 | 0.25 -> compressed 4 | 1
    out = degrade_depth(depth, seed=0, weak=WeakDepth(blur_px=4.0, noise=0.0, clip_percentile=0.0))
    disp = 1.0 / out[10].astype(np.float64)
    # far from the step: untouched; at the step: half way between the two sides
    assert disp[0] == pytest.approx(4.0, abs=1e-6) and disp[-1] == pytest.approx(1.0, abs=1e-6)
    assert 0.5 * (disp[31] + disp[32]) == pytest.approx(2.5, abs=1e-6)
    assert 1.0 < disp[32] < disp[31] < 4.0  # smeared over a few pixels, not a step any more
    assert disp[24] > 3.9 and disp[40] < 1.1  # ... and only a few


def test_noise_is_multiplicative_smooth_and_of_the_given_strength():
    depth = np.full((192, 384), 10.0, np.float32)
    depth[:, :2] = 5.0  # something for the range to span
    weak = WeakDepth(blur_px=0.0, noise=0.08, noise_px=8.0, clip_percentile=0.0)
    clean = degrade_depth(depth, seed=0, weak=WeakDepth(blur_px=0.0, noise=0.0, clip_percentile=0.0))
    out = degrade_depth(depth, seed=3, weak=weak)
    log_ratio = np.log(clean.astype(np.float64) / out)
    assert log_ratio.std() == pytest.approx(0.08, rel=1e-3)
    # smooth: neighbours nearly agree (white noise would give a correlation near 0)
    corr = np.corrcoef(log_ratio[:, :-1].ravel(), log_ratio[:, 1:].ravel())[0, 1]
    assert corr > 0.95


def test_pure_seeded_and_scale_free():
    depth = street()
    before = depth.copy()
    a = degrade_depth(depth, seed=7)
    np.testing.assert_array_equal(depth, before)  # input untouched
    assert a.dtype == np.float32 and np.all(a > 0) and np.all(np.isfinite(a))
    assert degrade_depth(depth, seed=7).tobytes() == a.tobytes()
    assert not np.array_equal(degrade_depth(depth, seed=8), a)
    # depth known only up to scale: the degraded map does not depend on it
    np.testing.assert_allclose(degrade_depth(depth * 37.0, seed=7), a, rtol=1e-5)


def test_bad_depth_is_rejected():
    with pytest.raises(ValueError):
        degrade_depth(np.zeros((4, 4), np.float32), seed=0)
    with pytest.raises(ValueError):
        degrade_depth(np.ones((4, 4, 1), np.float32), seed=0)
