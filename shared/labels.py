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

# The 8 classes scored for instances (Cityscapes' instance benchmark): caravan (29) and trailer (30)
# have instance ids too but are not evaluated. Mask R-CNN's class k (1..8) is INSTANCE_CLASSES[k-1].
INSTANCE_CLASSES: list[tuple[int, str]] = [
    (24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
    (32, "motorcycle"), (33, "bicycle"),
]
INSTANCE_NAMES = [n for _, n in INSTANCE_CLASSES]
_LUT_INSTANCE = np.zeros(256, dtype=np.int64)
for _k, (_label_id, _) in enumerate(INSTANCE_CLASSES, 1):
    _LUT_INSTANCE[_label_id] = _k

# How an instance PNG packs (labelId, instance number), per dataset family:
#   cityscapes  labelId * 1000 + k for pixels of an instance (k from 0), plain labelId elsewhere
#   kitti       labelId * 256 + k (uint16, high byte = labelId), k = 0 meaning "no instance"
INSTANCE_ENCODINGS = ("cityscapes", "kitti")


def decode_instances(raw: np.ndarray, encoding: str = "cityscapes") -> tuple[np.ndarray, np.ndarray]:
    """(labelIds int64 [H, W], instance key int64 [H, W]) of an instance PNG; key 0 = no instance,
    equal non-zero keys = one object (keys are unique within the image, across classes)."""
    v = raw.astype(np.int64)
    if encoding == "cityscapes":
        has = v >= 1000
        return np.where(has, v // 1000, v), np.where(has, v + 1, 0)
    if encoding == "kitti":
        return v >> 8, np.where((v & 255) > 0, v, 0)
    raise ValueError(f"unknown instance encoding {encoding!r}; choose one of {INSTANCE_ENCODINGS}")


def instance_masks(raw: np.ndarray, encoding: str = "cityscapes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluated objects of an instance PNG [H, W]:
    (classes int64 [N] in 1..8, masks bool [N, H, W], crowd bool [8 + 1, H, W]).

    crowd[k] marks pixels of instance class k that belong to no object (Cityscapes "group" regions
    such as a row of parked cars labelled once): they are neither objects nor background."""
    label_ids, key = decode_instances(raw, encoding)
    cls = _LUT_INSTANCE[np.clip(label_ids, 0, 255)]  # [H, W] 0 = not an instance class
    keys = np.unique(key[(key > 0) & (cls > 0)])  # [N]
    masks = key[None] == keys[:, None, None]  # [N, H, W]
    classes = np.array([int(cls[m].max()) for m in masks], dtype=np.int64)
    crowd = np.zeros((len(INSTANCE_CLASSES) + 1,) + raw.shape, dtype=bool)
    loose = (key == 0) & (cls > 0)
    for k in np.unique(cls[loose]):
        crowd[k] = loose & (cls == k)
    return classes, masks, crowd
