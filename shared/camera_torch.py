"""Pinhole camera maths in torch: back-projection, projection, view synthesis, rigid poses.

Conventions (used by the depth trainer, inference and their tests):
  * camera frame: x right, y down, z forward (OpenCV); depth = z.
  * pixel coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1), so its centre is at
    (j + 0.5, i + 0.5). This is the convention of `Frame.K`, and it is exactly the one of
    `grid_sample(..., align_corners=False)`, so no half-pixel fudge is needed anywhere.
  * a pose T is a 4x4 rigid transform acting on column vectors, x_b = T_ab @ x_a ("a to b").
  * axis-angle: a 3-vector whose direction is the rotation axis and whose norm is the angle
    (radians, right-handed).
All functions are batched over a leading B dimension and differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def skew(v: torch.Tensor) -> torch.Tensor:
    """[B,3] -> cross-product matrices [B,3,3] (skew(a) @ b = a x b)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)], -2)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula R = I + a [w]x + b [w]x^2. axis_angle [B,3] -> rotation [B,3,3]."""
    theta2 = (axis_angle * axis_angle).sum(-1)  # [B]
    small = theta2 < 1e-8
    # Taylor series below 1e-4 rad: exact to double precision there, and finite gradients at zero.
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / safe2)
    Kx = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[:, None, None] * Kx + b[:, None, None] * (Kx @ Kx)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """Inverse of `axis_angle_to_matrix` for angles in [0, pi). rot [B,3,3] -> [B,3]."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)  # [B]
    vee = torch.stack([rot[..., 2, 1] - rot[..., 1, 2],
                       rot[..., 0, 2] - rot[..., 2, 0],
                       rot[..., 1, 0] - rot[..., 0, 1]], -1)  # = 2 sin(angle) * axis
    sin = torch.sin(angle)
    small = sin.abs() <= 1e-6
    # Near zero angle sin(a) ~ a, so angle / (2 sin) -> 1/2.
    scale = torch.where(small, torch.full_like(sin, 0.5), angle / (2.0 * torch.where(small, torch.ones_like(sin), sin)))
    return vee * scale[..., None]


def make_pose(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """rot [B,3,3], trans [B,3] -> 4x4 [B,4,4] mapping x -> R x + t."""
    B = rot.shape[0]
    T = torch.zeros(B, 4, 4, dtype=rot.dtype, device=rot.device)
    T[:, :3, :3] = rot
    T[:, :3, 3] = trans
    T[:, 3, 3] = 1.0
    return T


def pose_from_axis_angle(axis_angle: torch.Tensor, trans: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """The pose network's output as a 4x4 [B,4,4]; invert=True gives the exact inverse."""
    T = make_pose(axis_angle_to_matrix(axis_angle), trans)
    return invert_pose(T) if invert else T


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of a rigid transform [B,4,4]: (R, t) -> (R^T, -R^T t)."""
    rot_t = T[:, :3, :3].transpose(1, 2)
    return make_pose(rot_t, -(rot_t @ T[:, :3, 3:4])[..., 0])


def compose_poses(T_bc: torch.Tensor, T_ab: torch.Tensor) -> torch.Tensor:
    """T_ac = T_bc @ T_ab: first a->b, then b->c."""
    return T_bc @ T_ab


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel centres [3, H*W]: rows (u, v, 1) with u = j + 0.5, v = i + 0.5."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def back_project(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """depth [B,1,H,W], inv_K [B,3,3] -> camera points [B,3,H*W]."""
    B, _, H, W = depth.shape
    rays = inv_K @ pixel_grid(H, W, depth.device, depth.dtype)  # [B,3,HW]
    return rays * depth.reshape(B, 1, H * W)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int,
            eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera points of view a [B,3,N] seen from view b (T = T_ab [B,4,4], K of view b [B,3,3]).

    Returns (grid [B,H,W,2] in grid_sample's normalised coordinates, z in view b [B,1,H,W]).
    """
    B = points.shape[0]
    cam = T[:, :3, :3] @ points + T[:, :3, 3:4]  # [B,3,N]
    pix = K @ cam
    z = pix[:, 2:3]
    # Points behind the camera get a huge coordinate and fall outside the image (zero padding).
    uv = pix[:, :2] / z.clamp_min(eps)
    grid = torch.stack([uv[:, 0] / width * 2.0 - 1.0, uv[:, 1] / height * 2.0 - 1.0], -1)
    return grid.reshape(B, height, width, 2), z.reshape(B, 1, height, width)


def warp(source: torch.Tensor, depth: torch.Tensor, T_target_to_source: torch.Tensor,
         K: torch.Tensor, inv_K: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from a source image.

    source [B,C,H,W]: the source image; depth [B,1,H,W]: the target view's depth;
    T_target_to_source [B,4,4]; K [B,3,3] shared by both views.
    Returns (warped [B,C,H,W], valid [B,1,H,W] bool: the sample fell inside the source and in front).
    """
    H, W = depth.shape[-2:]
    if inv_K is None:
        inv_K = torch.linalg.inv(K)
    points = back_project(depth, inv_K)
    grid, z = project(points, K, T_target_to_source, H, W)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    inside = (grid.abs() <= 1.0).all(-1, keepdim=True).permute(0, 3, 1, 2) & (z > 0)
    return warped, inside
