"""DepthPredictor (what the regions stage calls), the `preprocess depth` command, and
`evaluate depth` end to end on a tiny checkpoint; KITTI LiDAR samples when ../shared/data exists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shared.frames import DataError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step checkpoint on the tiny synthetic city (weights barely trained: tests plumbing)."""
    from preprocess.synth import generate_preset
    from shared.datasets.synthetic import read_synthetic
    from train.depth import DepthTrainConfig, train

    tmp = tmp_path_factory.mktemp("depthinfer")
    city = tmp / "city"
    generate_preset(city, "tiny")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = DepthTrainConfig(out=str(tmp / "runs"), data_root=str(city), demo_size="tiny", max_steps=2,
                           width=128, batch_size=2, image_every=0)
    ckpt = train(cfg, read_synthetic(city), echo=lambda s: None)
    torch.set_num_threads(n)
    return ckpt, city, tmp / "runs"


def test_predictor_output_size_units_and_batch_consistency(trained):
    from shared.nets.depth_predictor import DepthPredictor

    ckpt, _, _ = trained
    p = DepthPredictor(ckpt)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    d = p.predict(rgb)
    assert d.shape == (50, 90) and d.dtype == np.float32
    assert np.all(np.isfinite(d)) and d.min() >= 0.1 - 1e-5 and d.max() <= 100.0 + 1e-3
    both = p.predict_batch(np.stack([rgb, rgb[::-1].copy()]))
    np.testing.assert_allclose(both[0], d, rtol=1e-5, atol=1e-5)
    assert "relative depth" in p.units
    with pytest.raises(ValueError):
        p.predict(rgb.astype(np.float32))


def test_predictor_matches_training_network(trained):
    """Same weights, same input at the network size -> the trainer's own disparity, converted."""
    from shared.nets.depth_predictor import DepthPredictor
    from shared.nets.depth_net import DepthModel, disp_to_depth
    from shared.nets.depth_predictor import load_depth_checkpoint

    ckpt, _, _ = trained
    state = load_depth_checkpoint(ckpt)
    model = DepthModel()
    model.load_state_dict(state["model"])
    model.eval()
    H, W = state["config"]["height"], state["config"]["width"]
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    with torch.no_grad():
        disp = model.disparities(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
    expected = disp_to_depth(disp, 0.1, 100.0)[0, 0].numpy()
    np.testing.assert_allclose(DepthPredictor(ckpt).predict(rgb), expected, rtol=1e-4)
    # The slim inference file the model pointer names predicts exactly what the full checkpoint does.
    slim = ckpt.with_name("depth_net.pt")
    assert slim.is_file() and slim.stat().st_size < ckpt.stat().st_size
    np.testing.assert_array_equal(DepthPredictor(slim).predict(rgb), DepthPredictor(ckpt).predict(rgb))


def test_predictor_bad_checkpoint_names_file(tmp_path):
    from shared.nets.depth_predictor import DepthPredictor

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="broken.pt"):
        DepthPredictor(bad)
    with pytest.raises(DataError, match="nothing.pt"):
        DepthPredictor(tmp_path / "nothing.pt")


def test_preprocess_depth_command_writes_and_resumes(trained):
    from preprocess.__main__ import main

    ckpt, city, runs = trained
    args = ["depth", "--dataset", "synthetic", "--data-root", str(city), "--out", str(runs), "--demo-size", "tiny",
            "--workers", "1", "--height", "48", "--width", "80"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    outs = sorted((runs / "synthetic-tiny" / "depth").glob("pred-*/*.npy"))
    assert len(outs) == 12  # every frame of the tiny city (2 sequences x 6)
    d = np.load(outs[0])
    assert d.shape == (48, 80) and d.dtype == np.float32 and np.isfinite(d).all()
    outs[0].unlink()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "11 frames already done" in res.output and "wrote 1 depth maps" in res.output


def test_evaluate_depth_command_on_synthetic_city(trained):
    from evaluate.__main__ import main

    _, city, runs = trained
    res = CliRunner().invoke(main, ["depth", "--dataset", "synthetic", "--data-root", str(city), "--out", str(runs),
                                    "--demo-size", "tiny"])
    assert res.exit_code == 0, res.output
    assert "split val" in res.output and "baseline" in res.output and "abs_rel" in res.output
    assert list((runs / "synthetic-tiny" / "eval").glob("depth-*.json"))


@pytest.mark.skipif(not (DATA / "kitti").is_dir(), reason=f"real KITTI samples not found at {DATA / 'kitti'}")
def test_evaluate_on_kitti_lidar_samples(trained, tmp_path):
    """The tiny synthetic checkpoint is not a KITTI model: this checks the LiDAR path end to end
    (Garg crop on, sparse ground truth, baseline from the sparse maps), not accuracy."""
    from evaluate.depth_metrics import DepthEvalConfig, run_depth_eval
    from shared.datasets import build_index

    ckpt, _, _ = trained
    frames = build_index("kitti", DATA / "kitti")
    cfg = DepthEvalConfig(dataset="kitti", data_root=str(DATA / "kitti"), out=str(tmp_path))
    rep = run_depth_eval(cfg, frames, ckpt)
    assert rep["garg_crop"] and rep["frames"] == 7
    for name in ("model", "baseline"):
        assert 0 < rep[name]["abs_rel"] < 5 and 0 <= rep[name]["a1"] <= 1


def test_the_batched_gpu_path_skips_an_unreadable_frame_too(tmp_path, monkeypatch):
    """--device cuda batches frames of one size; a frame that does not decode is left out of its
    batch and listed, the others are written (the model is a stand-in here: the path is the test)."""
    import shared.nets.depth_predictor as dp
    from preprocess.depth_inference import DepthInferConfig, infer_dataset
    from shared.frames import Frame
    from shared.imageio import write_png

    class Fake:
        def __init__(self, ckpt, device="cpu"):
            assert device == "cuda"

        def predict_batch(self, rgbs):
            return rgbs[..., 0].astype(np.float32) + 1.0

    monkeypatch.setattr(dp, "DepthPredictor", Fake)
    frames = []
    for i in range(5):
        p = tmp_path / "img" / f"{i:03d}.png"
        write_png(p, np.full((16, 32, 3), 10 * i, np.uint8))
        frames.append(Frame(f"s_{i:03d}", str(p), "train", "s", i, 32, 16, 0.5, 1.0, 0.5, 0.5))
    bad = Path(frames[2].image)
    bad.write_bytes(bad.read_bytes()[:60])
    cfg = DepthInferConfig(device="cuda", batch_size=2, out=str(tmp_path))
    n, skipped = infer_dataset(cfg, frames, tmp_path / "m.pt", tmp_path / "pred")
    assert n == 4 and [Path(s["path"]).name for s in skipped] == ["002.png"]
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.npy")) == ["s_000.npy", "s_001.npy", "s_003.npy",
                                                                          "s_004.npy"]
    assert np.load(tmp_path / "pred" / "s_003.npy")[0, 0] == 31.0
