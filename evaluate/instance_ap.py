"""COCO-style instance AP (mask and box) through pycocotools, on in-memory masks.

    ground truth per image: classes [N] (1..K), masks bool [N, H, W], crowd bool [K + 1, H, W]
    predictions per image:  classes [D], scores [D], masks bool [D, H, W], boxes [D, 4] (x0, y0, x1, y1)

AP is COCO's: precision interpolated at 101 recall points, averaged over IoU thresholds
0.50:0.05:0.95 and over the classes that have ground truth; AP50 at IoU 0.5 only; 100 detections
per image at most. Crowd regions (pixels of a thing class that belong to no object) are COCO
`iscrowd` annotations: a detection on them is neither a true nor a false positive. Numbers are
percentages; NaN when no image has a ground-truth object.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass
class ImageInstances:
    classes: np.ndarray  # int [N] 1..K
    masks: np.ndarray  # bool [N, H, W]
    scores: np.ndarray | None = None  # float [N], predictions only
    boxes: np.ndarray | None = None  # float [N, 4] x0, y0, x1, y1; None: the masks' bounding boxes
    crowd: np.ndarray | None = None  # bool [K + 1, H, W], ground truth only


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def mask_box(mask: np.ndarray) -> list[float]:
    """[x, y, w, h] (COCO) of the pixels of a mask: whole pixels, so a single pixel is 1 x 1."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _coco_ground_truth(gts: list[ImageInstances], n_classes: int) -> COCO:
    images, anns = [], []
    for i, g in enumerate(gts):
        h, w = g.masks.shape[1:] if g.masks.ndim == 3 and g.masks.shape[0] else g.crowd.shape[1:]  # type: ignore[union-attr]
        images.append({"id": i, "height": int(h), "width": int(w)})
        objects = [(int(c), m, 0) for c, m in zip(g.classes, g.masks)]
        if g.crowd is not None:
            objects += [(k, g.crowd[k], 1) for k in range(1, n_classes + 1) if g.crowd[k].any()]
        for c, m, crowd in objects:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "segmentation": _rle(m),
                         "area": float(m.sum()), "bbox": mask_box(m), "iscrowd": crowd})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": k} for k in range(1, n_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _detections(preds: list[ImageInstances], kind: str) -> list[dict]:
    out = []
    for i, p in enumerate(preds):
        for j in range(len(p.classes)):
            d = {"image_id": i, "category_id": int(p.classes[j]), "score": float(p.scores[j])}  # type: ignore[index]
            if kind == "segm":
                d["segmentation"] = _rle(p.masks[j])
            else:
                box = p.boxes[j] if p.boxes is not None else None
                d["bbox"] = mask_box(p.masks[j]) if box is None else [float(box[0]), float(box[1]),
                                                                       float(box[2] - box[0]), float(box[3] - box[1])]
            out.append(d)
    return out


def instance_ap(gts: list[ImageInstances], preds: list[ImageInstances], n_classes: int) -> dict[str, float]:
    """{"mask_AP", "mask_AP50", "box_AP", "box_AP50"} in percent over images gts[i] / preds[i]."""
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
    out = {}
    n_objects = sum(len(g.classes) for g in gts)
    gt = _coco_ground_truth(gts, n_classes)
    for kind, name in (("segm", "mask"), ("bbox", "box")):
        dets = _detections(preds, kind)
        if n_objects == 0:
            out[f"{name}_AP"] = out[f"{name}_AP50"] = float("nan")
            continue
        if not dets:  # pycocotools cannot load an empty result list; no detection = AP 0
            out[f"{name}_AP"] = out[f"{name}_AP50"] = 0.0
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[f"{name}_AP"], out[f"{name}_AP50"] = 100.0 * float(ev.stats[0]), 100.0 * float(ev.stats[1])
    return out
