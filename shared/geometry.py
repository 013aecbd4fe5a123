"""Camera geometry on depth maps: back-projection, per-axis scale normalisation, surface tangents and
normals, and per-superpixel statistics (numba kernels; single-threaded, called once per frame).

Conventions (docs/design.md#region-grouping):
  * camera frame: X right, Y UP, Z forward. Image rows grow downwards, so Y = -(v - cy) * z / fy and
    Y < 0 is below the horizon row (the principal point).
  * pixel (row r, col c) has its centre at (u, v) = (c + 0.5, r + 0.5), matching `Frame.K`.
  * monocular depth is known only up to scale, so the grouping divides X, Y and Z each by its own
    standard deviation over the image (`normalise_axes`): the edge terms then do not depend on the
    depth scale, and hardly on the focal lengths.
"""
from __future__ import annotations

import numpy as np

from shared.jit import njit

_EPS = 1e-12


@njit(cache=True, nogil=True)
def _backproject(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    h, w = depth.shape
    out = np.empty((h, w, 3), dtype=np.float64)
    for r in range(h):
        y_ray = -((r + 0.5) - cy) / fy
        for c in range(w):
            z = np.float64(depth[r, c])
            out[r, c, 0] = ((c + 0.5) - cx) / fx * z
            out[r, c, 1] = y_ray * z
            out[r, c, 2] = z
    return out


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """depth [H, W] (any positive unit) + 3x3 pixel intrinsics -> camera points [H, W, 3] float64."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got {depth.shape}")
    K = np.asarray(K, dtype=np.float64)
    return _backproject(np.ascontiguousarray(depth), K[0, 0], K[1, 1], K[0, 2], K[1, 2])


def normalise_axes(points: np.ndarray) -> np.ndarray:
    """points [H, W, 3] -> points / std over the image, per axis (no centring: Y keeps its sign, so
    'below the horizon' survives the normalisation)."""
    std = points.reshape(-1, 3).std(axis=0)
    return points / np.maximum(std, _EPS)


@njit(cache=True, nogil=True)
def _tangents(points: np.ndarray) -> np.ndarray:
    # Central differences inside, one-sided at the border (as np.gradient). Dividing by z makes a
    # pixel's tangent length independent of its distance, so a superpixel mean is not dominated by
    # its farthest pixels.
    h, w, _ = points.shape
    out = np.empty((h, w, 2, 3), dtype=np.float64)
    for r in range(h):
        r0 = r - 1 if r > 0 else r
        r1 = r + 1 if r < h - 1 else r
        for c in range(w):
            c0 = c - 1 if c > 0 else c
            c1 = c + 1 if c < w - 1 else c
            z = points[r, c, 2]
            inv = 1.0 / z if z > 1e-12 else 0.0
            dc = inv / max(c1 - c0, 1)
            dr = inv / max(r1 - r0, 1)
            for k in range(3):
                out[r, c, 0, k] = (points[r, c1, k] - points[r, c0, k]) * dc
                out[r, c, 1, k] = (points[r1, c, k] - points[r0, c, k]) * dr
    return out


def pixel_tangents(points: np.ndarray) -> np.ndarray:
    """points [H, W, 3] -> tangents [H, W, 2, 3]: [..., 0, :] = d/dcol, [..., 1, :] = d/drow, each / z."""
    return _tangents(np.ascontiguousarray(points, dtype=np.float64))


def normals_from_tangents(t_col: np.ndarray, t_row: np.ndarray) -> np.ndarray:
    """[..., 3] tangents along columns (right) and rows (down) -> unit normals [..., 3] facing the
    camera: the ground faces up (+Y), a wall ahead faces the camera (-Z)."""
    n = np.cross(t_col, t_row)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), _EPS)


def pixel_normals(points: np.ndarray) -> np.ndarray:
    """points [H, W, 3] -> per-pixel unit normals [H, W, 3]."""
    t = pixel_tangents(points)
    return normals_from_tangents(t[..., 0, :], t[..., 1, :])


@njit(cache=True, nogil=True)
def _superpixel_sums(labels: np.ndarray, points: np.ndarray, tangents: np.ndarray, n: int):
    counts = np.zeros(n, dtype=np.int64)
    sum_p = np.zeros((n, 3), dtype=np.float64)
    sum_t = np.zeros((n, 2, 3), dtype=np.float64)
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            s = labels[r, c]
            counts[s] += 1
            for k in range(3):
                sum_p[s, k] += points[r, c, k]
                sum_t[s, 0, k] += tangents[r, c, 0, k]
                sum_t[s, 1, k] += tangents[r, c, 1, k]
    return counts, sum_p, sum_t


def superpixel_stats(labels: np.ndarray, points: np.ndarray, tangents: np.ndarray,
                     n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-superpixel mean 3D centre and mean normal in one pass over the pixels.

    labels [H, W] int (0..n-1), points [H, W, 3], tangents [H, W, 2, 3]
    -> centres [n, 3], normals [n, 3] (unit; the normal of the mean tangents, which averages out
    depth noise better than averaging per-pixel unit normals), counts [n] (pixels per superpixel).
    Empty labels get zero centres and normals.
    """
    labels = np.ascontiguousarray(labels)
    if labels.min() < 0:
        raise ValueError("superpixel labels must be >= 0")
    n = int(labels.max()) + 1 if n is None else int(n)
    counts, sum_p, sum_t = _superpixel_sums(labels, np.ascontiguousarray(points, dtype=np.float64),
                                            np.ascontiguousarray(tangents, dtype=np.float64), n)
    denom = np.maximum(counts, 1).astype(np.float64)
    centres = sum_p / denom[:, None]
    mean_t = sum_t / denom[:, None, None]
    normals = normals_from_tangents(mean_t[:, 0], mean_t[:, 1])
    return centres, normals, counts
