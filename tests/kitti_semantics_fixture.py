"""A tiny hand-made KITTI semantics benchmark (training/image_2, semantic, instance) for the fine-tuning
tests: sky over road, a building block, and one or two cars as instances. Every class has one flat
colour, so a pixel's colour tells its class exactly (the known answer of the evaluation tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# labelId -> RGB; cars (26) are objects with instance ids, the rest stuff.
COLOURS = {23: (70, 130, 180), 7: (128, 64, 128), 11: (70, 70, 70), 26: (0, 0, 142)}


def make_kitti_semantics(root: Path, n: int = 6, h: int = 64, w: int = 128, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("image_2", "semantic", "instance"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = np.full((h, w), 23, np.uint8)  # sky
        horizon = int(rng.integers(h // 3, h // 2))
        label[horizon:] = 7  # road
        bx = int(rng.integers(0, w // 2))
        label[horizon // 3:horizon, bx:bx + w // 3] = 11  # building
        inst = label.astype(np.uint16) * 256  # KITTI: labelId * 256 + k, k = 0 for stuff
        for k in range(1, 1 + (i % 2) + 1):
            y0 = int(rng.integers(horizon, h - 12))
            x0 = int(rng.integers(0, w - 24))
            label[y0:y0 + 10, x0:x0 + 20] = 26
            inst[y0:y0 + 10, x0:x0 + 20] = 26 * 256 + k
        rgb = np.zeros((h, w, 3), np.uint8)
        for lid, c in COLOURS.items():
            rgb[label == lid] = c
        name = f"{i:06d}_10.png"
        Image.fromarray(rgb).save(root / "training" / "image_2" / name)
        Image.fromarray(label).save(root / "training" / "semantic" / name)
        Image.fromarray(inst).save(root / "training" / "instance" / name)
    return root
