"""Every option of `train contrastive` reaches what it names: each test runs the command (through its
CLI, so it survives changes to the trainer's insides) for 1-4 steps on a toy shard set and reads the
effect where the option acts: the optimiser's state in the checkpoint, the logged learning rates,
losses and sample counts, the network's shapes and weights, the plan line, the files written.
An option parsed but ignored, or wired to another knob, fails its test.

Not here: --device, --amp, --compile (CUDA only); --photometric (device and worker paths give the same
result: test_contrastive.py); --checkpoint-minutes (test_contrastive.py); --workers, --shuffle-buffer's
worker split (test_shard_loader.py); --tensorboard (test_contrastive.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures.toy_shards import build_shard_set
from tests.fixtures.trainer_runs import TrainerRun, constant_resnet18, train_command

BASE = ["--backbone", "resnet18", "--num-prototypes", "30", "--crop-height", "32", "--crop-width", "64", "--epochs", "1",
        "--max-steps", "1", "--warmup-epochs", "0", "--workers", "0", "--log-every", "1", "--no-progress",
        "--device", "cpu", "--seed", "3", "--checkpoint-minutes", "0"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return build_shard_set(tmp_path_factory.mktemp("opts") / "shards", n_groups=8, n_shards=2)


def run(shards: Path, out: Path, *options: str) -> TrainerRun:
    return train_command(["contrastive", "--shards", str(shards), "--out", str(out), *BASE, *options], out)


@pytest.fixture(scope="module")
def base(shards, tmp_path_factory) -> TrainerRun:
    return run(shards, tmp_path_factory.mktemp("base"))


def test_equal_seeds_give_equal_bytes_and_other_seeds_differ(shards, base, tmp_path):
    again = run(shards, tmp_path / "again")
    assert (again.folder / "backbone_resnet18.pth").read_bytes() == (base.folder / "backbone_resnet18.pth").read_bytes()
    assert [r["loss"] for r in again.log] == [r["loss"] for r in base.log]
    other = run(shards, tmp_path / "other", "--seed", "4")
    assert other.log[0]["loss"] != base.log[0]["loss"]
    assert not torch.equal(other.checkpoint["model"]["prototypes.weight"], base.checkpoint["model"]["prototypes.weight"])


def test_lam_weighs_the_pixel_loss_and_one_minus_lam_the_region_loss(shards, base, tmp_path):
    for r in base.log:
        assert r["loss"] == pytest.approx(0.5 * r["loss_pixel"] + 0.5 * r["loss_region"], rel=1e-5)
    for r in run(shards, tmp_path, "--lam", "0.2").log:
        assert r["loss"] == pytest.approx(0.2 * r["loss_pixel"] + 0.8 * r["loss_region"], rel=1e-5)


def test_optimiser_schedule_and_network_options_reach_the_optimiser_and_the_network(shards, tmp_path):
    """8 groups of 1 per step: an epoch is 8 steps; 4 steps with a quarter-epoch warm-up = 2 warm-up
    steps (lr/3, 2 lr/3: up to, not reaching, lr), then the cosine from lr to final-lr over the last 2."""
    r = run(shards, tmp_path, "--max-steps", "4", "--lr", "0.05", "--final-lr", "0.02", "--warmup-epochs", "0.25",
            "--momentum", "0.5", "--weight-decay", "0.003", "--num-prototypes", "20", "--run", "named",
            "--crop-height", "64", "--crop-width", "32")
    assert [row["lr"] for row in r.log] == pytest.approx([0.05 / 3, 0.1 / 3, 0.05, 0.02])
    group = r.checkpoint["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"]) == (0.5, 0.003)
    assert r.checkpoint["model"]["prototypes.weight"].shape[0] == 20 and r.checkpoint["net_args"]["arch"] == "resnet18"
    assert r.folder.name == "named" and r.checkpoint["step"] == 4
    assert "K=20, crop 64x32" in r.output


def test_epochs_groups_per_step_and_log_every(shards, tmp_path):
    r = run(shards, tmp_path, "--max-steps", "0", "--epochs", "1", "--groups-per-step", "4", "--log-every", "2")
    assert r.checkpoint["step"] == 2  # one epoch of 8 groups, 4 a step
    assert "16 images/step" in r.output  # 4 groups of 4 images
    assert [row["step"] for row in r.log] == [2]


def test_stop_after_checkpoints_mid_schedule(shards, tmp_path):
    r = run(shards, tmp_path, "--max-steps", "3", "--stop-after", "1")
    assert r.checkpoint["step"] == 1 and [row["step"] for row in r.log] == [1]


def test_lr_reaches_the_optimiser_and_init_weights_the_backbone(shards, tmp_path):
    """lr 0: the step changes no weight, so the exported backbone is the init-weights file it started from."""
    init = constant_resnet18(tmp_path / "init.pth")
    r = run(shards, tmp_path / "out", "--init-weights", str(tmp_path / "init.pth"), "--lr", "0", "--final-lr", "0")
    exported = torch.load(r.folder / "backbone_resnet18.pth", weights_only=True)
    assert torch.equal(exported["conv1.weight"], torch.full_like(exported["conv1.weight"], 0.01))
    assert torch.equal(exported["layer4.1.conv2.weight"], init["layer4.1.conv2.weight"])


@pytest.mark.parametrize("option,value,same_samples", [
    ("--temperature", "0.3", True), ("--sinkhorn-epsilon", "0.2", True), ("--sinkhorn-iterations", "1", True),
    ("--crop-scale", "0.2,0.3", False), ("--shuffle-buffer", "1", False), ("--features-per-step", "100000", False),
    ("--pixel-cell", "8", False)])
def test_loss_and_sampling_options_change_the_first_step(shards, base, tmp_path, option, value, same_samples):
    """The loss options change the first loss and not what was sampled; the sampling and crop options
    change what was sampled (and so the loss)."""
    r = run(shards, tmp_path, option, value)
    counts = ("pixel_samples", "pixel_groups", "region_samples", "region_groups")
    assert r.log[0]["loss"] != pytest.approx(base.log[0]["loss"], rel=1e-6)
    assert ({k: r.log[0][k] for k in counts} == {k: base.log[0][k] for k in counts}) == same_samples
    if option == "--features-per-step":
        assert r.log[0]["pixel_samples"] < base.log[0]["pixel_samples"]
