"""End-to-end runs of `python -m evaluate unsupervised` on a tiny Cityscapes-layout dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from evaluate.unsupervised import PICIE, select_frames, unsupervised
from shared.frames import Frame
from shared.labels import CAR, ROAD, SKY

H, W = 64, 128
# colours of the three classes of the tiny city, chosen so the oracle network below can tell them apart
COLOURS = {SKY: (0, 0, 255), ROAD: (255, 0, 0), CAR: (0, 255, 0)}


def _scene(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [H, W, 3], labelIds [H, W]): bands of sky, cars, road and the ego vehicle (void, white).

    Band edges lie on multiples of 4 and there are no corners, so a stride-4 network whose features
    are upsampled bilinearly can be exact (at a corner the three neighbouring blocks outvote it).
    """
    lab = np.full((H, W), SKY, np.uint8)
    lab[20 + shift:36 + shift] = CAR
    lab[36 + shift:] = ROAD
    lab[56:] = 1  # ego vehicle: void, must never count, whatever colour it has
    rgb = np.zeros((H, W, 3), np.uint8)
    for lid, c in COLOURS.items():
        rgb[lab == lid] = c
    rgb[lab == 1] = (255, 255, 255)
    return rgb, lab


def make_city(root: Path) -> dict[int, int]:
    """Two labelled val frames in the Cityscapes layout; returns pixel counts per labelId."""
    counts: dict[int, int] = {}
    for i, shift in enumerate([0, 8]):
        rgb, lab = _scene(shift)
        stem = f"testcity_000000_{i:06d}"
        img_dir, gt_dir = root / "leftImg8bit" / "val" / "testcity", root / "gtFine" / "val" / "testcity"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(lab).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        for v, n in zip(*np.unique(lab, return_counts=True)):
            counts[int(v)] = counts.get(int(v), 0) + int(n)
    return counts


class ColourOracle(nn.Module):
    """A fake pre-trained network whose stride-4 feature is the mean RGB colour of each 4x4 block and
    whose prototypes are the RGB axes: a perfect unsupervised segmenter of the tiny city."""

    def __init__(self):
        super().__init__()
        self.prototypes = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.prototypes.weight.copy_(torch.eye(3))
        self.net_args = {"arch": "colour-oracle"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        rgb = x * std + mean  # undo the ImageNet normalisation
        return nn.functional.normalize(nn.functional.avg_pool2d(rgb, 4) + 1e-6, dim=1)


def _run(args: list[str]):
    result = CliRunner().invoke(unsupervised, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("clustering", ["agglomerative", "kmeans"])


def test_perfect_network_scores_100_under_both_protocols(tmp_path, monkeypatch, clustering):
    import shared.nets.semantic_fpn as semantic_fpn

    counts = make_city(tmp_path / "city")
    ckpt = tmp_path / "oracle.pt"
    ckpt.write_bytes(b"not read: load_pretrained is replaced")
    monkeypatch.setattr(semantic_fpn, "load_pretrained", lambda path, map_location="cpu": (ColourOracle(), {}))
    _run(["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"), "--out", str(tmp_path / "runs"),
          "--checkpoint", str(ckpt), "--no-baseline", "--clustering", clustering, "--name", "oracle",
          "--height", str(H), "--width", str(W), "--pictures", "1", "--device", "cpu"])
    report = json.loads((tmp_path / "runs" / "cityscapes" / "eval" / "oracle" / "report.json").read_text())
    assert report["size"] == [H, W] and len(report["frames"]) == 2
    for pname, n_classes in [("paper", 19), ("picie", 27)]:
        pr = report["protocols"][pname]
        assert pr["present_classes"] == ["road", "sky", "car"]
        assert pr["n_clusters"] == 3
        m = pr["models"]["pre-trained"]
        assert m["pixel_accuracy"] == 100.0 and m["miou"] == 100.0
        # void pixels (labelId 0) never count: the matched confusion holds exactly the labelled pixels
        conf = np.array(m["confusion_matched"])
        assert conf.shape == (n_classes, n_classes + 1)
        assert conf.sum() == counts[ROAD] + counts[SKY] + counts[CAR]
        assert sorted(conf.sum(1)[conf.sum(1) > 0].tolist()) == sorted([counts[ROAD], counts[SKY], counts[CAR]])
        assert sorted(c for c in m["cluster_to_class"]) == ["car", "road", "sky"]


def test_real_network_with_baseline_writes_the_full_report(tmp_path):
    from shared.nets.semantic_fpn import DenseSwAVNet

    make_city(tmp_path / "city")
    torch.manual_seed(3)
    net = DenseSwAVNet("resnet18", num_prototypes=16)
    ckpt = tmp_path / "run" / "model.pt"
    ckpt.parent.mkdir()
    torch.save({"model": net.state_dict(), "net_args": net.net_args, "config": {"backbone": "resnet18"}}, ckpt)
    said = _run(["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"), "--out", str(tmp_path / "runs"),
                 "--checkpoint", str(ckpt), "--protocol", "paper", "--height", str(H), "--width", str(W),
                 "--pictures", "2", "--device", "cpu", "--n-clusters", "5"]).stdout.strip().splitlines()
    out = tmp_path / "runs" / "cityscapes" / "eval" / "run-agglomerative"
    # the plan first (frames, size, networks, passes, device), what was written where last
    assert said[0].startswith("unsupervised eval: plan: 2 frames (val) of cityscapes at 64x128, protocol paper, "
                              "clustering agglomerative; pre-trained: 1 network(s); random init: 1 network(s); "
                              "2 forward passes of 2 on cpu")
    assert said[-1].startswith(f"unsupervised eval: wrote report.html, report.md, report.json and 6 pictures into {out} in ")
    for name in ["report.json", "report.md", "report.html", "config.json", "confusion_paper.png", "iou_paper.png",
                 "predictions_testcity_000000_000000.png", "pca_testcity_000000_000001.png"]:
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert list(report["protocols"]) == ["paper"]
    models = report["protocols"]["paper"]["models"]
    assert list(models) == ["pre-trained", "random init"]
    for m in models.values():
        assert 0.0 <= m["miou"] <= 100.0 and 0.0 <= m["pixel_accuracy"] <= 100.0
        assert len(m["cluster_to_class"]) == 5
        # 5 clusters, 3 present classes: exactly 2 clusters stay unmatched
        assert sum(c is None for c in m["cluster_to_class"]) == 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 + 2 * 2  # confusion, bars, 2 frames x 2 pictures
    md = (out / "report.md").read_text()
    assert "random init" in md and "](confusion_paper.png)" in md
    assert (tmp_path / "runs" / "cityscapes" / "eval" / "unsupervised.current").read_text().strip() == out.name


