"""Cityscapes reader.

Layout (official):
    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png|jpg   30-frame snippets
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png|jpg            annotated frames
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png | _instanceIds.png
    <root>/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json                          optional

A frame found in both image folders is one row: the lossless `leftImg8bit` image, with its labels.
A snippet is one sequence (`<city>_<seq>`), neighbours are consecutive frame numbers inside it.
Intrinsics come from the camera JSON when present, else the public Cityscapes camera
(fx 2262.52, fy 2265.30, cx 1096.98, cy 513.14 at 2048x1024), normalised by image size.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from shared.datasets import readable_size
from shared.frames import DataError, Frame, link_sequences

DEFAULT_INTRINSICS = (2262.52 / 2048, 2265.30 / 1024, 1096.98 / 2048, 513.14 / 1024)
_NAME = re.compile(r"^(?P<city>[a-z_]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit$")
_EXTS = (".png", ".jpg", ".jpeg")


def _camera(root: Path, split: str, city: str, stem: str) -> tuple[float, float, float, float] | None:
    p = root / "camera" / split / city / f"{stem}_camera.json"
    if not p.is_file():
        return None
    try:
        intr = json.loads(p.read_text())["intrinsic"]
        return (intr["fx"] / 2048, intr["fy"] / 1024, intr["u0"] / 2048, intr["v0"] / 1024)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(p, f"not a Cityscapes camera file ({e})") from e


def read_cityscapes(root: str | os.PathLike, skipped: list[dict[str, str]] | None = None) -> list[Frame]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "Cityscapes root is not a folder")
    folders = [root / "leftImg8bit_sequence", root / "leftImg8bit"]
    if not any(f.is_dir() for f in folders):
        raise DataError(root, "no leftImg8bit_sequence/ or leftImg8bit/ folder (not a Cityscapes layout)")
    found: dict[str, tuple[Path, str, str, str, str]] = {}  # stem -> (image, split, city, seq, frame)
    for folder in folders:  # leftImg8bit second, so the lossless annotated image wins
        for img in sorted(folder.glob("*/*/*")):
            if img.suffix.lower() not in _EXTS:
                continue
            m = _NAME.match(img.stem)
            if not m:
                raise DataError(img, "name is not <city>_<seq>_<frame>_leftImg8bit")
            split, city = img.parent.parent.name, img.parent.name
            found[img.stem] = (img, split, city, m["seq"], m["frame"])
    if not found:
        raise DataError(root, "no Cityscapes images (expected <split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png|jpg)")
    frames = []
    for stem, (img, split, city, seq, frame) in sorted(found.items()):
        base = stem[: -len("_leftImg8bit")]
        size = readable_size(img, skipped)
        if size is None:  # listed in `skipped`
            continue
        h, w = size
        gt = root / "gtFine" / split / city
        sem, inst = gt / f"{base}_gtFine_labelIds.png", gt / f"{base}_gtFine_instanceIds.png"
        fx, fy, cx, cy = _camera(root, split, city, base) or DEFAULT_INTRINSICS
        frames.append(Frame(
            id=base, image=str(img), split=split, sequence=f"{city}_{seq}", index=int(frame),
            width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy,
            semantic=str(sem) if sem.is_file() else None, instance=str(inst) if inst.is_file() else None,
        ))
    return link_sequences(frames)
