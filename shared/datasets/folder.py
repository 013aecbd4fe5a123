"""Any folder of images: the user's own footage.

    <root>/*.png|jpg                  one sequence, sorted by name = time order
    <root>/<sequence>/*.png|jpg       or one sub-folder per sequence
    <root>/intrinsics.json            optional {"fx", "fy", "cx", "cy"} normalised by image size
    <root>/depth/<stem>.npy           optional depth in metres, per image stem (single-sequence form)
    <root>/<sequence>/depth/<stem>.npy

Without intrinsics.json the KITTI-like default (fx 0.58, fy 1.92, cx 0.5, cy 0.5) is used: depth is
learnt up to scale anyway, but a wrong field of view bends planes, so give real intrinsics if known.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from shared.datasets import readable_size
from shared.frames import DataError, Frame, link_sequences

DEFAULT_INTRINSICS = (0.58, 1.92, 0.5, 0.5)
_EXTS = (".png", ".jpg", ".jpeg")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _EXTS)


def read_intrinsics(path: Path) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of an intrinsics.json, normalised by the image size."""
    try:
        d = json.loads(path.read_text())
        return float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise DataError(path, f'expected {{"fx", "fy", "cx", "cy"}} normalised by image size ({e})') from e


def read_folder(root: str | os.PathLike, skipped: list[dict[str, str]] | None = None) -> list[Frame]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    ipath = root / "intrinsics.json"
    intr = read_intrinsics(ipath) if ipath.is_file() else DEFAULT_INTRINSICS
    seqs = [(root.name or "folder", root)] if _images(root) else [
        (d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and d.name != "depth" and _images(d)]
    if not seqs:
        raise DataError(root, "no .png/.jpg images in the folder or its sub-folders")
    frames = []
    for seq, folder in seqs:
        for i, img in enumerate(_images(folder)):
            size = readable_size(img, skipped)
            if size is None:  # listed in `skipped`; its position stays taken, so its neighbours lose it
                continue
            h, w = size
            depth = folder / "depth" / f"{img.stem}.npy"
            fid = f"{seq}_{img.stem}".replace(".", "_")
            frames.append(Frame(id=fid, image=str(img), split="train", sequence=seq, index=i, width=w, height=h,
                                fx=intr[0], fy=intr[1], cx=intr[2], cy=intr[3],
                                depth=str(depth) if depth.is_file() else None))
    return link_sequences(frames)
