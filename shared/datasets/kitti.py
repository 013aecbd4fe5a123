"""KITTI raw reader.

Layout (official raw download, synced + rectified):
    <root>/<date>/calib_cam_to_cam.txt
    <root>/<date>/<date>_drive_XXXX_sync/image_02/data/0000000000.png ...
    <root>/<date>/<date>_drive_XXXX_sync/proj_depth/velodyne/image_02/<stem>.npz   (optional LiDAR depth)

One sequence per drive and camera. Intrinsics come from P_rect_02 (or _03) of the date's
calibration, normalised by the rectified image size, so they can be scaled to any resolution.
KITTI has no official split for raw drives: every frame is "train".
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from shared.datasets import readable_size
from shared.frames import DataError, Frame, link_sequences

_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})_sync$")


def read_calibration(path: Path) -> dict[str, np.ndarray]:
    """key -> float array of a KITTI calib_*.txt ('calib_time' and other text lines skipped)."""
    if not path.is_file():
        raise DataError(path, "KITTI calibration file not found")
    out: dict[str, np.ndarray] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()])
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    return out


def normalised_intrinsics(calib: dict[str, np.ndarray], camera: str, path: Path) -> tuple[float, float, float, float]:
    key, size_key = f"P_rect_{camera}", f"S_rect_{camera}"
    if key not in calib or calib[key].size != 12:
        raise DataError(path, f"no 3x4 {key} in calibration")
    P = calib[key].reshape(3, 4)
    if size_key not in calib:
        raise DataError(path, f"no {size_key} (rectified image size) in calibration")
    w, h = calib[size_key]
    return P[0, 0] / w, P[1, 1] / h, P[0, 2] / w, P[1, 2] / h


def read_kitti(root: str | os.PathLike, camera: str = "02", skipped: list[dict[str, str]] | None = None
               ) -> list[Frame]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "KITTI root is not a folder")
    drives = sorted(p for p in root.glob(f"*/*_drive_*_sync") if (p / f"image_{camera}").is_dir())
    if not drives:
        raise DataError(root, f"no KITTI raw drives found (expected <date>/<date>_drive_XXXX_sync/image_{camera}/data/*.png)")
    frames: list[Frame] = []
    for drive in drives:
        m = _DRIVE.match(drive.name)
        if not m:
            raise DataError(drive, "drive folder name is not <date>_drive_XXXX_sync")
        calib_path = drive.parent / "calib_cam_to_cam.txt"
        fx, fy, cx, cy = normalised_intrinsics(read_calibration(calib_path), camera, calib_path)
        images = sorted((drive / f"image_{camera}" / "data").glob("*.png"))
        if not images:
            raise DataError(drive / f"image_{camera}" / "data", "no .png frames")
        sequence = f"{drive.name}_{camera}"
        for img in images:
            if not img.stem.isdigit():
                raise DataError(img, "KITTI frame names must be zero-padded frame numbers")
            size = readable_size(img, skipped)
            if size is None:  # listed in `skipped`; its neighbours lose it as a neighbour
                continue
            h, w = size
            lidar = drive / "proj_depth" / "velodyne" / f"image_{camera}" / f"{img.stem}.npz"
            frames.append(Frame(
                id=f"{sequence}_{img.stem}", image=str(img), split="train", sequence=sequence,
                index=int(img.stem), width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy,
                depth=str(lidar) if lidar.is_file() else None,
            ))
    return link_sequences(frames)

