"""The proposal benchmark: curve reading at matched counts (known answers) and a tiny run end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from evaluate.proposal_sweep import (SweepConfig, below_line, interpolate_at, matched_gain, matched_rows, paired_spread,
                                    run_sweep)


def test_interpolate_at_is_linear_in_log_count_and_never_extrapolates():
    pts = [(10.0, 20.0), (1000.0, 40.0)]
    assert interpolate_at(pts, 100.0) == pytest.approx(30.0)  # half way in log count
    assert interpolate_at(pts, 10.0) == pytest.approx(20.0) and interpolate_at(pts, 1000.0) == pytest.approx(40.0)
    assert interpolate_at(pts, 9.9) is None and interpolate_at(pts, 1001.0) is None
    assert interpolate_at([(100.0, 10.0), (100.0, 30.0), (10.0, 0.0)], 100.0) == pytest.approx(20.0)  # averaged
    assert interpolate_at([], 5.0) is None and interpolate_at(pts, 0.0) is None
    assert interpolate_at(list(reversed(pts)), 100.0) == pytest.approx(30.0)  # order does not matter


def test_matched_rows_read_each_method_at_the_reference_counts():
    rows = [
        {"method": "depth-rgb", "knob": 1.0, "regions_per_frame": 100.0, "gt_query_miou": 30.0, "purity": 90.0},
        {"method": "depth-rgb", "knob": 2.0, "regions_per_frame": 50.0, "gt_query_miou": 25.0, "purity": 85.0},
        {"method": "felzenszwalb", "knob": 9.0, "regions_per_frame": 10.0, "gt_query_miou": 10.0, "purity": 70.0},
        {"method": "felzenszwalb", "knob": 3.0, "regions_per_frame": 1000.0, "gt_query_miou": 40.0, "purity": 94.0},
        {"method": "gt", "knob": 0.0, "regions_per_frame": 30.0, "gt_query_miou": 99.0, "purity": 100.0},
    ]
    m = matched_rows(rows)
    assert [r["regions"] for r in m] == [50.0, 100.0] and all("gt" not in r for r in m)
    at100 = m[1]["felzenszwalb"]
    assert at100["gt_query_miou"] == pytest.approx(25.0) and at100["purity"] == pytest.approx(82.0)
    assert m[1]["depth-rgb"] == {"gt_query_miou": 30.0, "purity": 90.0}
    gain = matched_gain(m, "depth-rgb", "felzenszwalb", "gt_query_miou")
    f50 = 10 + 30 * np.log(5) / np.log(100)
    assert gain[1] == 2 and gain[0] == pytest.approx(((30 - 25) + (25 - f50)) / 2)
    assert matched_gain(m, "depth-rgb", "slic", "purity") is None
    same = rows + [{"method": "depth-rgb", "knob": 0.5, "regions_per_frame": 100.0, "gt_query_miou": 30.0,
                    "purity": 90.0}]  # a smaller knob that merges nothing more: the same partition
    assert [r["regions"] for r in matched_rows(same)] == [50.0, 100.0]


def test_paired_spread_is_the_std_of_per_frame_differences_on_each_frames_own_curve():
    felz = [(9.0, 10.0, 10.0, 70.0), (3.0, 1000.0, 40.0, 94.0)]  # (knob, regions, GT-query, purity)
    frames = [{"depth-rgb": [(1.0, 100.0, 30.0, 90.0)], "felzenszwalb": felz},  # felz at 100: 25 / 82
              {"depth-rgb": [(1.0, 100.0, 20.0, 80.0)], "felzenszwalb": felz},
              {"depth-rgb": [(1.0, 5.0, 20.0, 80.0)], "felzenszwalb": felz}]  # outside felz's range: left out
    sd = paired_spread(frames, 1.0, "felzenszwalb")
    assert sd["gt_query_miou"] == pytest.approx(np.std([5.0, -5.0], ddof=1))
    assert sd["purity"] == pytest.approx(np.std([8.0, -2.0], ddof=1))
    assert paired_spread(frames[:1], 1.0, "felzenszwalb") == {"gt_query_miou": None, "purity": None}
    assert paired_spread(frames, 2.0, "felzenszwalb")["gt_query_miou"] is None  # no such knob
    matched = [{"regions": 100.0, "knob": 1.0, "depth-rgb": {"gt_query_miou": 25.0, "purity": 85.0},
                "felzenszwalb": {"gt_query_miou": 25.5, "purity": 80.0},
                "frame_sd": {"felzenszwalb": {"gt_query_miou": 0.2, "purity": 3.0}}}]
    line = below_line(matched, "felzenszwalb")
    assert "GT-query below at 1 [100: -0.5 (sd 0.2, beyond it)]" in line and "purity below at 0" in line


def test_tiny_sweep_on_the_synthetic_city_and_the_cityscapes_samples(sample_data, tmp_path):
    cs = sample_data / "cityscapes"
    cfg = SweepConfig(dataset="cityscapes", data_root=str(cs), out=str(tmp_path), demo_size="tiny",
                      depth=f"files:{cs / 'pydnet_disparity' / 'train' / 'aachen'}", depth_kind="disparity",
                      depth_scale=65535.0, max_frames=2, synthetic_frames=2, workers=1, sweep_t_e=(0.2, 0.6),
                      sweep_merge_k=(10.0, 100.0), sweep_slic=(50,), sweep_felz=(100.0,))
    lines: list[str] = []
    rep = run_sweep(cfg, echo=lines.append)
    # depth-rgb's constants are recorded, the merge's choice among them
    assert {"merge_k", "min_pixels", "small_per_k", "precise_q", "mean_k_half"} <= set(rep["depth_rgb_params"])
    assert [c["key"] for c in rep["conditions"]] == ["synthetic-exact", "synthetic-weak", "cityscapes"]
    for c in rep["conditions"]:
        assert c["frames"] == 2 and c["size"] == [96, 192]
        assert sorted({(r["method"], r["knob"]) for r in c["rows"]}) == [
            ("depth", 0.2), ("depth", 0.6), ("depth-rgb", 10.0), ("depth-rgb", 100.0), ("felzenszwalb", 100.0),
            ("gt", 0.0), ("slic", 50.0)]
        gt = next(r for r in c["rows"] if r["method"] == "gt")
        assert gt["purity"] > 99.5
        for r in c["rows"]:
            assert 0 <= r["bilateral_miou"] <= r["gt_query_miou"] <= 100
        assert all(set(m["frame_sd"]) == {"depth", "felzenszwalb", "slic"} for m in c["matched"])
        assert [m["regions"] for m in c["matched"]] == sorted(
            r["regions_per_frame"] for r in c["rows"] if r["method"] == "depth-rgb")
    # the degraded depth changes the depth methods, not the image-only ones
    exact, weak = ({(r["method"], r["knob"]): r for r in c["rows"]} for c in rep["conditions"][:2])
    assert exact[("slic", 50.0)] == weak[("slic", 50.0)]
    assert exact[("depth", 0.2)] != weak[("depth", 0.2)]
    out = next(p for p in tmp_path.rglob("sweep.json")).parent
    assert json.loads((out / "sweep.json").read_text())["conditions"][2]["key"] == "cityscapes"
    md = (out / "sweep.md").read_text()
    assert "(c) synthetic city, weak depth" in md and "At depth-rgb's region counts" in md
    assert Image.open(out / "sweep.png").size[0] > 500
    # the synthetic city's index cache of the demo stages was left alone
    assert not (tmp_path / "synthetic-tiny" / "index.jsonl").exists()


def test_a_sweep_with_every_frame_skipped_fails(tmp_path, sample_data):
    from shared.frames import DataError

    empty = tmp_path / "none"
    empty.mkdir()
    cfg = SweepConfig(dataset="cityscapes", data_root=str(sample_data / "cityscapes"), out=str(tmp_path),
                      demo_size="tiny", depth=f"files:{empty}", max_frames=1, synthetic_frames=0, workers=1,
                      sweep_t_e=(0.2,), sweep_merge_k=(10.0,), sweep_slic=(50,), sweep_felz=(100.0,))
    with pytest.raises(DataError, match="every frame was skipped"):
        run_sweep(cfg, echo=lambda s: None)
