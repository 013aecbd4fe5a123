"""Every metric against a plausible wrong variant: for each, a hand-made case on which the variant (another
IoU, another matching, another averaging) gives a different number, so a test passing here could not
pass with the variant; and, where one exists, an implementation written independently of ours
(brute force over assignments, per-class masks, the COCO rules by hand; pycocotools is what
instance_ap runs, so its check is the hand computation)."""
from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest

from evaluate.ablate import compare
from evaluate.depth_metrics import depth_errors, evaluate_depth, mean_metrics
from evaluate.instance_ap import ImageInstances, instance_ap
from evaluate.proposals import MethodSummary, frame_scores, iou_matrix
from evaluate.segmentation_metrics import class_confusion, confusion_matrix, evaluate_clusters, match_clusters

# --- mIoU (both protocols) ---


def _best_by_brute_force(gain: np.ndarray) -> float:
    """The largest summed gain of a one-to-one assignment of rows to columns, by enumeration."""
    rows, cols = gain.shape
    if rows <= cols:
        return max(sum(gain[r, c] for r, c in zip(range(rows), p)) for p in itertools.permutations(range(cols), rows))
    return max(sum(gain[r, c] for c, r in zip(range(cols), p)) for p in itertools.permutations(range(rows), cols))


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_matching_reaches_the_brute_force_optimum_of_its_own_objective(seed):
    conf = np.random.default_rng(seed).integers(0, 30, (4, 5))
    for matching, gain in (("iou", conf / (conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf)),
                           ("pixels", conf.astype(float))):
        mapping = match_clusters(conf, matching)
        got = sum(gain[mapping[k], k] for k in range(conf.shape[1]) if mapping[k] >= 0)
        assert got == pytest.approx(_best_by_brute_force(gain))


def test_miou_is_not_majority_vote_and_iou_is_not_dice():
    """Majority vote (each cluster -> the class it overlaps most, many-to-one) is the common wrong variant
    of unsupervised scoring: it lets two clusters share a class. IoU = TP / (TP + FP + FN), not Dice."""
    gt = np.array([0] * 6 + [1] * 2)
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1])  # class 0 split over both clusters, class 1 in cluster 1
    conf = confusion_matrix(gt, pred, 2, 2)
    _, _, s = evaluate_clusters(conf, "iou")
    # one-to-one: cluster 0 -> class 0 (IoU 3/6), cluster 1 -> class 1 (IoU 2/5)
    assert s.miou == pytest.approx(100 * (3 / 6 + 2 / 5) / 2)
    # independent: per-class IoU from the label arrays after mapping
    mapped = match_clusters(conf, "iou")[pred]
    by_hand = [((gt == c) & (mapped == c)).sum() / ((gt == c) | (mapped == c)).sum() for c in (0, 1)]
    assert s.iou / 100 == pytest.approx(by_hand)
    majority = np.argmax(conf, axis=0)[pred]  # both clusters -> class 0
    wrong = np.mean([((gt == c) & (majority == c)).sum() / ((gt == c) | (majority == c)).sum() for c in (0, 1)])
    assert 100 * wrong != pytest.approx(s.miou)
    dice = np.mean([2 * ((gt == c) & (mapped == c)).sum() / ((gt == c).sum() + (mapped == c).sum()) for c in (0, 1)])
    assert 100 * dice != pytest.approx(s.miou)


def test_miou_of_summed_confusions_is_not_the_mean_of_per_frame_mious():
    """The evaluation sums the confusion matrices of all frames and scores once (the Cityscapes rule);
    averaging per-frame mIoUs weights a small frame like a large one."""
    a = confusion_matrix(np.array([0] * 8 + [1] * 8), np.array([0] * 8 + [1] * 8), 2, 2)  # perfect, 16 px
    b = confusion_matrix(np.array([0, 1]), np.array([1, 0]), 2, 2)  # 2 px, swapped
    _, _, pooled = evaluate_clusters(a + b, "pixels")
    assert pooled.miou == pytest.approx(100 * 8 / 10)  # each class: 8 hits, 1 miss, 1 false alarm
    per_frame = np.mean([evaluate_clusters(c, "pixels")[2].miou for c in (a, b)])  # (100 + 100) / 2
    assert per_frame != pytest.approx(pooled.miou)


def test_unmatched_cluster_pixels_count_against_their_class():
    """Dropping the pixels of a cluster matched to no class (instead of counting them as misses) would
    raise both pixel accuracy and IoU."""
    conf = confusion_matrix(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 2]), 1, 3)
    mapping, cc, s = evaluate_clusters(conf, "iou")
    assert mapping.tolist() == [0, -1, -1] and cc.tolist() == [[2, 2]]
    assert (s.pixel_accuracy, s.miou) == (pytest.approx(50.0), pytest.approx(50.0))
    dropped = class_confusion(conf, mapping)[:, :1]  # the variant: no "no class" column
    assert dropped.tolist() == [[2]] and 100.0 != pytest.approx(s.miou)


