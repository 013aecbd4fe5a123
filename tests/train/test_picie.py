"""The PiCIE trainer (train/picie.py) on a tiny folder of frames, CPU, ResNet-18."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from shared.stage import from_portable
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from shared.nets.semantic_fpn import DenseSwAVNet, load_pretrained
from train.picie import (EpochViews, PicieConfig, Runtime, draw_epoch_views, images_seen, prepare_epoch, train,
                         train_step, training_frames, view_features, view_size)

H, W = 64, 128


def _frames(root: Path, n: int = 6) -> Path:
    """n frames of a street-like scene: sky, buildings, road bands at shifting heights, plus noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        img = np.zeros((H, W, 3), np.float64)
        a, b = 16 + rng.integers(-4, 5), 40 + rng.integers(-4, 5)
        img[:a] = (90, 140, 230)
        img[a:b] = (150, 110, 80)
        img[b:] = (70, 70, 70)
        img[b - 10:b, rng.integers(0, W - 30):][:, :24] = (200, 30, 30)  # a car
        img += rng.normal(0, 8, img.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory) -> Path:
    return _frames(tmp_path_factory.mktemp("folder") / "frames")


def _cfg(root: Path, out: Path, **kw) -> PicieConfig:
    base = dict(dataset="folder", data_root=str(root), out=str(out), size=f"{H}x{W}", backbone="resnet18",
                num_clusters=4, batch_size=2, epochs=2, kmeans_pixels=16, kmeans_init_images=4, kmeans_batch_images=2,
                kmeans_iterations=5, workers=0, device="cpu", progress=False, log_every=1, checkpoint_every=1)
    base.update(kw)
    return PicieConfig(**base)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_view_size_and_images_seen():
    assert view_size((384, 768), 0.5) == (192, 384)
    assert view_size((100, 200), 0.5) == (48, 96)  # multiples of 16
    assert view_size((40, 80), 0.5) == (32, 32)  # never below 32
    # 5 frames, batches of 2 -> 3 steps per epoch of 2 + 2 + 1 frames, two views each
    assert [images_seen(s, 3, 5, 2) for s in range(7)] == [0, 4, 8, 10, 14, 18, 20]


def test_epoch_views_depend_on_seed_and_epoch_only():
    a, b = draw_epoch_views(50, 3, 1, (0.5, 1.0), 0.5), draw_epoch_views(50, 3, 1, (0.5, 1.0), 0.5)
    for f in dataclasses.fields(EpochViews):
        assert np.array_equal(np.asarray(getattr(a, f.name)), np.asarray(getattr(b, f.name))), f.name
    c = draw_epoch_views(50, 3, 2, (0.5, 1.0), 0.5)
    assert not torch.equal(a.boxes, c.boxes)
    side = a.boxes[:, 2] - a.boxes[:, 0]
    assert torch.allclose(side, a.boxes[:, 3] - a.boxes[:, 1])  # square in fractions: the aspect ratio is kept
    assert side.min() >= 0.5 and side.max() <= 1.0 and a.boxes.min() >= 0 and a.boxes.max() <= 1
    assert sorted(a.order.tolist()) == list(range(50))


