"""Every option of `evaluate unsupervised` reaches what it names, through the command line: a ResNet-18
of fixed random weights on two tiny Cityscapes-layout frames, the effect read in report.json (its
confusion matrices, networks, frames, size), the files written and the plan line.

Not here: --device (CUDA); --checkpoint auto / --picie (test_unsupervised.py's joint-report and
auto-checkpoint tests)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.evaluate.test_unsupervised import make_city


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    from shared.nets.semantic_fpn import DenseSwAVNet

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unsup-opts")
    make_city(root / "city")
    torch.manual_seed(3)
    net = DenseSwAVNet("resnet18", num_prototypes=16)
    (root / "run").mkdir()
    torch.save({"model": net.state_dict(), "net_args": net.net_args, "config": {"backbone": "resnet18"}},
               root / "run" / "model.pt")
    return root / "city", root / "run" / "model.pt"


def run(inputs: tuple[Path, Path], out: Path, *options: str) -> tuple[dict, Path, str]:
    from evaluate.__main__ import main

    city, ckpt = inputs
    args = ["unsupervised", "--dataset", "cityscapes", "--data-root", str(city), "--out", str(out), "--checkpoint",
            str(ckpt), "--protocol", "paper", "--height", "64", "--width", "128", "--pictures", "0", "--device", "cpu",
            "--n-clusters", "5", "--random-inits", "1", *options]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    folder = (out / "cityscapes" / "eval" / (out / "cityscapes" / "eval" / "unsupervised.current").read_text().strip())
    return json.loads((folder / "report.json").read_text()), folder, r.output


@pytest.fixture(scope="module")
def base(inputs, tmp_path_factory):
    return run(inputs, tmp_path_factory.mktemp("base"))


def test_equal_seeds_give_equal_reports_and_the_seed_moves_the_random_init(inputs, base, tmp_path):
    again, _, _ = run(inputs, tmp_path / "again")
    assert again["protocols"] == base[0]["protocols"]
    other, _, _ = run(inputs, tmp_path / "other", "--seed", "1", "--random-inits", "2", "--split", "all")
    assert other["networks"]["random init"] == ["seed 1", "seed 2"] and other["split"] == "all"
    models, before = other["protocols"]["paper"]["models"], base[0]["protocols"]["paper"]["models"]
    assert models["random init"]["n_runs"] == 2
    assert models["random init"]["runs"][0]["miou"] != before["random init"]["runs"][0]["miou"]
    assert models["pre-trained"]["confusion_clusters"] == before["pre-trained"]["confusion_clusters"]


def test_protocol_clusters_size_frames_baseline_pictures_batch_name_and_clustering(inputs, tmp_path):
    report, folder, said = run(inputs, tmp_path, "--protocol", "both", "--n-clusters", "4", "--height", "32",
                               "--width", "64", "--max-frames", "1", "--no-baseline", "--pictures", "1",
                               "--batch-size", "1", "--name", "named", "--clustering", "kmeans",
                               "--kmeans-samples", "500")
    assert folder.name == "named" and report["clustering"] == "kmeans"
    assert list(report["protocols"]) == ["paper", "picie"]
    assert [report["protocols"][p]["matching"] for p in ("paper", "picie")] == ["iou", "pixels"]
    assert report["size"] == [32, 64] and len(report["frames"]) == 1
    for p in ("paper", "picie"):
        models = report["protocols"][p]["models"]
        assert list(models) == ["pre-trained"]  # --no-baseline
        conf = np.array(models["pre-trained"]["confusion_clusters"])
        assert conf.shape[1] == 4 and 0 < conf.sum() <= 32 * 64  # one frame at 32x64, void pixels left out
    assert len(list(folder.glob("predictions_*.png"))) == 1 and len(list(folder.glob("pca_*.png"))) == 1
    assert " forward passes of 1 on cpu" in said  # --batch-size 1 (default 2)


def test_kmeans_samples_reach_the_clustering(inputs, tmp_path):
    few, _, _ = run(inputs, tmp_path / "few", "--clustering", "kmeans", "--kmeans-samples", "20", "--no-baseline")
    many, _, _ = run(inputs, tmp_path / "many", "--clustering", "kmeans", "--kmeans-samples", "4000", "--no-baseline")
    conf = [r["protocols"]["paper"]["models"]["pre-trained"]["confusion_clusters"] for r in (few, many)]
    assert conf[0] != conf[1]


def test_pictures_zero_writes_the_report_without_frame_pictures(base):
    """--pictures 0 used to stop the run (a PCA of no frames) after every network had been scored."""
    _, folder, said = base
    assert not list(folder.glob("predictions_*.png")) and (folder / "report.html").is_file()


def test_a_rerun_reuses_the_report_and_force_evaluates_again(inputs, tmp_path):
    run(inputs, tmp_path)
    _, _, said = run(inputs, tmp_path)
    assert "reusing" in said
    _, _, said = run(inputs, tmp_path, "--force")
    assert "reusing" not in said and "wrote report.html" in said