def test_missing_checkpoint_names_the_file(tmp_path):
    make_city(tmp_path / "city")
    result = CliRunner().invoke(unsupervised, ["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"),
                                               "--out", str(tmp_path / "runs"), "--checkpoint", str(tmp_path / "nope.pt")])
    assert result.exit_code != 0
    assert "nope.pt" in result.output and "checkpoint not found" in result.output
    # --checkpoint auto without a training run says which stage to run
    result = CliRunner().invoke(unsupervised, ["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"),
                                               "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "make train" in result.output


def test_truncated_label_map_names_the_file_and_writes_nothing(tmp_path):
    make_city(tmp_path / "city")
    bad = tmp_path / "city" / "gtFine" / "val" / "testcity" / "testcity_000000_000001_gtFine_labelIds.png"
    bad.write_bytes(bad.read_bytes()[:60])
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"never loaded: the labels are read first")
    result = CliRunner().invoke(unsupervised, ["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"),
                                               "--out", str(tmp_path / "runs"), "--checkpoint", str(ckpt),
                                               "--height", str(H), "--width", str(W)])
    assert result.exit_code != 0
    assert str(bad) in result.output and "truncated" in result.output
    assert not (tmp_path / "runs" / "cityscapes" / "eval").exists()


def _frame(fid: str, split: str, labelled: bool) -> Frame:
    return Frame(id=fid, image=f"{fid}.png", split=split, sequence="s", index=0, width=8, height=4,
                 fx=1, fy=1, cx=0.5, cy=0.5, semantic=f"{fid}_l.png" if labelled else None)


def test_frame_selection():
    frames = [_frame("a", "train", True), _frame("b", "val", True), _frame("c", "val", False),
              _frame("d", "train", False), _frame("e", "train", True)]
    chosen, split = select_frames(frames, "auto", 0)
    assert split == "val" and [f.id for f in chosen] == ["b"]
    chosen, split = select_frames([f for f in frames if f.split == "train"], "auto", 0)
    assert split == "all" and [f.id for f in chosen] == ["a", "e"]
    chosen, _ = select_frames(frames, "all", 0)
    assert [f.id for f in chosen] == ["a", "b", "e"]
    chosen, _ = select_frames(frames, "all", 2)
    assert [f.id for f in chosen] == ["a", "e"]  # evenly spread: first and last