# --- instance AP, AP50 ---


def _square(y: int, x: int, size: int) -> np.ndarray:
    m = np.zeros((40, 40), bool)
    m[y:y + size, x:x + size] = True
    return m


def test_ap50_averages_over_classes_not_over_pooled_detections():
    """Class 1: one instance, found exactly (AP 1). Class 2: two instances, found after a confident false
    positive: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> COCO's interpolated precision is 2/3 at
    every recall point (AP 2/3). The mean over classes is 5/6; ranking all detections together (pooled)
    gives precision 3/4 at every recall point instead, and the raw (not interpolated) area gives 7/12
    for class 2."""
    gt = ImageInstances(np.array([1, 2, 2]), np.stack([_square(0, 0, 10), _square(20, 0, 10), _square(20, 20, 10)]),
                        crowd=np.zeros((9, 40, 40), bool))
    pred = ImageInstances(np.array([2, 1, 2, 2]),
                          np.stack([_square(0, 28, 8), _square(0, 0, 10), _square(20, 0, 10), _square(20, 20, 10)]),
                          scores=np.array([0.95, 0.9, 0.5, 0.4]))
    r = instance_ap([gt], [pred], n_classes=3)
    assert r["mask_AP50"] == pytest.approx(100 * (1 + 2 / 3) / 2, abs=1e-6)
    assert r["mask_AP"] == pytest.approx(r["mask_AP50"], abs=1e-6)  # exact masks: a hit at every threshold
    pooled, raw_class_2 = 3 / 4, 1 / 2 * 1 / 2 + 2 / 3 * 1 / 2
    assert 100 * pooled != pytest.approx(r["mask_AP50"]) and 100 * (1 + raw_class_2) / 2 != pytest.approx(r["mask_AP50"])


# --- region-proposal metrics ---


def test_bilateral_matching_is_hungarian_not_greedy():
    """Masks A (pixels 0-9) and B (10-19); regions R1 (0-2) and R2 (3-14). Greedy matching takes the best
    pair (A, R2) = 7/15 first and leaves B with R1 (0); the one-to-one optimum is (A, R1) + (B, R2) =
    3/10 + 5/17."""
    gt = np.array([[0] * 10 + [1] * 10])
    regions = np.array([[1] * 3 + [2] * 12 + [0] * 5], dtype=np.uint16)
    labels = np.full((1, 20), 7)
    iou = iou_matrix(gt, regions, labels >= 7)
    assert iou == pytest.approx(np.array([[3 / 10, 7 / 15], [0.0, 5 / 17]]))
    fs = frame_scores(gt, regions, labels)
    assert fs.matched_iou_sum == pytest.approx(_best_by_brute_force(iou)) == pytest.approx(3 / 10 + 5 / 17)
    greedy = 7 / 15 + 0.0
    assert greedy != pytest.approx(fs.matched_iou_sum)
    s = MethodSummary([fs]).summary()
    assert s["bilateral_miou"] == pytest.approx(100 * (3 / 10 + 5 / 17) / 2)
    assert s["gt_query_miou"] == pytest.approx(100 * (7 / 15 + 5 / 17) / 2)  # each mask's best region


def test_proposal_scores_pool_over_masks_and_pixels_not_over_frames_or_regions():
    """GT-query mIoU is the mean over all masks of all frames; bilateral sums over sums; purity is
    pixel-weighted. The per-frame and per-region means are the variants."""
    one = np.array([[0] * 4], dtype=np.int64)  # frame 1: one mask, found exactly
    f1 = frame_scores(one, np.array([[1] * 4], dtype=np.uint16), np.full((1, 4), 7))
    gt2 = np.array([[0, 0, 1, 1, 2, 2]])  # frame 2: three masks, each half-covered by its own region
    f2 = frame_scores(gt2, np.array([[1, 0, 2, 0, 3, 0]], dtype=np.uint16), np.full((1, 6), 7))
    s = MethodSummary([f1, f2]).summary()
    assert s["gt_query_miou"] == pytest.approx(100 * (1 + 3 * 0.5) / 4)
    assert 100 * (1 + 0.5) / 2 != pytest.approx(s["gt_query_miou"])  # per-frame mean
    assert s["bilateral_miou"] == pytest.approx(100 * (1 + 1.5) / (1 + 3))
    assert 100 * (1 / 1 + 1.5 / 3) / 2 != pytest.approx(s["bilateral_miou"])
    # purity: a 10-pixel pure region and a 2-pixel half-and-half one
    labels = np.array([[7] * 10 + [7, 8]])
    fp = frame_scores(np.full((1, 12), -1), np.array([[1] * 10 + [2, 2]], dtype=np.uint16), labels)
    purity = MethodSummary([fp]).summary()["purity"]
    assert purity == pytest.approx(100 * 11 / 12) and 100 * (1 + 0.5) / 2 != pytest.approx(purity)