class _CoordinateNet(nn.Module):
    """A stride-4 'network' whose features are the mean (R, G) of each 4x4 cell plus a constant."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.avg_pool2d(x[:, :2], 4), torch.full_like(F.avg_pool2d(x[:, :1], 4), 3.0)], dim=1)


def test_the_two_views_features_land_on_the_same_frame_pixels(tmp_path):
    """The trainer's own path (view 1: transformed image -> net; view 2: resized image -> net ->
    transformed map): on frames whose red and green encode each pixel's x and y, both views'
    features at every cell name the same frame pixel."""
    ys, xs = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W, indexing="ij")
    frame = torch.from_numpy(np.stack([xs * 255, ys * 255, np.zeros_like(xs)]).round().astype(np.uint8))
    images = frame.unsqueeze(0).repeat(4, 1, 1, 1)
    views = draw_epoch_views(4, 0, 0, (0.5, 0.9), 0.5)
    views.photometric[:] = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])  # no colour change: colours are coordinates
    views.gray[:] = False
    views.flips[:] = torch.tensor([True, False, True, False])
    rt = Runtime(_cfg(tmp_path, tmp_path), [], (H, W), torch.device("cpu"))
    pos = torch.arange(4)
    f1, f2 = view_features(_CoordinateNet(), images, views, pos, rt)  # type: ignore[arg-type]
    assert f1.shape == f2.shape == (4, 3, H // 2 // 4, W // 2 // 4)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # view 2's resize blurs the frame's edge
    assert (f1 - f2)[inner].abs().max() < 0.02
    # negative control: the other flip puts view 2's features on mirrored pixels
    views.flips[:] = ~views.flips
    _, f2_wrong = view_features(_CoordinateNet(), images, views, pos, rt)  # type: ignore[arg-type]
    views.flips[:] = ~views.flips
    assert (f1 - f2_wrong)[inner].abs().max() > 0.1


def test_a_few_cpu_steps_lower_the_loss(frames_root, tmp_path):
    cfg = _cfg(frames_root, tmp_path)
    frames = training_frames(cfg)
    rt = Runtime(cfg, frames, (H, W), torch.device("cpu"))
    torch.manual_seed(0)
    model = DenseSwAVNet("resnet18", num_prototypes=4).train()
    views = draw_epoch_views(len(frames), 0, 0, cfg.crop_scale, cfg.flip)
    state = prepare_epoch(model, views, 0, cfg, rt, progress=False)
    assert state.labels.shape == (len(frames), 2, H // 2 // 4, W // 2 // 4)
    assert state.centroids.shape == (2, 4, 128) and state.weights is not None
    torch.testing.assert_close(state.weights.sum(1), torch.ones(2))
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("prototypes")], lr=1e-3)
    pos, images = next(rt.batches(views.order[:2]))
    losses = [float(train_step(model, opt, images, pos, views, state, rt).total.detach()) for _ in range(6)]
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(np.isfinite(losses))


def test_run_writes_a_checkpoint_that_evaluation_loads(frames_root, tmp_path, capsys):
    cfg = _cfg(frames_root, tmp_path / "runs", run="r")
    run_dir = train(cfg)
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0].startswith(f"picie: starting, 6 steps, new run {tmp_path / 'runs' / 'folder' / 'picie' / 'r'}; "
                              "6 frames (train) at 64x128") and "device cpu" in said[0]
    assert said[-1].startswith("picie: finished in ") and said[-1].endswith(
        f"wrote checkpoint.pt, log.jsonl, config.json, backbone_resnet18.pth into {run_dir}")
    assert run_dir == tmp_path / "runs" / "folder" / "picie" / "r"
    log = _log(run_dir)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # 6 frames, 2 per step, 2 epochs
    assert [r["epoch"] for r in log] == [0, 0, 0, 1, 1, 1]
    assert log[-1]["images_seen"] == 2 * 2 * 6
    assert all(r["clusters_used"][0] >= 1 for r in log)
    pointer = tmp_path / "runs" / "folder" / "picie" / "model.current"
    assert from_portable(pointer.read_text().strip(), pointer.parent) == (run_dir / "checkpoint.pt").resolve()
    # evaluation rebuilds the network; its prototypes are PiCIE's final centroids, unit length
    model, config = load_pretrained(run_dir / "checkpoint.pt")
    assert config["num_clusters"] == 4 and model.net_args["num_prototypes"] == 4
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(4))
    assert len({tuple(r) for r in model.prototypes.weight.round(decimals=4).tolist()}) == 4
    import torchvision

    sd = torch.load(run_dir / "backbone_resnet18.pth", weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(sd, strict=False)
    assert unexpected == [] and set(missing) == {"fc.weight", "fc.bias"}
    # a rerun of a finished run trains nothing more and writes nothing: the evaluation reuses its report
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    train(cfg)
    assert len(_log(run_dir)) == 6
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("picie: nothing to do in ")


def test_resume_reproduces_the_losses_of_an_uninterrupted_run(frames_root, tmp_path):
    whole = train(_cfg(frames_root, tmp_path / "runs", run="whole"))
    parts = _cfg(frames_root, tmp_path / "runs", run="parts", stop_after=2)
    train(parts)  # steps 1-2: stops inside epoch 0
    assert [r["step"] for r in _log(tmp_path / "runs" / "folder" / "picie" / "parts")] == [1, 2]
    train(parts)  # steps 3-4: ends epoch 0, re-clusters for epoch 1
    train(dataclasses.replace(parts, stop_after=0))
    a, b = _log(whole), _log(tmp_path / "runs" / "folder" / "picie" / "parts")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_within", "loss_across", "kmeans_loss", "clusters_used"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    wa = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "runs" / "folder" / "picie" / "parts" / "checkpoint.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_changed_settings_refuse_the_old_checkpoint(frames_root, tmp_path):
    from shared.frames import DataError

    train(_cfg(frames_root, tmp_path / "runs", run="x", max_steps=1))
    with pytest.raises(DataError, match="belongs to config"):
        train(_cfg(frames_root, tmp_path / "runs", run="x", max_steps=1, lr=0.5))