def _checkpoint(path: Path, seed: int, k: int = 16) -> Path:
    from shared.nets.semantic_fpn import DenseSwAVNet

    torch.manual_seed(seed)
    net = DenseSwAVNet("resnet18", num_prototypes=k)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "net_args": net.net_args, "config": {"backbone": "resnet18"}}, path)
    return path


def test_method_scores_mean_and_sample_spread():
    from evaluate.unsupervised import method_scores

    def run(acc, miou, road, sky):
        return {"pixel_accuracy": acc, "miou": miou, "per_class_iou": {"road": road, "sky": sky},
                "cluster_to_class": ["road"], "_iou": np.array([road, np.nan if sky is None else sky]),
                "_mapping": np.array([0]), "_class_conf": np.zeros((2, 2))}

    one = method_scores([run(50.0, 20.0, 30.0, 10.0)], ["a"])
    assert one["pixel_accuracy"] == 50.0 and one["miou_std"] is None and one["n_runs"] == 1
    assert one["cluster_to_class"] == ["road"]  # a single network keeps its own fields at the top
    three = method_scores([run(50.0, 20.0, 30.0, 10.0), run(60.0, 26.0, 40.0, None), run(70.0, 23.0, 20.0, 20.0)],
                          ["a", "b", "c"])
    assert three["n_runs"] == 3
    assert three["pixel_accuracy"] == pytest.approx(60.0) and three["pixel_accuracy_std"] == pytest.approx(10.0)
    assert three["miou"] == pytest.approx(23.0) and three["miou_std"] == pytest.approx(3.0)
    # a class absent in one run is averaged over the runs that have it
    assert three["per_class_iou"] == {"road": pytest.approx(30.0), "sky": pytest.approx(15.0)}
    assert [r["network"] for r in three["runs"]] == ["a", "b", "c"] and three["runs"][1]["miou"] == 26.0
    assert not any(k.startswith("_") for r in three["runs"] for k in r)


def test_joint_report_scores_every_method_on_the_same_frames(tmp_path):
    make_city(tmp_path / "city")
    ours = [_checkpoint(tmp_path / f"ours{s}" / "checkpoint.pt", s) for s in (1, 2)]
    picie = _checkpoint(tmp_path / "picie0" / "checkpoint.pt", 7, k=4)
    common = ["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"), "--out", str(tmp_path / "runs"),
              "--height", str(H), "--width", str(W), "--pictures", "1", "--device", "cpu", "--n-clusters", "3"]
    # `make picie` recorded a run: --picie auto (the default) picks it up
    pointer = tmp_path / "runs" / "cityscapes" / "picie" / "model.current"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(str(picie) + "\n")
    _run(common + ["--checkpoint", ",".join(map(str, ours)), "--random-inits", "2", "--name", "joint"])
    report = json.loads((tmp_path / "runs" / "cityscapes" / "eval" / "joint" / "report.json").read_text())
    assert report["networks"] == {"pre-trained": [str(p) for p in ours], PICIE: [str(picie)],
                                  "random init": ["seed 0", "seed 1"]}
    for pname in ("paper", "picie"):
        models = report["protocols"][pname]["models"]
        assert list(models) == ["pre-trained", PICIE, "random init"]
        assert [models[m]["n_runs"] for m in models] == [2, 1, 2]
        for m in ("pre-trained", "random init"):
            runs = [r["miou"] for r in models[m]["runs"]]
            assert models[m]["miou"] == pytest.approx(np.mean(runs))
            assert models[m]["miou_std"] == pytest.approx(np.std(runs, ddof=1))
            assert runs[0] != runs[1]  # different seeds really are different networks
    md = (tmp_path / "runs" / "cityscapes" / "eval" / "joint" / "report.md").read_text()
    assert "| paper protocol (19 classes) | PiCIE peer | 1 | 3 |" in md and " +- " in md
    # the peer and the 27-class protocol have distinct names: no row reads "picie | picie"
    assert "| picie protocol (27 classes) | PiCIE peer |" in md and "picie | picie" not in md.lower()
    # the same PiCIE checkpoint given by path scores the same; --picie none leaves it out
    _run(common + ["--checkpoint", str(ours[0]), "--picie", str(picie), "--no-baseline", "--name", "bypath"])
    again = json.loads((tmp_path / "runs" / "cityscapes" / "eval" / "bypath" / "report.json").read_text())
    assert again["protocols"]["paper"]["models"][PICIE]["miou"] == report["protocols"]["paper"]["models"][PICIE]["miou"]
    assert again["protocols"]["paper"]["models"]["pre-trained"]["miou"] == \
        report["protocols"]["paper"]["models"]["pre-trained"]["runs"][0]["miou"]
    _run(common + ["--checkpoint", str(ours[0]), "--picie", "none", "--no-baseline", "--name", "alone"])
    alone = json.loads((tmp_path / "runs" / "cityscapes" / "eval" / "alone" / "report.json").read_text())
    assert list(alone["protocols"]["paper"]["models"]) == ["pre-trained"]


