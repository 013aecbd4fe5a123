"""The index summary announces frames that fall back to a reader's built-in intrinsics."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from preprocess.index import summarise
from shared.datasets.folder import read_folder


def _folder(root, intrinsics=None):
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / f"{i:04d}.png")
    if intrinsics:
        (root / "intrinsics.json").write_text(json.dumps(intrinsics))
    return read_folder(root)


def test_built_in_intrinsics_are_announced(tmp_path):
    lines = summarise(_folder(tmp_path / "plain"))
    assert "intrinsics   3 of 3 frames use built-in default intrinsics: a KITTI-like camera (no intrinsics.json found)" in lines


def test_own_intrinsics_are_not_flagged(tmp_path):
    lines = summarise(_folder(tmp_path / "own", {"fx": 0.7, "fy": 1.4, "cx": 0.5, "cy": 0.5}))
    assert not any("built-in default" in line for line in lines)
    assert any(line.startswith("intrinsics   fx=0.700 fy=1.400") for line in lines)
