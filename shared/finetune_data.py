"""What a fine-tuning run trains and is scored on: label fractions, seeded subsets, folds, the run's
plan file, and the targets read from the label PNGs. The trainer (train/finetune.py) writes the plan;
the evaluator (evaluate/finetune.py) reads it back, so both see the very same frames.

A run folder <out>/<dataset>[-<demo>]/finetune/<run>/ holds:

    config.json                 the resolved trainer config
    plan.json                   task, classes, per fold the train and val frames (paths included),
                                the seeds of the repeats
    train_frames_f<k>.txt       the labelled frames fold k trains on, one id a line
    val_frames_f<k>.txt         the frames fold k is scored on
    f<k>_r<r>/                  one training run (fold k, repeat r): checkpoint.pt, log.jsonl, and
                                the evaluator's metrics.json and pictures
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import write_json, write_text
from shared.frames import DataError, Frame
from shared.imageio import read_label
from shared.labels import INSTANCE_CLASSES, TRAIN_NAMES, instance_masks, to_train_ids


def parse_label_fraction(text: str) -> Fraction | int:
    """"1/16", "0.25" or "1" -> a Fraction in (0, 1]; "50" (an integer >= 2) -> a frame count.

    Raises ValueError with a one-line message naming the option."""
    t = str(text).strip()
    try:
        if "/" in t or "." in t or t == "1":
            v = Fraction(t) if "/" in t else Fraction(t).limit_denominator(10**6)
            if 0 < v <= 1:
                return v
        elif int(t) >= 2:
            return int(t)
    except (ValueError, ZeroDivisionError):
        pass
    raise ValueError(f"--label-fraction: expected a fraction in (0, 1] such as 1/16 or 0.25, or a frame count "
                     f">= 2, got {text!r}")


def subset_size(n_pool: int, fraction: Fraction | int) -> int:
    """Frames a fraction (rounded, at least 1) or a count takes from a pool of n_pool."""
    if isinstance(fraction, Fraction):
        return max(1, int(math.floor(n_pool * fraction + Fraction(1, 2))))
    if fraction > n_pool:
        raise ValueError(f"--label-fraction: {fraction} frames asked, the pool has {n_pool} labelled frames")
    return fraction


def seeded_subset(ids: list[str], fraction: Fraction | int, seed: int) -> list[str]:
    """A deterministic subset of `ids` (sorted). The same seed orders the pool the same way whatever
    the fraction, so a smaller fraction's subset is inside every larger one's."""
    pool = sorted(ids)
    order = np.random.default_rng([seed, len(pool)]).permutation(len(pool))
    return sorted(pool[i] for i in order[:subset_size(len(pool), fraction)])


def kfold(ids: list[str], k: int, seed: int) -> list[list[str]]:
    """k disjoint folds (sorted ids each) covering `ids`, sizes differing by at most one."""
    if not 2 <= k <= len(ids):
        raise ValueError(f"--folds must be between 2 and the {len(ids)} labelled frames, got {k}")
    pool = sorted(ids)
    order = np.random.default_rng([seed, len(pool), k]).permutation(len(pool))
    return [sorted(pool[i] for i in part) for part in np.array_split(order, k)]


@dataclass(frozen=True)
class Fold:
    index: int
    train: list[Frame]  # the labelled frames this fold trains on (the label fraction of its pool)
    val: list[Frame]  # the frames it is scored on, disjoint from every training pool frame
    pool: int  # labelled training frames the subset was drawn from


def labelled(frames: list[Frame], task: str) -> list[Frame]:
    return [f for f in frames if (f.instance if task == "instance" else f.semantic)]


def make_folds(frames: list[Frame], task: str, fraction: Fraction | int, folds: int, seed: int) -> list[Fold]:
    """folds <= 1: train on the fraction of the labelled "train" frames, score on the labelled "val"
    frames. folds = K >= 2: K-fold cross-validation over all labelled frames (KITTI's 200 have no val
    split); fold k scores part k and trains on the fraction of the others."""
    lab = labelled(frames, task)
    by = {f.id: f for f in lab}
    if folds <= 1:
        train = [f.id for f in lab if f.split == "train"]
        val = sorted(f.id for f in lab if f.split == "val")
        if not val:
            raise DataError(frames[0].image if frames else "index", f"no labelled val frames for --task {task}; "
                                                                    f"use --folds 5 (cross-validation)")
        if not train:
            raise DataError(frames[0].image, f"no labelled train frames for --task {task}")
        parts = [(train, val)]
    else:
        split = kfold([f.id for f in lab], folds, seed)
        parts = [([i for j, p in enumerate(split) if j != k for i in p], split[k]) for k in range(folds)]
    return [Fold(k, [by[i] for i in seeded_subset(tr, fraction, seed)], [by[i] for i in va], len(tr))
            for k, (tr, va) in enumerate(parts)]


def working_size(frame: Frame, image_width: int) -> tuple[int, int]:
    """(H, W) at which a frame's image is read for training and scoring: native, or scaled down to
    `image_width` (aspect kept). Labels are always scored at their own resolution."""
    if image_width <= 0 or frame.width <= image_width:
        return frame.height, frame.width
    return max(1, round(frame.height * image_width / frame.width)), image_width


def class_names(task: str) -> list[str]:
    """The classes a task predicts: 19 trainIds (semantic), background + 8 things (instance)."""
    return list(TRAIN_NAMES) if task == "semantic" else ["background"] + [n for _, n in INSTANCE_CLASSES]


def semantic_target(frame: Frame, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W] trainIds 0..18 (IGNORE 255 elsewhere) from the frame's labelIds PNG."""
    return to_train_ids(read_label(frame.semantic, size))  # type: ignore[arg-type]


def instance_target(frame: Frame, encoding: str, size: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes [N] 1..8, masks bool [N, H, W], crowd bool [9, H, W]) of the frame's instance PNG."""
    return instance_masks(read_label(frame.instance, size), encoding)  # type: ignore[arg-type]


def subrun_name(fold: int, repeat: int) -> str:
    return f"f{fold}_r{repeat}"


def write_plan(run_dir: Path, plan: dict[str, Any], folds: list[Fold]) -> Path:
    """plan.json plus the frame lists as plain text (one id a line) for people and other tools."""
    for f in folds:
        write_text(run_dir / f"train_frames_f{f.index}.txt", "".join(x.id + "\n" for x in f.train))
        write_text(run_dir / f"val_frames_f{f.index}.txt", "".join(x.id + "\n" for x in f.val))
    plan = dict(plan, folds=[{"fold": f.index, "pool": f.pool, "train": [_frame_dict(x) for x in f.train],
                              "val": [_frame_dict(x) for x in f.val]} for f in folds])
    return write_json(run_dir / "plan.json", plan)


def read_plan(run_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(run_dir) / "plan.json"
    if not p.is_file():
        raise DataError(p, "not a fine-tuning run folder (no plan.json; run `python -m train finetune` first)")
    plan = json.loads(p.read_text())
    for f in plan["folds"]:
        f["train"] = [Frame(**d) for d in f["train"]]
        f["val"] = [Frame(**d) for d in f["val"]]
    return plan


def _frame_dict(f: Frame) -> dict[str, Any]:
    return {k: getattr(f, k) for k in ("id", "image", "split", "sequence", "index", "width", "height",
                                       "fx", "fy", "cx", "cy", "semantic", "instance")}