def _fake_run(train: Path, name: str, seed: int, key: str | None, finished: bool = True) -> Path:
    run = train / name
    run.mkdir(parents=True)
    record: dict = {"config": {"seed": seed}}
    if key is not None:
        record["seed_free_hash"] = key
    (run / "config.json").write_text(json.dumps(record))
    (run / "checkpoint.pt").write_bytes(b"x")
    if finished:
        (run / "backbone_resnet18.pth").write_bytes(b"x")
    return run / "checkpoint.pt"


def test_auto_checkpoint_takes_the_finished_runs_that_differ_only_in_seed(tmp_path):
    from evaluate.unsupervised import seed_siblings

    train = tmp_path / "train"
    latest = _fake_run(train, "c", 2, "same")
    a = _fake_run(train, "z", 0, "same")
    b = _fake_run(train, "a", 1, "same")
    _fake_run(train, "other", 3, "different-settings")
    _fake_run(train, "running", 4, "same", finished=False)
    _fake_run(train, "old", 5, None)
    assert seed_siblings(latest) == [a, b, latest]  # by seed, whatever the folder names
    # a run from before the record: itself only
    assert seed_siblings(train / "old" / "checkpoint.pt") == [train / "old" / "checkpoint.pt"]


def test_auto_checkpoint_names_the_run_it_scores(tmp_path, capsys):
    # `make eval` follows train/model.current; a rerun of the trainer into a new run folder moves it, and
    # the evaluation must say which run it scores
    from evaluate.unsupervised import UnsupervisedConfig, resolve_checkpoints
    from shared.stage import write_pointer

    cfg = UnsupervisedConfig(dataset="synthetic", demo_size="tiny", out=str(tmp_path))
    train = tmp_path / "synthetic-tiny" / "train"
    ckpt = _fake_run(train, "f00d", 0, "k")
    write_pointer(cfg, "train", "model", ckpt)
    capsys.readouterr()
    assert resolve_checkpoints(cfg) == [ckpt]
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0].startswith(f"unsupervised eval: scoring {train / 'f00d'} (the run `make train`")


def test_rerun_reuses_the_report_until_the_checkpoint_changes(tmp_path, monkeypatch):
    import shared.nets.semantic_fpn as semantic_fpn

    make_city(tmp_path / "city")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"first training run")  # not read: load_pretrained is replaced
    loads = []
    monkeypatch.setattr(semantic_fpn, "load_pretrained",
                        lambda path, map_location="cpu": loads.append(path) or (ColourOracle(), {}))
    args = ["--dataset", "cityscapes", "--data-root", str(tmp_path / "city"), "--out", str(tmp_path / "runs"),
            "--checkpoint", str(ckpt), "--no-baseline", "--height", str(H), "--width", str(W), "--pictures", "1",
            "--device", "cpu"]
    out = tmp_path / "runs" / "cityscapes" / "eval" / "run-agglomerative"
    _run(args)
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {"done.json", "report.json", "report.html", "predictions_testcity_000000_000000.png"} <= set(written)
    assert len(loads) == 1

    again = CliRunner().invoke(unsupervised, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] == \
        f"unsupervised eval: reusing {out} (inputs unchanged; --force to recompute)"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written and len(loads) == 1

    ckpt.write_bytes(b"second, longer training run")  # a new checkpoint at the same path
    changed = CliRunner().invoke(unsupervised, args, catch_exceptions=False)
    assert changed.exit_code == 0 and "reusing" not in changed.output and len(loads) == 2  # evaluated again
    assert "reusing" in CliRunner().invoke(unsupervised, args, catch_exceptions=False).output
    CliRunner().invoke(unsupervised, args + ["--force"], catch_exceptions=False)
    assert len(loads) == 3
