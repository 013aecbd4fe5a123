"""KITTI semantic / instance segmentation benchmark reader (data_semantics, 200 labelled frames).

Layout (official):
    <root>/training/image_2/<name>.png    RGB, about 375x1242
    <root>/training/semantic/<name>.png   uint8 Cityscapes labelIds
    <root>/training/instance/<name>.png   uint16 labelId * 256 + k (k = 0: no instance), see
                                          shared.labels.decode_instances(..., "kitti")
    <root>/testing/image_2/<name>.png     unlabelled test frames (split "test")

The benchmark has no validation split: every labelled frame is "train", and fine-tuning scores it by
K-fold cross-validation (`--folds 5`, as the paper). The frames are single images, not videos: each
is its own sequence, with no neighbours. Intrinsics are not part of the benchmark: the KITTI raw
default of shared.datasets.folder is recorded (nothing here uses them).
"""
from __future__ import annotations

import os
from pathlib import Path

from shared.datasets.folder import DEFAULT_INTRINSICS
from shared.datasets import readable_size
from shared.frames import DataError, Frame

INSTANCE_ENCODING = "kitti"


def read_kitti_semantic(root: str | os.PathLike, skipped: list[dict[str, str]] | None = None) -> list[Frame]:
    root = Path(root)
    if not (root / "training" / "image_2").is_dir():
        raise DataError(root, "not a KITTI semantics layout (expected training/image_2/, training/semantic/, "
                              "training/instance/)")
    frames = []
    for split, folder in (("train", "training"), ("test", "testing")):
        for img in sorted((root / folder / "image_2").glob("*.png")):
            sem, inst = root / folder / "semantic" / img.name, root / folder / "instance" / img.name
            if split == "train" and not sem.is_file():
                raise DataError(sem, "labelled frame without its semantic map")
            size = readable_size(img, skipped)
            if size is None:  # listed in `skipped`
                continue
            h, w = size
            fid = f"{folder}_{img.stem}".replace(".", "_")
            frames.append(Frame(id=fid, image=str(img), split=split, sequence=fid, index=0, width=w, height=h,
                                fx=DEFAULT_INTRINSICS[0], fy=DEFAULT_INTRINSICS[1], cx=DEFAULT_INTRINSICS[2],
                                cy=DEFAULT_INTRINSICS[3], semantic=str(sem) if sem.is_file() else None,
                                instance=str(inst) if inst.is_file() else None))
    if not frames:
        raise DataError(root / "training" / "image_2", "no .png frames")
    return frames
