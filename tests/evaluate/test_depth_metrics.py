"""Depth metrics: known answers on hand-made maps, median scaling, cap, Garg crop, file errors."""
from __future__ import annotations

import numpy as np
import pytest

from evaluate.depth_metrics import (GARG_CROP, depth_errors, eval_mask, evaluate_depth, mean_depth_map,
                                    read_gt_depth, resize_depth)
from shared.frames import DataError


def test_depth_errors_known_answer():
    gt = np.array([2.0, 4.0, 10.0, 1.0])
    pred = np.array([2.0, 5.0, 8.0, 1.5])
    e = depth_errors(gt, pred)
    assert e["abs_rel"] == pytest.approx((0 + 0.25 + 0.2 + 0.5) / 4)
    assert e["sq_rel"] == pytest.approx((0 + 1 / 4 + 4 / 10 + 0.25) / 4)
    assert e["rmse"] == pytest.approx(np.sqrt((0 + 1 + 4 + 0.25) / 4))
    assert e["rmse_log"] == pytest.approx(np.sqrt(np.mean(np.log(gt / pred) ** 2)))
    # ratios 1, 1.25, 1.25, 1.5: "< 1.25" is strict
    assert (e["a1"], e["a2"], e["a3"]) == (0.25, 1.0, 1.0)


def test_perfect_and_scaled_predictions():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 60, (12, 20)).astype(np.float32)
    e, ratio = evaluate_depth(gt, gt * 0.01)  # right up to scale: median scaling recovers it
    assert ratio == pytest.approx(100.0, rel=1e-5)
    assert e["abs_rel"] < 1e-6 and e["a1"] == 1.0
    e, _ = evaluate_depth(gt, gt * 0.01, median_scaling=False)
    assert e["abs_rel"] > 0.9


def test_cap_and_missing_measurements():
    gt = np.array([[0.0, 5.0], [90.0, 10.0]], np.float32)  # 0 = no LiDAR return, 90 m beyond the cap
    pred = np.array([[7.0, 5.0], [1.0, 20.0]], np.float32)
    e, ratio = evaluate_depth(gt, pred, max_depth=80.0)
    # only the 5 m and 10 m pixels count; median(gt)=7.5, median(pred)=12.5
    assert ratio == pytest.approx(0.6)
    assert e["abs_rel"] == pytest.approx((abs(5 - 3) / 5 + abs(10 - 12) / 10) / 2)
    assert evaluate_depth(np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)) is None


def test_garg_crop_and_resize():
    gt = np.ones((375, 1242), np.float32)
    m = eval_mask(gt, 1e-3, 80, garg_crop=True)
    rows, cols = np.nonzero(m)
    assert rows.min() == int(GARG_CROP[0] * 375) and rows.max() == int(GARG_CROP[1] * 375) - 1
    assert cols.min() == int(GARG_CROP[2] * 1242) and cols.max() == int(GARG_CROP[3] * 1242) - 1
    # resizing a constant map keeps it, and works through inverse depth
    np.testing.assert_allclose(resize_depth(np.full((4, 8), 3.0, np.float32), (8, 16)), 3.0, rtol=1e-6)


def test_mean_depth_map_and_file_errors(tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npz"
    np.save(a, np.array([[2.0, 0.0], [4.0, 0.0]], np.float32))
    np.savez(b, velodyne_depth=np.array([[4.0, 0.0], [8.0, 0.0]], np.float32))
    np.testing.assert_allclose(mean_depth_map([str(a), str(b)], (2, 2)), [[3.0, 4.5], [6.0, 4.5]])
    with pytest.raises(DataError, match="missing.npy"):
        read_gt_depth(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.npy"):
        read_gt_depth(bad)


def test_rerun_reuses_the_evaluation_until_the_checkpoint_changes(tiny_city, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import shared.nets.depth_predictor as depth_predictor
    from evaluate.__main__ import main

    class Constant:
        """A stand-in network: a flat depth map (the reuse is the test, not the numbers)."""

        def __init__(self, ckpt, device="cpu"):
            made.append(ckpt)

        def predict(self, rgb):
            return np.full(rgb.shape[:2], 10.0, np.float32)

    made: list = []
    monkeypatch.setattr(depth_predictor, "DepthPredictor", Constant)
    ckpt = tmp_path / "depth_net.pt"
    ckpt.write_bytes(b"a depth network")
    args = ["depth-eval", "--dataset", "synthetic", "--data-root", str(tiny_city), "--out", str(tmp_path / "runs"),
            "--demo-size", "tiny", "--checkpoint", str(ckpt)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    (report,) = [p for p in (tmp_path / "runs" / "synthetic-tiny" / "eval").glob("depth-*.json")
                 if not p.name.endswith((".config.json", ".done.json"))]
    files = sorted(report.parent.iterdir())
    assert [p.name for p in files] == [report.name.replace(".json", s) for s in (".config.json", ".done.json", ".json")]
    written = [p.stat().st_mtime_ns for p in files]

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] == f"depth eval: reusing {report} (inputs unchanged; --force to recompute)"
    assert [p.stat().st_mtime_ns for p in files] == written and len(made) == 1

    ckpt.write_bytes(b"the depth network, trained further")  # a new checkpoint at the same path
    changed = CliRunner().invoke(main, args)
    assert changed.exit_code == 0 and "reusing" not in changed.output and "abs_rel" in changed.output
    assert len(made) == 2
    assert "reusing" in CliRunner().invoke(main, args).output
    assert "reusing" not in CliRunner().invoke(main, args + ["--force"]).output and len(made) == 3
