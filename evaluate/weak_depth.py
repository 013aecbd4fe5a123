"""Exact depth made as weak as an off-the-shelf monocular network's, for the proposal benchmark.

The paper's grouping holds on the synthetic city's exact depth and fails on real frames with the
relative disparity of a small public network (issue 17). Blur alone or noise alone does not make
that failure; the combination does: a compressed disparity range, blurred occlusion edges and
low-frequency multiplicative noise. `degrade_depth` applies exactly that, in that order, as a pure
function of the depth map and a seed, so condition (c) of the benchmark is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_HEIGHT = 384  # pixel sizes below are at this image height and scale with it


@dataclass(frozen=True)
class WeakDepth:
    """How weak the degraded depth is (pixel sizes at a 384-pixel-high frame)."""

    # the shipped network's disparity spans about 4x between its nearest and farthest pixel, where the
    # exact disparity of a street spans about 100x: the range compresses to this ratio
    range_ratio: float = 4.0
    # percentiles of the exact disparity mapped to the ends of that range (the outliers are clipped),
    # as the shipped disparity was clipped at its 0.5 / 99.5 percentiles
    clip_percentile: float = 1.0
    # Gaussian blur of the disparity: occlusion edges smeared over about 4 px, as the network's are
    blur_px: float = 4.0
    # multiplicative noise, std of log(disparity): the grain of the network's flat road
    noise: float = 0.08
    # the noise is spatially smoothed over this many pixels (white noise would average out inside a
    # superpixel; smooth noise tilts whole superpixels, which is what breaks the normals)
    noise_px: float = 8.0


def degrade_depth(depth: np.ndarray, seed: int, weak: WeakDepth = WeakDepth()) -> np.ndarray:
    """depth [H, W] > 0 (any unit) -> weak depth float32 [H, W] > 0 (relative, no unit).

    In disparity (1 / depth): affine map of the [p, 100 - p] percentile range onto [1, range_ratio]
    (clipped outside), Gaussian blur, then times exp(noise * n) with n a Gaussian-smoothed standard
    normal field of unit std drawn from `seed`. The same depth and seed give the same bytes."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got {depth.shape}")
    if not np.all(np.isfinite(depth)) or not np.all(depth > 0):
        raise ValueError("depth must be finite and > 0 everywhere")
    if weak.range_ratio < 1:
        raise ValueError(f"range_ratio must be >= 1, got {weak.range_ratio}")
    from scipy import ndimage  # here, not at the top: the sweep's --help imports this module

    s = depth.shape[0] / REFERENCE_HEIGHT
    disp = 1.0 / depth.astype(np.float64)
    lo, hi = np.percentile(disp, [weak.clip_percentile, 100.0 - weak.clip_percentile])
    unit = (np.clip(disp, lo, hi) - lo) / (hi - lo) if hi > lo else np.zeros_like(disp)
    d = 1.0 + (weak.range_ratio - 1.0) * unit
    if weak.blur_px > 0:
        d = ndimage.gaussian_filter(d, weak.blur_px * s, mode="nearest")
    if weak.noise > 0:
        field = np.random.default_rng(seed).standard_normal(d.shape)
        if weak.noise_px > 0:
            field = ndimage.gaussian_filter(field, weak.noise_px * s, mode="wrap")
        field /= max(float(field.std()), 1e-12)
        d = d * np.exp(weak.noise * field)
    return (1.0 / d).astype(np.float32)
