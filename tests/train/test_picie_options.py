"""Every option of `train picie` reaches what it names, through the command line (so the tests survive
changes to the trainer's insides): 1-2 steps on 6 tiny frames, the effect read in the checkpoint (the
optimiser, the epoch's k-means state, the network), the log and the plan line.

Not here: --device, --amp (CUDA only); --checkpoint-every / --checkpoint-minutes (test_picie.py's resume
test); --workers (frame reading only)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures.trainer_runs import TrainerRun, constant_resnet18, train_command
from tests.train.test_picie import _frames

BASE = ["--size", "64x128", "--backbone", "resnet18", "--num-clusters", "4", "--batch-size", "2", "--epochs", "1",
        "--max-steps", "1", "--kmeans-pixels", "16", "--kmeans-init-images", "4", "--kmeans-batch-images", "2",
        "--kmeans-iterations", "5", "--workers", "0", "--device", "cpu", "--no-progress", "--log-every", "1",
        "--seed", "0", "--checkpoint-minutes", "0"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return _frames(tmp_path_factory.mktemp("picie-opts") / "frames")


def run(frames: Path, out: Path, *options: str) -> TrainerRun:
    return train_command(["picie", "--dataset", "folder", "--data-root", str(frames), "--out", str(out), *BASE,
                          *options], out)


@pytest.fixture(scope="module")
def base(frames, tmp_path_factory) -> TrainerRun:
    return run(frames, tmp_path_factory.mktemp("base"))


def test_equal_seeds_give_equal_bytes_and_other_seeds_differ(frames, base, tmp_path):
    again = run(frames, tmp_path / "again")
    assert (again.folder / "backbone_resnet18.pth").read_bytes() == (base.folder / "backbone_resnet18.pth").read_bytes()
    assert again.log[0]["loss"] == base.log[0]["loss"]
    other = run(frames, tmp_path / "other", "--seed", "1")
    assert other.log[0]["loss"] != base.log[0]["loss"]


def test_shapes_optimiser_and_schedule_options(frames, tmp_path):
    """K, the working size and the view scale show in the k-means state's shapes; lr in Adam's state;
    batch size in the images per step; epochs and max-steps in the steps run; --run in the folder."""
    r = run(frames, tmp_path, "--num-clusters", "3", "--size", "96x128", "--view-scale", "0.75", "--lr", "0.002",
            "--batch-size", "3", "--max-steps", "0", "--epochs", "1", "--run", "named", "--log-every", "2")
    state = r.checkpoint["epoch_state"]
    assert state["centroids"].shape[1] == 3 and r.checkpoint["net_args"]["num_prototypes"] == 3
    # views 0.75 x 96x128 (neither option alone would give them: 48x96, 48x64), stride-4 features
    assert tuple(state["labels"].shape[2:]) == (64 // 4, 96 // 4)  # 72 rounded down to a multiple of 16
    assert "at 96x128, views 64x96" in r.output and "6 images/step" in r.output
    assert r.checkpoint["optimizer"]["param_groups"][0]["lr"] == 0.002 and r.log[-1]["lr"] == 0.002
    assert r.checkpoint["step"] == 2 and [row["step"] for row in r.log] == [2]  # 6 frames, 3 a step, one epoch
    assert r.log[-1]["images_seen"] == 12 and r.folder.name == "named"


def test_stop_after_checkpoints_mid_schedule(frames, tmp_path):
    r = run(frames, tmp_path, "--max-steps", "3", "--stop-after", "1")
    assert r.checkpoint["step"] == 1 and [row["step"] for row in r.log] == [1]


def test_cluster_weighting_none_weighs_every_cluster_alike(frames, base, tmp_path):
    w = run(frames, tmp_path, "--cluster-weighting", "none").checkpoint["epoch_state"]["weights"]
    shares = base.checkpoint["epoch_state"]["weights"]
    assert not torch.allclose(shares, shares[:, :1].expand_as(shares))  # share: by the clusters' sizes
    assert w is None or torch.allclose(w, w[:, :1].expand_as(w))


def test_init_weights_the_backbone(frames, tmp_path):
    """A step at a learning rate of 1e-12 leaves the backbone where --init-weights put it."""
    constant_resnet18(tmp_path / "init.pth")
    r = run(frames, tmp_path / "out", "--init-weights", str(tmp_path / "init.pth"), "--lr", "1e-12")
    exported = torch.load(r.folder / "backbone_resnet18.pth", weights_only=True)
    torch.testing.assert_close(exported["conv1.weight"], torch.full_like(exported["conv1.weight"], 0.01),
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize("option,value,changes", [
    ("--kmeans-iterations", "1", "kmeans"), ("--kmeans-pixels", "4", "kmeans"), ("--kmeans-init-images", "2", "kmeans"),
("--crop-scale", "0.2,0.3", "views"), ("--flip", "1.0", "views")])
def test_clustering_and_view_options_change_what_they_name(frames, base, tmp_path, option, value, changes):
    """The k-means options change the epoch's clustering (its loss or centroids) before any step; the view
    options change the views, so the first loss, not the clustering of the full frames' first view."""
    r = run(frames, tmp_path, option, value)
    before, after = base.checkpoint["epoch_state"], r.checkpoint["epoch_state"]
    if changes == "kmeans":
        assert not torch.equal(before["centroids"], after["centroids"])
    else:
        assert r.log[0]["loss"] != pytest.approx(base.log[0]["loss"], rel=1e-6)


def test_kmeans_batch_images_sets_the_mini_batch_updates(frames, tmp_path):
    """After 2 images seed the k-means, the other 4 update it in two mini-batches of 2 or in one of 4
    (the loader gives 2 frames at a time, so the base's 4 seed images leave too few to tell)."""
    two = run(frames, tmp_path / "two", "--kmeans-init-images", "2", "--kmeans-batch-images", "2")
    four = run(frames, tmp_path / "four", "--kmeans-init-images", "2", "--kmeans-batch-images", "4")
    assert not torch.equal(two.checkpoint["epoch_state"]["centroids"], four.checkpoint["epoch_state"]["centroids"])


def test_splits_choose_the_frames(frames, tmp_path):
    """The folder dataset puts every frame in `train`: asking for `val` leaves none, named in one line."""
    from click.testing import CliRunner

    from train.__main__ import main

    r = CliRunner().invoke(main, ["picie", "--dataset", "folder", "--data-root", str(frames), "--out", str(tmp_path),
                                  *BASE, "--splits", "val"])
    assert r.exit_code == 1 and "no frames of split val to train on" in r.output
    assert "6 frames (train)" in run(frames, tmp_path / "train", "--splits", "train").output
