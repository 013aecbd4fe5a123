"""Dataset readers: each turns an official on-disk layout into a frame index (`shared.frames`).

    build_index("kitti", root)       KITTI raw: <date>/<date>_drive_XXXX_sync/image_02/data/*.png
    build_index("kitti-semantic", root)  KITTI semantics benchmark: training/image_2, semantic, instance
    build_index("cityscapes", root)  leftImg8bit_sequence/, leftImg8bit/, gtFine/
    build_index("folder", root)      any folder of images, sorted = sequence order
    build_index("synthetic", root)   the built-in synthetic city (preprocess.synth)
    build_index("video", root, stride=, fps=, start=, end=)   a video file or a folder of them
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from shared.frames import DataError, Frame
from shared.imageio import image_size

READERS = {
    "kitti": "shared.datasets.kitti:read_kitti",
    "kitti-semantic": "shared.datasets.kitti_semantic:read_kitti_semantic",
    "cityscapes": "shared.datasets.cityscapes:read_cityscapes",
    "folder": "shared.datasets.folder:read_folder",
    "synthetic": "shared.datasets.synthetic:read_synthetic",
    "video": "shared.datasets.video:read_video",
}


def build_index(dataset: str, root: str | os.PathLike, skipped: list[dict[str, str]] | None = None,
                **options: float) -> list[Frame]:
    """The frame index of `root`. skipped: where an unreadable image (zero bytes, not an image) is
    listed ({"path", "problem"}) and left out; None: it is a DataError instead. options: the reader's
    own (video: stride, fps, start, end)."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(READERS)}")
    module, fn = READERS[dataset].split(":")
    # Absolute paths: the index is read by stages (and joblib workers) from other working folders.
    return getattr(importlib.import_module(module), fn)(os.path.abspath(root), skipped=skipped, **options)


def readable_size(image: Path, skipped: list[dict[str, str]] | None) -> tuple[int, int] | None:
    """(height, width) from the image's header; None when it is unreadable and `skipped` collects
    such images (the readers leave the frame out), else the DataError."""
    try:
        return image_size(image)
    except DataError as e:
        if skipped is None:
            raise
        skipped.append({"path": e.path, "problem": e.problem})
        return None


# How each dataset packs instances in its instance PNGs (shared.labels.decode_instances).
INSTANCE_ENCODING = {"kitti-semantic": "kitti"}


def instance_encoding(dataset: str) -> str:
    return INSTANCE_ENCODING.get(dataset, "cityscapes")
