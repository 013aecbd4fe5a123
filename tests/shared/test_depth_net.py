"""Camera maths in torch (poses, projection, warping) and the depth / pose networks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from shared.camera_torch import (axis_angle_to_matrix, back_project, compose_poses, invert_pose, make_pose,
                                 matrix_to_axis_angle, pose_from_axis_angle, project, warp)
from shared.frames import DataError
from shared.nets.depth_net import DepthModel, ResNetEncoder, disp_to_depth


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    aa = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 4.0  # angles up to ~3.4 rad... capped below
    aa = aa * (torch.rand(n, 1, generator=g, dtype=torch.float64) * 3.0 / aa.norm(dim=1, keepdim=True))
    t = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return make_pose(axis_angle_to_matrix(aa), t)


def test_axis_angle_matches_scipy_rodrigues():
    aa = torch.tensor([[0.3, -1.2, 0.5], [0.0, 0.0, math.pi / 2], [1e-9, 0.0, 0.0]], dtype=torch.float64)
    R = axis_angle_to_matrix(aa).numpy()
    np.testing.assert_allclose(R, Rotation.from_rotvec(aa.numpy()).as_matrix(), atol=1e-12)
    # a quarter turn about +z takes +x to +y (right-handed)
    np.testing.assert_allclose(R[1] @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_axis_angle_round_trip_and_orthonormal():
    aa = (torch.rand(50, 3, dtype=torch.float64) - 0.5) * 3.0
    R = axis_angle_to_matrix(aa)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(matrix_to_axis_angle(R), aa, atol=1e-9, rtol=0)
    assert torch.all(torch.isfinite(matrix_to_axis_angle(torch.eye(3, dtype=torch.float64)[None])))


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(2, 3, requires_grad=True)
    axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_pose_inversion_and_composition_properties():
    A, B, C = random_poses(20, 1), random_poses(20, 2), random_poses(20, 3)
    eye = torch.eye(4, dtype=torch.float64).expand(20, 4, 4)
    torch.testing.assert_close(compose_poses(invert_pose(A), A), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(compose_poses(A, invert_pose(A)), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(invert_pose(A), torch.linalg.inv(A), atol=1e-10, rtol=0)
    # (C B) A = C (B A), and inv(B A) = inv(A) inv(B)
    torch.testing.assert_close(compose_poses(compose_poses(C, B), A), compose_poses(C, compose_poses(B, A)))
    torch.testing.assert_close(invert_pose(compose_poses(B, A)), compose_poses(invert_pose(A), invert_pose(B)),
                               atol=1e-10, rtol=0)
    # acting on a point: first A, then B
    p = torch.tensor([1.0, -2.0, 3.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(compose_poses(B, A)[0] @ p, B[0] @ (A[0] @ p))


def test_pose_from_axis_angle_invert_is_exact_inverse():
    aa = torch.tensor([[0.1, 0.2, -0.3]])
    t = torch.tensor([[0.5, -0.1, 2.0]])
    T = pose_from_axis_angle(aa, t)
    Ti = pose_from_axis_angle(aa, t, invert=True)
    torch.testing.assert_close(Ti @ T, torch.eye(4)[None], atol=1e-6, rtol=0)
    torch.testing.assert_close(T[0, :3, 3], t[0])


def test_back_project_then_project_is_identity_on_pixel_centres():
    H, W = 5, 7
    K = torch.tensor([[[4.0, 0, 3.5], [0, 5.0, 2.5], [0, 0, 1]]])
    depth = torch.rand(1, 1, H, W) * 10 + 1
    pts = back_project(depth, torch.linalg.inv(K))
    assert pts.shape == (1, 3, H * W)
    torch.testing.assert_close(pts[:, 2].reshape(1, 1, H, W), depth)
    grid, z = project(pts, K, torch.eye(4)[None], H, W)
    # pixel (i, j) centre in grid_sample's align_corners=False coordinates
    jj = (torch.arange(W) + 0.5) / W * 2 - 1
    ii = (torch.arange(H) + 0.5) / H * 2 - 1
    torch.testing.assert_close(grid[0, ..., 0], jj.expand(H, W), atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[0, ..., 1], ii[:, None].expand(H, W), atol=1e-5, rtol=0)
    torch.testing.assert_close(z, depth)


def test_warp_identity_pose_returns_source_and_shift_known_answer():
    H, W = 6, 10
    K = torch.tensor([[[8.0, 0, 5.0], [0, 8.0, 3.0], [0, 0, 1]]])
    src = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), 4.0)
    out, valid = warp(src, depth, torch.eye(4)[None], K)
    torch.testing.assert_close(out, src, atol=1e-5, rtol=0)
    assert valid.all()
    # camera moved so that target points are 0.5 m further right in the source: x_src = x_tgt - 0.5
    # -> u_src = u_tgt - fx * 0.5 / 4 = u_tgt - 1 pixel
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -0.5
    out, valid = warp(src, depth, T, K)
    torch.testing.assert_close(out[..., 1:], src[..., :-1], atol=1e-5, rtol=0)
    assert not valid[..., 0].any() and valid[..., 1:].all()


def test_disp_to_depth_range():
    d = disp_to_depth(torch.tensor([0.0, 1.0, 0.5]), 0.1, 100.0)
    torch.testing.assert_close(d[:2], torch.tensor([100.0, 0.1]))
    assert 0.1 < d[2] < 100.0


def test_depth_model_shapes_and_ranges():
    torch.manual_seed(0)
    model = DepthModel().eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        disps = model.disparities(x)
        aa, t = model.pose(x, x.flip(-1))
    assert [tuple(d.shape) for d in disps] == [(2, 1, 64, 96), (2, 1, 32, 48), (2, 1, 16, 24), (2, 1, 8, 12)]
    assert all(((d > 0) & (d < 1)).all() for d in disps)
    assert aa.shape == (2, 3) and t.shape == (2, 3)
    assert aa.abs().max() < 0.1  # the 0.01 output scale starts the warps near identity


def test_init_weights_loaded_and_pair_encoder_tiles_first_layer(tmp_path):
    import torchvision
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    single = ResNetEncoder(1, path).eval()
    pair = ResNetEncoder(2, path).eval()
    torch.testing.assert_close(single.net.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = single(x)[-1]
        b = pair(torch.cat([x, x], 1))[-1]
    # the 6-channel kernel is the 3-channel one tiled and halved: a pair of equal frames = one frame
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_init_weights_bad_file_names_it(tmp_path):
    bad = tmp_path / "not_weights.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="not_weights.pth"):
        ResNetEncoder(1, bad)
    with pytest.raises(DataError, match="missing.pth"):
        ResNetEncoder(1, tmp_path / "missing.pth")
