"""Known answers for back-projection, normals and per-superpixel statistics."""
from __future__ import annotations

import numpy as np

from shared import geometry

K = np.array([[50.0, 0.0, 16.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]])  # image 24 x 32


def ground_depth(h: int, w: int, K: np.ndarray, cam_height: float, far: float) -> np.ndarray:
    """A level camera `cam_height` above a ground plane; rows above the ground see a wall at `far`."""
    v = np.arange(h) + 0.5
    below = v - K[1, 2]
    z = np.where(below > 0, K[1, 1] * cam_height / np.maximum(below, 1e-9), far)
    return np.repeat(np.minimum(z, far)[:, None], w, axis=1)


def test_backproject_known_points():
    depth = np.full((24, 32), 2.0)
    pts = geometry.backproject(depth, K)
    # the pixel whose centre is the principal point (16, 12) -> (row 11.5, col 15.5): not a pixel;
    # pixel (row 0, col 0) has centre (0.5, 0.5)
    np.testing.assert_allclose(pts[0, 0], [(0.5 - 16) / 50 * 2, -(0.5 - 12) / 40 * 2, 2.0])
    assert pts[0, 0, 1] > 0, "top of the image is up (+Y)"
    assert pts[-1, 0, 1] < 0 and pts[0, -1, 0] > 0


def test_ground_normals_point_up_and_wall_faces_camera():
    depth = ground_depth(24, 32, K, cam_height=1.5, far=1e9)
    pts = geometry.backproject(depth, K)
    n = geometry.pixel_normals(pts)
    inner = n[16:-1, 1:-1]  # ground rows away from the border and the horizon
    np.testing.assert_allclose(inner[..., 1], 1.0, atol=1e-9)
    wall = geometry.pixel_normals(geometry.backproject(np.full((24, 32), 5.0), K))
    np.testing.assert_allclose(wall[..., 2], -1.0, atol=1e-9)


def test_normalise_axes_is_scale_free():
    rng = np.random.default_rng(0)
    depth = rng.uniform(2, 30, size=(24, 32))
    a = geometry.normalise_axes(geometry.backproject(depth, K))
    b = geometry.normalise_axes(geometry.backproject(depth * 7.3, K))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(a.reshape(-1, 3).std(axis=0), 1.0)


def test_superpixel_stats_match_a_naive_loop():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, size=(24, 32)).astype(np.int32)
    pts = geometry.backproject(rng.uniform(1, 9, size=(24, 32)), K)
    tan = geometry.pixel_tangents(pts)
    centres, normals, counts = geometry.superpixel_stats(labels, pts, tan)
    for s in range(7):
        m = labels == s
        assert counts[s] == m.sum()
        np.testing.assert_allclose(centres[s], pts[m].mean(axis=0))
        t = tan[m].mean(axis=0)
        n = np.cross(t[0], t[1])
        np.testing.assert_allclose(normals[s], n / np.linalg.norm(n), atol=1e-12)


def test_tangents_are_central_differences_over_depth():
    rng = np.random.default_rng(2)
    pts = geometry.backproject(rng.uniform(1, 9, size=(6, 7)), K)
    t = geometry.pixel_tangents(pts)
    z = pts[..., 2]
    g_row, g_col = np.gradient(pts, axis=(0, 1))
    np.testing.assert_allclose(t[..., 0, :], g_col / z[..., None])
    np.testing.assert_allclose(t[..., 1, :], g_row / z[..., None])
