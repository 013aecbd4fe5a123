"""Scoring fine-tuned networks: an oracle scores 100, the run report aggregates folds, two runs make
one comparison table."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluate import finetune as EV
from evaluate.segmentation_metrics import confusion_matrix, scores
from shared.datasets import build_index
from shared.finetune_data import semantic_target
from shared.labels import TRAIN_CLASSES
from shared.nets.semantic_fpn import MEAN, STD
from tests.kitti_semantics_fixture import COLOURS, make_kitti_semantics
from train import finetune as FT


class ColourOracle(torch.nn.Module):
    """Logits that pick, per pixel, the class whose fixture colour is nearest (exact on the fixture)."""

    def forward(self, x):  # x: ImageNet-normalised [B, 3, H, W]
        rgb = x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        logits = torch.full((x.shape[0], 19) + x.shape[2:], -1e4)
        train_id = {lid: t for t, (lid, _) in enumerate(TRAIN_CLASSES)}
        for lid, c in COLOURS.items():
            d = ((rgb - torch.tensor(c).view(1, 3, 1, 1) / 255.0) ** 2).sum(1)
            logits[:, train_id[lid]] = -d
        return logits


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return build_index("kitti-semantic", make_kitti_semantics(tmp_path_factory.mktemp("k") / "k", n=4))


def test_an_oracle_scores_100_at_full_label_resolution(frames):
    conf = np.zeros((19, 19), np.int64)
    for f in frames:
        pred, img = EV.predict_semantic(ColourOracle(), f, 0, torch.device("cpu"))
        assert pred.shape == (f.height, f.width) == img.shape[:2]
        conf += confusion_matrix(semantic_target(f), pred, 19, 19)
    s = scores(conf)
    assert s.miou == pytest.approx(100.0) and s.pixel_accuracy == pytest.approx(100.0)
    assert int(s.present.sum()) == 4  # sky, road, building, car
    # fed at half width, scored at the labels' own size: only boundary pixels can go wrong
    pred, img = EV.predict_semantic(ColourOracle(), frames[0], 64, torch.device("cpu"))
    assert img.shape[:2] == (32, 64) and pred.shape == (64, 128)
    assert 95.0 < (pred == semantic_target(frames[0])).mean() * 100 < 100.0


def test_run_report_and_comparison(frames, tmp_path, capsys):
    root = frames[0].image.split("/training/")[0]
    kw = dict(dataset="kitti-semantic", data_root=root, out=str(tmp_path), backbone="resnet18", folds=2,
              iterations=1, batch_size=1, crop_height=64, crop_width=128, warmup_steps=0, workers=0,
              progress=False)
    a = FT.finetune(FT.FinetuneConfig(init="scratch", **kw))
    b = FT.finetune(FT.FinetuneConfig(init="scratch", seed=5, **kw))
    cfg = EV.FinetuneEvalConfig(dataset="kitti-semantic", data_root=root, out=str(tmp_path), runs=f"{a},{b}",
                                pictures=1, device="cpu")
    sa, sb = EV.evaluate_finetune(cfg)
    assert [n["network"] for n in sa["networks"]] == ["f0_r0", "f1_r0"]
    mious = [n["miou"] for n in sa["networks"]]
    assert sa["miou"] == pytest.approx(np.mean(mious)) and sa["miou_std"] == pytest.approx(np.std(mious, ddof=1))
    for n in sa["networks"]:  # each network's mIoU is the one of its own confusion matrix
        assert n["miou"] == pytest.approx(scores(np.array(n["confusion"])).miou)
    assert (a / "report.html").is_file() and (a / "confusion.png").is_file() and (a / "f0_r0" / "metrics.json").is_file()
    assert (a / "f0_r0" / sa["networks"][0]["pictures"][0]).is_file()
    compare = list((tmp_path / "kitti-semantic" / "finetune").glob("compare-*/compare.json"))
    assert len(compare) == 1 and len(json.loads(compare[0].read_text())["runs"]) == 2
    # scored again: read from the cache, same numbers, and it says so
    capsys.readouterr()
    again = EV.evaluate_run(a, torch.device("cpu"), 1, 0.5)
    assert again["miou"] == pytest.approx(sa["miou"])
    assert capsys.readouterr().out.count("(reused metrics.json: the checkpoint is older)") == 2


def test_instance_network_is_scored_at_label_resolution(frames, tmp_path):
    root = frames[0].image.split("/training/")[0]
    run = FT.finetune(FT.FinetuneConfig(dataset="kitti-semantic", data_root=root, out=str(tmp_path), task="instance",
                                        init="scratch", backbone="resnet18", folds=2, iterations=1, batch_size=1,
                                        crop_height=64, crop_width=128, warmup_steps=0, workers=0, progress=False,
                                        stop_after=1))
    model = EV.load_network(run / "f0_r0" / "checkpoint.pt", torch.device("cpu"))
    pred, img = EV.predict_instances(model, frames[0], 64, torch.device("cpu"))  # fed at half size
    assert img.shape[:2] == (32, 64) and pred.masks.shape[1:] == (64, 128)
    assert len(pred.classes) == len(pred.scores) == len(pred.boxes) == len(pred.masks)
    assert EV.instance_overlay(img, pred, 0.0).shape == (64, 128, 3)
    res = EV.evaluate_network(run / "f0_r0", frames[:2], "instance", "kitti", 0, torch.device("cpu"), 1, 0.5)
    assert res["objects"] == 3 and 0.0 <= res["mask_AP"] <= 100.0  # frames 0 and 1 hold 1 and 2 cars
    assert (run / "f0_r0" / res["pictures"][0]).is_file()
