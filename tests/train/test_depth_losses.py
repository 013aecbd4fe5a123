"""Depth losses and view synthesis: SSIM, photometric error, minimum reprojection, auto-mask,
smoothness, and the warping known-answer test on an analytically rendered street."""
from __future__ import annotations

import numpy as np
import torch

from shared.camera_torch import warp
from tests.train.depth_scenes import STREET, render_planes, rot_y, translation
from train.depth_losses import SSIM_C1, min_reprojection, photometric_error, smoothness, ssim_dissimilarity


def test_ssim_identical_images_zero_and_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 11, generator=g)
    torch.testing.assert_close(ssim_dissimilarity(x, x), torch.zeros_like(x), atol=1e-6, rtol=0)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    d = ssim_dissimilarity(x, y)
    assert d.min() >= 0 and d.max() <= 1 and d.mean() > 0.05
    torch.testing.assert_close(d, ssim_dissimilarity(y, x))  # symmetric
    # more noise -> more dissimilar
    z = (x + 0.6 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim_dissimilarity(x, z).mean() > d.mean()


def test_ssim_constant_images_known_answer():
    a, b = 0.2, 0.7
    x = torch.full((1, 1, 4, 4), a, dtype=torch.float64)
    y = torch.full((1, 1, 4, 4), b, dtype=torch.float64)
    ssim = (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)  # variances are 0: the C2 terms cancel
    torch.testing.assert_close(ssim_dissimilarity(x, y), torch.full_like(x, (1 - ssim) / 2), atol=1e-6, rtol=0)


def test_photometric_error_weights_l1_and_ssim():
    x = torch.full((1, 3, 4, 4), 0.2, dtype=torch.float64)
    y = torch.full((1, 3, 4, 4), 0.7, dtype=torch.float64)
    l1 = 0.5
    ssim_d = (1 - (2 * 0.14 + SSIM_C1) / (0.04 + 0.49 + SSIM_C1)) / 2
    torch.testing.assert_close(photometric_error(x, y), torch.full((1, 1, 4, 4), 0.85 * ssim_d + 0.15 * l1, dtype=torch.float64))
    torch.testing.assert_close(photometric_error(x, y, 0.0), torch.full((1, 1, 4, 4), l1, dtype=torch.float64))


def test_min_reprojection_and_automask_known_answer():
    reproj = torch.tensor([[[[0.5, 0.1, 0.4]], [[0.3, 0.6, 0.9]]]])  # [1,2,1,3]
    identity = torch.tensor([[[[0.2, 0.9, 0.8]], [[0.7, 0.8, 0.3]]]])
    loss, mask = min_reprojection(reproj, identity)
    torch.testing.assert_close(loss, torch.tensor([[[[0.2, 0.1, 0.3]]]]))
    assert mask.tolist() == [[[[False, True, False]]]]  # the pixels where an unwarped source wins are masked
    loss, mask = min_reprojection(reproj, None)
    torch.testing.assert_close(loss, torch.tensor([[[[0.3, 0.1, 0.4]]]]))
    assert mask.all()


def test_smoothness_edge_aware():
    disp_flat = torch.full((1, 1, 8, 8), 0.3)
    img = torch.rand(1, 3, 8, 8)
    assert smoothness(disp_flat, img).item() < 1e-7
    step = torch.full((1, 1, 8, 8), 0.2)
    step[..., 4:] = 0.6
    plain = torch.full((1, 3, 8, 8), 0.5)
    edge = plain.clone()
    edge[..., 4:] = 1.0  # an image edge where the disparity jumps makes the jump cheaper
    assert smoothness(step, edge) < 0.8 * smoothness(step, plain)
    # invariant to the disparity's scale (mean-normalised)
    torch.testing.assert_close(smoothness(step * 3, plain), smoothness(step, plain))


def _pair(height=96, width=320):
    fx, fy = 0.58 * width, 1.92 * height
    K = np.array([[fx, 0, 0.5 * width], [0, fy, 0.5 * height], [0, 0, 1.0]])
    pose_src = translation(0.0, 0.0, 0.0)
    pose_tgt = translation(0.08, 0.0, 0.5) @ rot_y(0.02)
    src, _ = render_planes(K, pose_src, height, width, STREET)
    tgt, depth = render_planes(K, pose_tgt, height, width, STREET)
    T_tgt_to_src = np.linalg.inv(pose_src) @ pose_tgt
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)
    return (as_t(src).permute(2, 0, 1)[None], as_t(tgt).permute(2, 0, 1)[None], as_t(depth)[None, None],
            as_t(T_tgt_to_src)[None], as_t(K)[None])


def test_warp_with_true_depth_and_pose_reconstructs_target():
    src, tgt, depth, T, K = _pair()
    warped, valid = warp(src, depth, T, K)
    err = photometric_error(warped, tgt)[valid]
    assert valid.float().mean() > 0.8
    wrong_depth = photometric_error(warp(src, depth * 1.5, T, K)[0], tgt)[valid]
    wrong_pose = photometric_error(warp(src, depth, torch.linalg.inv(T), K)[0], tgt)[valid]
    identity = photometric_error(src, tgt)[valid]
    print(f"mean photometric error: true {err.mean():.4f}, depth x1.5 {wrong_depth.mean():.4f}, "
          f"inverted pose {wrong_pose.mean():.4f}, no warp {identity.mean():.4f}")
    assert err.mean() < 0.002
    assert wrong_depth.mean() > 4 * err.mean()
    assert wrong_pose.mean() > 4 * err.mean()
    assert identity.mean() > 4 * err.mean()
