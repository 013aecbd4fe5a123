"""Known-answer tests of the unsupervised segmentation scores and of the label mapping they rely on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.segmentation_metrics import (PROTOCOLS, class_confusion, confusion_matrix, evaluate_clusters,
                                           iou_table, match_clusters, scores)
from shared.labels import IGNORE

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FRANKFURT = DATA / "cityscapes" / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine"


def test_confusion_matrix_counts_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, IGNORE]])
    pred = np.array([[1, 1, 0], [1, 0, 1]])
    conf = confusion_matrix(gt, pred, n_classes=3, n_clusters=2)
    assert conf.tolist() == [[0, 2], [1, 1], [1, 0]]


def test_ignore_pixels_never_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (20, 30))
    pred = gt.copy()
    base = confusion_matrix(gt, pred, 3, 3)
    gt2 = gt.copy()
    gt2[:5] = IGNORE
    # whatever is predicted under ignore pixels, even ids no cluster has, changes nothing
    pred2 = pred.copy()
    pred2[:5] = 999
    conf = confusion_matrix(gt2, pred2, 3, 3)
    assert conf.sum() == gt.size - 5 * 30
    assert np.array_equal(conf, base - confusion_matrix(gt[:5], pred[:5], 3, 3))
    _, _, s = evaluate_clusters(conf, "iou")
    assert s.pixel_accuracy == 100.0 and s.miou == 100.0


def test_out_of_range_ids_are_errors():
    with pytest.raises(ValueError, match="cluster ids"):
        confusion_matrix(np.array([0, 1]), np.array([0, 5]), 2, 2)
    with pytest.raises(ValueError, match="ground-truth ids"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 2, 2)


@pytest.mark.parametrize("matching", ["iou", "pixels"])
def test_perfect_prediction_scores_100(matching):
    gt = np.repeat(np.arange(5), 40).reshape(10, 20)
    _, _, s = evaluate_clusters(confusion_matrix(gt, gt, 5, 5), matching)
    assert s.pixel_accuracy == 100.0 and s.miou == 100.0
    assert np.all(s.iou == 100.0)


@pytest.mark.parametrize("matching", ["iou", "pixels"])
def test_permuted_labels_score_100_after_matching(matching):
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, (32, 32))
    perm = np.array([4, 0, 5, 2, 1, 3])
    pred = perm[gt]
    conf = confusion_matrix(gt, pred, 6, 6)
    mapping, _, s = evaluate_clusters(conf, matching)
    assert s.miou == 100.0 and s.pixel_accuracy == 100.0
    assert np.array_equal(mapping[perm], np.arange(6))  # cluster perm[c] stands for class c


def test_hand_computed_confusion_under_both_protocols():
    # rows = classes A, B; columns = clusters 0, 1
    conf = np.array([[0, 4], [2, 7]])
    # class totals A=4, B=9; cluster totals 0:2, 1:11
    # IoU(A,0)=0, IoU(A,1)=4/11, IoU(B,0)=2/9, IoU(B,1)=7/13
    assert np.allclose(iou_table(conf), [[0, 4 / 11], [2 / 9, 7 / 13]])
    # paper (summed IoU): identity 7/13=0.538 < swap 4/11+2/9=0.586 -> 0->B, 1->A
    mapping, _, s = evaluate_clusters(conf, "iou")
    assert mapping.tolist() == [1, 0]
    assert s.iou == pytest.approx([100 * 4 / 11, 100 * 2 / 9])
    assert s.miou == pytest.approx(100 * (4 / 11 + 2 / 9) / 2)  # 29.29
    assert s.pixel_accuracy == pytest.approx(100 * 6 / 13)  # 46.15
    # PiCIE (matched pixels): identity 0+7=7 > swap 4+2=6 -> 0->A, 1->B
    mapping, _, s = evaluate_clusters(conf, "pixels")
    assert mapping.tolist() == [0, 1]
    assert s.iou == pytest.approx([0.0, 100 * 7 / 13])
    assert s.miou == pytest.approx(100 * 7 / 26)  # 26.92
    assert s.pixel_accuracy == pytest.approx(100 * 7 / 13)  # 53.85


def test_absent_classes_are_not_averaged_but_their_clusters_still_cost():
    # 3 classes, class 2 absent from the ground truth; 3 clusters, cluster 2 steals class 1 pixels
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    conf = confusion_matrix(gt, pred, 3, 3)
    mapping = match_clusters(conf, "iou")
    assert mapping.tolist() == [0, 1, -1]  # only present classes take part
    cc = class_confusion(conf, mapping)
    assert cc.tolist() == [[4, 0, 0, 0], [0, 2, 0, 2], [0, 0, 0, 0]]
    s = scores(cc)
    assert s.present.tolist() == [True, True, False]
    assert np.isnan(s.iou[2])
    assert s.iou[:2] == pytest.approx([100.0, 50.0])
    assert s.miou == pytest.approx(75.0)
    assert s.pixel_accuracy == pytest.approx(75.0)


def test_fewer_clusters_than_classes_leaves_a_class_at_zero():
    gt = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])
    _, _, s = evaluate_clusters(confusion_matrix(gt, pred, 3, 2), "pixels")
    assert sorted(s.iou.tolist()) == pytest.approx([0.0, 50.0, 100.0])
    assert s.miou == pytest.approx(50.0)


def test_protocol_class_counts():
    assert PROTOCOLS["paper"].n_classes == 19 and PROTOCOLS["paper"].matching == "iou"
    assert PROTOCOLS["picie"].n_classes == 27 and PROTOCOLS["picie"].matching == "pixels"


def test_protocols_map_label_ids_not_train_ids():
    # labelIds: 7 road, 26 car, 0 unlabelled, 1 ego vehicle; read raw as trainIds they would be 7 / 26 / 0 / 1
    label_ids = np.array([[7, 26], [0, 1]], dtype=np.uint8)
    assert PROTOCOLS["paper"].to_classes(label_ids).tolist() == [[0, 13], [IGNORE, IGNORE]]
    assert PROTOCOLS["picie"].to_classes(label_ids).tolist() == [[0, 19], [IGNORE, IGNORE]]


@pytest.mark.skipif(not FRANKFURT.with_name(FRANKFURT.name + "_labelIds.png").is_file(),
                    reason="../shared/data/cityscapes (real Cityscapes fixture) is absent")
def test_paper_protocol_matches_official_label_train_ids():
    from evaluate.unsupervised import load_ground_truth

    label_ids = Path(str(FRANKFURT) + "_labelIds.png")
    official = np.asarray(Image.open(str(FRANKFURT) + "_labelTrainIds.png"))
    gt = load_ground_truth(label_ids, (128, 256), PROTOCOLS["paper"])
    # The fixture's two PNGs were downscaled separately, so 77 of 32768 boundary pixels disagree;
    # everywhere else the mapped labelIds are the official trainIds.
    assert (gt == official).mean() > 0.995
    # the raw labelIds would not do: reading them as trainIds is the mistake this guards against
    raw = np.asarray(Image.open(label_ids))
    assert (raw == official).mean() < 0.01
