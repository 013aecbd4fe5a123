"""Instance AP against numbers computed by hand, and the pieces of the fine-tuning scores."""
from __future__ import annotations

import numpy as np
import pytest

from evaluate.instance_ap import ImageInstances, instance_ap, mask_box
from evaluate.finetune import mean_std


def _square(y, x, size, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def _case(extra_crowd=False):
    """Two cars (class 3): A at (0, 0) and B at (20, 20), 10x10 each. Detections by score:
    d3 (0.95) a false positive far away, d1 (0.9) exactly A, d2 (0.8) B shifted 2 columns:
    IoU 80 / 120 = 0.667, a hit at IoU thresholds 0.50..0.65, a miss from 0.70 on."""
    a, b = _square(0, 0, 10), _square(20, 20, 10)
    crowd = np.zeros((9, 40, 40), bool)
    if extra_crowd:
        crowd[3] = _square(30, 0, 8)  # a group of cars with no instance ids
    gt = ImageInstances(np.array([3, 3]), np.stack([a, b]), crowd=crowd)
    dets = [_square(0, 28, 8), a, _square(20, 22, 10)]
    scores = [0.95, 0.9, 0.8]
    if extra_crowd:  # a confident detection on the crowd region: neither hit nor false positive
        dets.append(_square(30, 0, 8))
        scores.append(0.99)
    pred = ImageInstances(np.full(len(dets), 3), np.stack(dets), scores=np.array(scores))
    return gt, pred


def test_ap_matches_the_hand_computed_value():
    gt, pred = _case()
    # Precision after each detection: 0/1, 1/2, 2/3; recall 0, 1/2, 1. COCO takes at each of 101 recall
    # points the best precision at that recall or beyond.
    #   IoU thresholds 0.50..0.65 (4 of 10): precision 2/3 at every recall point   -> AP_t = 2/3
    #   IoU thresholds 0.70..0.95 (6 of 10): recall stops at 1/2, reached at precision 1/2,
    #   so recall points 0.00..0.50 (51 of 101) get 1/2 and the rest 0         -> AP_t = 51/101 / 2
    expected_ap = 100 * (4 * (2 / 3) + 6 * (51 / 101) / 2) / 10
    r = instance_ap([gt], [pred], n_classes=8)
    assert r["mask_AP50"] == pytest.approx(100 * 2 / 3, abs=1e-6)
    assert r["mask_AP"] == pytest.approx(expected_ap, abs=1e-6)
    # the masks are rectangles: their boxes give the same numbers
    assert r["box_AP50"] == pytest.approx(r["mask_AP50"]) and r["box_AP"] == pytest.approx(r["mask_AP"])


def test_a_detection_on_a_crowd_region_is_ignored():
    r0 = instance_ap(*map(lambda x: [x], _case()), n_classes=8)
    r1 = instance_ap(*map(lambda x: [x], _case(extra_crowd=True)), n_classes=8)
    assert r1["mask_AP"] == pytest.approx(r0["mask_AP"]) and r1["mask_AP50"] == pytest.approx(r0["mask_AP50"])


def test_perfect_empty_and_missing_cases():
    gt, _ = _case()
    perfect = ImageInstances(gt.classes, gt.masks, scores=np.array([0.9, 0.8]))
    r = instance_ap([gt], [perfect], 8)
    assert r["mask_AP"] == pytest.approx(100.0) and r["box_AP50"] == pytest.approx(100.0)
    wrong_class = ImageInstances(np.array([1, 1]), gt.masks, scores=np.array([0.9, 0.8]))
    assert instance_ap([gt], [wrong_class], 8)["mask_AP"] == pytest.approx(0.0)
    none = ImageInstances(np.zeros(0, int), np.zeros((0, 40, 40), bool), scores=np.zeros(0))
    assert instance_ap([gt], [none], 8)["mask_AP"] == 0.0
    empty_gt = ImageInstances(np.zeros(0, int), np.zeros((0, 40, 40), bool), crowd=np.zeros((9, 40, 40), bool))
    assert np.isnan(instance_ap([empty_gt], [perfect], 8)["mask_AP"])


def test_mask_box_and_mean_std():
    assert mask_box(_square(3, 5, 4)) == [5.0, 3.0, 4.0, 4.0]
    m, s = mean_std([1.0, 2.0, 6.0])
    assert m == pytest.approx(3.0) and s == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert mean_std([5.0]) == (5.0, 0.0) and np.isnan(mean_std([])[0])
