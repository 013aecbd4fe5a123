"""Hand-made scenes with exactly known depth and motion for the depth tests: textured planes
rendered analytically (ray-plane intersection), so any camera sees the exact image and depth."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.frames import Frame, link_sequences
from shared.imageio import write_png


def texture(X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Smooth colour pattern on world points [...,] -> [..., 3] in [0,1] (band-limited, so bilinear
    sampling of a rendered image is close to exact)."""
    r = 0.5 + 0.22 * np.sin(1.7 * X + 0.4 * Z) + 0.2 * np.cos(2.3 * Y + 0.5 * X)
    g = 0.5 + 0.25 * np.sin(1.1 * Y - 0.9 * Z + 1.0) + 0.15 * np.sin(2.9 * X)
    b = 0.5 + 0.2 * np.cos(1.3 * X + 1.9 * Y) + 0.2 * np.sin(0.7 * Z + 2.0)
    return np.clip(np.stack([r, g, b], -1), 0, 1)


def render_planes(K: np.ndarray, cam_to_world: np.ndarray, height: int, width: int,
                  planes: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Camera (OpenCV axes) looking at planes n.X = d (world); nearest hit wins.
    Returns (rgb float [H,W,3], depth z [H,W])."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z = 1
    R, c = cam_to_world[:3, :3], cam_to_world[:3, 3]
    rays = rays_cam @ R.T
    best = np.full((height, width), np.inf)
    for n, d in planes:
        denom = rays @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (d - n @ c) / denom
        s = np.where((s > 0) & np.isfinite(s), s, np.inf)
        best = np.minimum(best, s)
    pts = c + rays * best[..., None]
    return texture(pts[..., 0], pts[..., 1], pts[..., 2]), best  # s is the z-depth since rays have z_cam = 1


def translation(tx: float, ty: float, tz: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = [tx, ty, tz]
    return T


def rot_y(angle: float) -> np.ndarray:
    T = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    return T


# A street-like scene: a ground plane 1.5 m below the camera (y down) and a wall 12 m ahead.
STREET = [(np.array([0.0, -1.0, 0.0]), -1.5), (np.array([0.0, 0.0, 1.0]), 12.0),
          (np.array([1.0, 0.0, 0.0]), 4.0)]


def write_sequence(root: Path, n: int, height: int, width: int, step_m: float = 0.4,
                   sequence: str = "seq0", size: tuple[int, int] | None = None) -> list[Frame]:
    """A forward-driving sequence of n frames as PNGs + Frame rows (with exact depth .npy and poses)."""
    fx, fy, cx, cy = 0.58, 1.92, 0.5, 0.5
    K = np.array([[fx * width, 0, cx * width], [0, fy * height, cy * height], [0, 0, 1]])
    frames = []
    for i in range(n):
        pose = translation(0.05 * i, 0.0, step_m * i) @ rot_y(0.01 * i)
        rgb, depth = render_planes(K, pose, height, width, STREET)
        img = root / sequence / f"{i:04d}.png"
        write_png(img, (rgb * 255).round().astype(np.uint8))
        dpath = root / sequence / f"{i:04d}.npy"
        np.save(dpath, depth.astype(np.float32))
        h, w = size if (size and i == n - 1) else (height, width)
        frames.append(Frame(id=f"{sequence}_{i:04d}", image=str(img), split="train", sequence=sequence, index=i,
                            width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy, depth=str(dpath),
                            pose=tuple(pose.reshape(-1).tolist())))
    return link_sequences(frames)
