"""Cityscapes label maps: labelIds -> the 19 trainIds (the paper's protocol) and -> 27 classes (PiCIE's).

The ground truth on disk is always labelIds (0..33); reading it as trainIds is a classic mistake,
so every consumer goes through `to_train_ids` / `to_27_classes`. IGNORE marks pixels that never count.
"""
from __future__ import annotations

import numpy as np

IGNORE = 255

# (labelId, name) of the 19 evaluated classes, in trainId order.
TRAIN_CLASSES: list[tuple[int, str]] = [
    (7, "road"), (8, "sidewalk"), (11, "building"), (12, "wall"), (13, "fence"), (17, "pole"),
    (19, "traffic light"), (20, "traffic sign"), (21, "vegetation"), (22, "terrain"), (23, "sky"),
    (24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
    (32, "motorcycle"), (33, "bicycle"),
]
TRAIN_NAMES = [n for _, n in TRAIN_CLASSES]

# PiCIE's 27 classes are the labelIds 7..33 in order (labelIds 0..6 are void).
NAMES_27 = [
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
    "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
]

# Labels with instances (instanceIds = labelId*1000 + k for these).
THING_LABEL_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)
VOID_LABEL_IDS = tuple(range(0, 7))

# Named labelIds the synthetic city uses.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = 7, 8, 11, 17, 21, 23, 24, 26

_LUT19 = np.full(256, IGNORE, dtype=np.uint8)
for _train_id, (_label_id, _) in enumerate(TRAIN_CLASSES):
    _LUT19[_label_id] = _train_id
_LUT27 = np.full(256, IGNORE, dtype=np.uint8)
_LUT27[7:34] = np.arange(27, dtype=np.uint8)


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """labelIds (any int dtype, [H, W]) -> trainIds 0..18, IGNORE elsewhere (uint8 [H, W])."""
    return _LUT19[np.clip(label_ids, 0, 255).astype(np.intp)]


def to_27_classes(label_ids: np.ndarray) -> np.ndarray:
    """labelIds -> PiCIE's 27 classes 0..26, IGNORE elsewhere (uint8 [H, W])."""
    return _LUT27[np.clip(label_ids, 0, 255).astype(np.intp)]


def instance_label_ids(instance_ids: np.ndarray) -> np.ndarray:
    """labelId of every pixel of a Cityscapes instanceIds map (labelId*1000+k, or labelId for stuff)."""
    inst = instance_ids.astype(np.int64)
    return np.where(inst >= 1000, inst // 1000, inst)
