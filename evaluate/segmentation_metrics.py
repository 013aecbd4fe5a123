"""Scores of an unsupervised segmentation: confusion matrix, Hungarian matching, pixel accuracy, IoU.

An unsupervised model predicts cluster ids, not classes, so a prediction is scored in three steps:

    confusion_matrix(gt, clusters)      [C classes, K clusters] pixel counts (ignore pixels dropped)
    match_clusters(conf, matching)      each cluster -> one class (Hungarian, one-to-one)
    class_confusion(conf, mapping)      [C, C + 1] counts by matched class (+ "no class" column)
    scores(class_conf)                  pixel accuracy, per-class IoU, mIoU (in percent)

Two protocols (`PROTOCOLS`) fix the classes and the matching objective:
  paper  the 19 Cityscapes trainIds; the matching maximises the summed IoU of matched pairs.
  picie  PiCIE's 27 classes (labelIds 7..33); the matching maximises the matched pixel count.

Averaging rule, the same for both protocols and every dataset: a class enters the mIoU iff it has
ground-truth pixels in the evaluated frames ("present"). Only present classes take part in the
matching. On the full Cityscapes val set every class is present, so this is the standard mean over
all 19 (or 27) classes; on a few frames or on the synthetic city (a subset of the classes) it is the
mean over the classes that the frames show. Pixels predicted as a cluster matched to no class (or
to a class that is absent) are still errors: they count against their ground-truth class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from shared.labels import IGNORE, NAMES_27, TRAIN_NAMES, to_27_classes, to_train_ids

MATCHINGS = ("iou", "pixels")


@dataclass(frozen=True)
class Protocol:
    name: str
    class_names: list[str]
    to_classes: Callable[[np.ndarray], np.ndarray]  # labelIds [H, W] -> class ids, IGNORE elsewhere
    matching: str  # "iou" | "pixels"
    description: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", TRAIN_NAMES, to_train_ids, "iou",
                      "19 Cityscapes trainIds, Hungarian matching maximising the summed IoU"),
    "picie": Protocol("picie", NAMES_27, to_27_classes, "pixels",
                      "PiCIE's 27 classes (labelIds 7..33), Hungarian matching maximising matched pixels"),
}


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int, n_clusters: int,
                     ignore: int = IGNORE) -> np.ndarray:
    """int64 [n_classes, n_clusters]: entry (c, k) counts pixels of class c predicted as cluster k.

    gt, pred: integer arrays of the same shape (any number of dims). Pixels whose gt is `ignore`
    never count, whatever is predicted there. Any other out-of-range value is a caller's bug.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    g = gt.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    keep = g != ignore
    g, p = g[keep], p[keep]
    if g.size and (g.min() < 0 or g.max() >= n_classes):
        raise ValueError(f"ground-truth ids outside 0..{n_classes - 1} (and not ignore={ignore})")
    if p.size and (p.min() < 0 or p.max() >= n_clusters):
        raise ValueError(f"predicted cluster ids outside 0..{n_clusters - 1}")
    counts = np.bincount(g * n_clusters + p, minlength=n_classes * n_clusters)
    return counts.reshape(n_classes, n_clusters)


def iou_table(conf: np.ndarray) -> np.ndarray:
    """float64 [C, K]: IoU of the pixels of class c with the pixels of cluster k (0 where both are empty)."""
    conf = conf.astype(np.float64)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf
    return np.divide(conf, union, out=np.zeros_like(conf), where=union > 0)


def match_clusters(conf: np.ndarray, matching: str) -> np.ndarray:
    """int64 [K]: the class each cluster stands for, -1 for a cluster left without one.

    One-to-one Hungarian assignment between clusters and the present classes (rows with ground
    truth), maximising the summed IoU ("iou", the paper) or the matched pixel count ("pixels", PiCIE).
    With more clusters than present classes the surplus clusters get -1; with fewer, some classes
    get no cluster (their IoU is 0).
    """
    if matching not in MATCHINGS:
        raise ValueError(f"unknown matching {matching!r}; choose one of {MATCHINGS}")
    present = np.flatnonzero(conf.sum(1) > 0)  # [P]
    mapping = np.full(conf.shape[1], -1, dtype=np.int64)
    if present.size == 0:
        return mapping
    gain = iou_table(conf) if matching == "iou" else conf.astype(np.float64)
    from scipy.optimize import linear_sum_assignment  # not at the top: --help stays light

    rows, cols = linear_sum_assignment(gain[present], maximize=True)  # rows index into `present`
    mapping[cols] = present[rows]
    return mapping


def class_confusion(conf: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """int64 [C, C + 1]: counts by matched class; column C holds clusters mapped to no class (-1)."""
    n_classes, n_clusters = conf.shape
    if mapping.shape != (n_clusters,):
        raise ValueError(f"mapping has shape {mapping.shape}, expected ({n_clusters},)")
    target = np.where(mapping < 0, n_classes, mapping)  # [K]
    out = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(out.T, target, conf.T.astype(np.int64))  # sum the columns of clusters with one target
    return out


@dataclass(frozen=True)
class Scores:
    pixel_accuracy: float  # percent of counted pixels predicted as their class
    miou: float  # percent, mean IoU over the present classes
    iou: np.ndarray  # float64 [C] percent; NaN for classes absent from the ground truth
    present: np.ndarray  # bool [C]: the class has ground-truth pixels
    n_pixels: int


def scores(class_conf: np.ndarray) -> Scores:
    """Pixel accuracy, per-class IoU and mIoU from a [C, C + 1] (or [C, C]) matched confusion matrix."""
    n_classes = class_conf.shape[0]
    cc = class_conf.astype(np.float64)
    tp = np.diag(cc[:, :n_classes])  # [C]
    gt_total = cc.sum(1)  # [C]
    pred_total = cc[:, :n_classes].sum(0)  # [C]
    present = gt_total > 0
    union = gt_total + pred_total - tp
    iou = np.where(present, 100.0 * tp / np.maximum(union, 1.0), np.nan)
    total = cc.sum()
    return Scores(
        pixel_accuracy=float(100.0 * tp.sum() / total) if total > 0 else float("nan"),
        miou=float(np.nanmean(iou)) if present.any() else float("nan"),
        iou=iou,
        present=present,
        n_pixels=int(total),
    )


def evaluate_clusters(conf: np.ndarray, matching: str) -> tuple[np.ndarray, np.ndarray, Scores]:
    """(mapping [K], matched confusion [C, C + 1], scores) of a cluster confusion matrix [C, K]."""
    mapping = match_clusters(conf, matching)
    cc = class_confusion(conf, mapping)
    return mapping, cc, scores(cc)