# --- depth metrics ---


def test_depth_metrics_average_per_image_with_a_median_ratio_per_image():
    """The Eigen / monodepth2 protocol: median scaling and the metrics per image, then the mean over
    images. A single ratio for the whole set, or the errors pooled over all pixels, are the variants."""
    gt1, gt2 = np.full((2, 2), 10.0, np.float32), np.array([[5.0, 20.0]], np.float32)
    pred1, pred2 = gt1 / 2, gt2 / 3  # right up to a different scale each
    e1, r1 = evaluate_depth(gt1, pred1)
    e2, r2 = evaluate_depth(gt2, pred2)
    assert (r1, r2) == (pytest.approx(2.0), pytest.approx(3.0)) and e1["abs_rel"] < 1e-6 and e2["abs_rel"] < 1e-6
    global_ratio = np.median(np.r_[gt1.ravel(), gt2.ravel()]) / np.median(np.r_[pred1.ravel(), pred2.ravel()])
    assert depth_errors(np.r_[gt1.ravel(), gt2.ravel()], np.r_[pred1.ravel(), pred2.ravel()] * global_ratio)["abs_rel"] > 0.1
    # per-image mean vs pooled pixels: 4 pixels at abs_rel 0.5 and 1 pixel at 0
    a = depth_errors(np.full(4, 2.0), np.full(4, 3.0))
    b = depth_errors(np.array([4.0]), np.array([4.0]))
    assert mean_metrics([a, b])["abs_rel"] == pytest.approx(0.25)
    assert depth_errors(np.r_[np.full(4, 2.0), 4.0], np.r_[np.full(4, 3.0), 4.0])["abs_rel"] == pytest.approx(0.4)


def test_sq_rel_divides_each_pixel_and_predictions_are_capped_after_scaling():
    gt, pred = np.array([2.0, 10.0]), np.array([4.0, 10.0])
    e = depth_errors(gt, pred)
    assert e["sq_rel"] == pytest.approx((4 / 2 + 0) / 2)  # mean((g - p)^2 / g)
    assert np.mean((gt - pred) ** 2) / np.mean(gt) != pytest.approx(e["sq_rel"])  # ratio of means
    assert e["rmse_log"] == pytest.approx(np.sqrt(np.mean(np.log(gt / pred) ** 2)))
    assert np.sqrt(np.mean(np.log10(gt / pred) ** 2)) != pytest.approx(e["rmse_log"])  # log10
    # a far prediction is capped at max_depth after the median scaling: 200 m counts as 80 m
    g = np.array([[10.0, 10.0, 70.0]], np.float32)
    p = np.array([[10.0, 10.0, 200.0]], np.float32)
    capped, ratio = evaluate_depth(g, p, max_depth=80.0)
    assert ratio == pytest.approx(1.0)
    assert capped["abs_rel"] == pytest.approx((10 / 70) / 3)
    assert depth_errors(g.ravel().astype(float), p.ravel().astype(float))["abs_rel"] != pytest.approx(capped["abs_rel"])


# --- the ablation tables' spread rule ---


def test_the_spread_rule_uses_the_larger_sample_std_and_a_strict_inequality():
    """'>' needs |mean a - mean b| > max(sample std a, sample std b). Each case below is decided
    differently by one variant: population std (ddof 0), the smaller std, the sum of the stds, >=."""
    def variant(a, b, std, combine, strictly=True):
        d, s = abs(np.mean(a) - np.mean(b)), combine(std(a), std(b))
        return ("~" if (d <= s if strictly else d < s) else (">" if np.mean(a) > np.mean(b) else "<"))

    sample, population = statistics.stdev, statistics.pstdev
    a, b = [10.0, 12.0], [9.8, 9.8]  # stds 1.414 (sample), 1.0 (population), 0; difference 1.2
    assert compare(a, b) == "~" and variant(a, b, population, max) == ">" and variant(a, b, sample, min) == ">"
    a, b = [10.0, 12.0], [8.0, 10.0]  # stds 1.414 each; difference 2.0
    assert compare(a, b) == ">" and variant(a, b, sample, lambda x, y: x + y) == "~"
    a, b = [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]  # difference 1.0 = the larger std exactly
    assert compare(a, b) == "~" and variant(a, b, sample, max, strictly=False) == ">"
