"""Region-proposal metrics: known answers, perfect = 100, and the report on the tiny synthetic city."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluate.proposals import (MethodSummary, ProposalsConfig, felzenszwalb_matched, frame_scores, iou_matrix,
                                paired_differences, run_report, slic_matched)
from shared.regions.grouping import filter_regions, instance_components


def scene():
    """labelIds and instanceIds of a 10x10 frame: road (7), two cars, a void corner."""
    inst = np.full((10, 10), 7, dtype=np.int32)
    inst[0:4, 0:4] = 26001
    inst[6:10, 5:10] = 26002
    inst[0:2, 8:10] = 0  # void
    lab = np.where(inst >= 1000, inst // 1000, inst)
    return inst, lab


def test_perfect_proposals_score_100():
    inst, lab = scene()
    gt = instance_components(inst)
    regions = filter_regions(gt, 1, 1)
    s = MethodSummary([frame_scores(gt, regions, lab)]).summary()
    assert s["gt_query_miou"] == pytest.approx(100.0)
    assert s["bilateral_miou"] == pytest.approx(100.0)
    assert s["purity"] == pytest.approx(100.0) and s["coverage"] == pytest.approx(100.0)
    assert s["regions_per_frame"] == 3 and s["gt_masks"] == 3


def test_paired_differences_are_per_frame_with_the_sample_std():
    inst, lab = scene()
    gt = instance_components(inst)
    perfect = frame_scores(gt, filter_regions(gt, 1, 1), lab)  # every GT mask at IoU 1
    one = frame_scores(gt, np.ones_like(gt), lab)  # one region over the frame: IoU = mask share
    base_value = 100 * one.best_iou.mean()
    # frame 1: ours perfect, baseline one region; frame 2: the other way round
    p = paired_differences([perfect, one], [one, perfect])
    d = 100 - base_value
    assert p["frames"] == 2 and p["mean"] == pytest.approx(0.0)
    assert p["frame_std"] == pytest.approx(np.std([d, -d], ddof=1))
    same = paired_differences([perfect, perfect], [one, one])
    assert same["mean"] == pytest.approx(d) and same["frame_std"] == pytest.approx(0.0)
    assert paired_differences([perfect], [one])["frame_std"] == 0.0


def test_known_iou_values():
    inst, lab = scene()
    gt = instance_components(inst)
    # one region covering everything: best IoU of each mask = its size / valid pixels
    one = np.ones((10, 10), dtype=np.uint16)
    valid = lab >= 7
    iou = iou_matrix(gt, one, valid)
    sizes = np.bincount(gt[valid])
    np.testing.assert_allclose(iou[:, 0], sizes / valid.sum())
    fs = frame_scores(gt, one, lab)
    s = MethodSummary([fs]).summary()
    np.testing.assert_allclose(s["gt_query_miou"], 100 * np.mean(sizes / valid.sum()))
    # bilateral: one region matched to the largest mask, 2 masks unmatched -> sum / max(3, 1)
    np.testing.assert_allclose(s["bilateral_miou"], 100 * (sizes.max() / valid.sum()) / 3)
    # purity: the majority label of the region is road
    np.testing.assert_allclose(s["purity"], 100 * (lab[valid] == 7).sum() / valid.sum())


def test_extra_regions_lower_bilateral_but_not_gt_query():
    inst, lab = scene()
    gt = instance_components(inst)
    regions = filter_regions(gt, 1, 1).astype(np.int64)
    regions[9, 0] = regions.max() + 1  # a one-pixel extra region cut out of the road
    s = MethodSummary([frame_scores(gt, regions.astype(np.uint16), lab)]).summary()
    road = (gt == gt[5, 0]).sum()
    assert s["gt_query_miou"] == pytest.approx(100 * (2 + (road - 1) / road) / 3)
    assert s["bilateral_miou"] == pytest.approx(100 * (2 + (road - 1) / road) / 4)


def test_baselines_hit_a_similar_region_count():
    from scipy import ndimage
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(96, 192, 3)), (4, 4, 0))
    rgb = (255 * (field - field.min()) / np.ptp(field)).astype(np.uint8)
    s = slic_matched(rgb, 60, 10.0, 1.0, 2, 2)
    f, scale = felzenszwalb_matched(rgb, 60, 0.8, 20, 2, 2)
    assert abs(int(s.max()) - 60) <= 0.25 * 60
    assert abs(int(f.max()) - 60) <= 0.5 * 60 and scale > 0


def test_report_on_the_tiny_synthetic_city(tmp_path):
    synth = pytest.importorskip("preprocess.synth")
    root = tmp_path / "city"
    synth.generate_preset(root, "tiny")
    cfg = ProposalsConfig(dataset="synthetic", data_root=str(root), out=str(tmp_path / "o"), demo_size="tiny",
                          max_frames=2, overlays=1, workers=1)
    lines: list[str] = []
    rep = run_report(cfg, echo=lines.append)
    assert set(rep["results"]) == {"depth", "slic", "felzenszwalb", "gt"}
    for r in rep["results"].values():
        assert 0 <= r["bilateral_miou"] <= r["gt_query_miou"] <= 100 and r["regions_per_frame"] > 0
    assert rep["results"]["gt"]["purity"] == pytest.approx(100.0)
    # what it will do first (frames, size, methods, depth), what it wrote where and how long it took last
    assert lines[0].startswith("proposals: plan: 2 labelled frames at 96x192, methods depth, slic, felzenszwalb, gt, "
                               "depth gt, 1 task(s) on 1 worker(s)")
    assert lines[-1].startswith("proposals: wrote report.md, report.json and 5 overlays into ")
    out = Path(lines[-1].split(" into ")[1].rsplit(" in ", 1)[0])
    assert out.parent.name == "reports" and json.loads((out / "report.json").read_text())["frames"] == 2
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 5 and any(p.endswith("_weights.png") for p in pngs)


def test_report_on_cityscapes_without_depth_runs_the_baselines(sample_data, tmp_path):
    cfg = ProposalsConfig(dataset="cityscapes", data_root=str(sample_data / "cityscapes"), out=str(tmp_path),
                          demo_size="tiny", max_frames=1, overlays=0, baseline_regions=60, workers=1)
    rep = run_report(cfg, echo=lambda s: None)
    assert "depth" not in rep["results"] and rep["notes"]
    # instanceIds and labelIds disagree on a handful of real pixels (e.g. around license plates)
    assert rep["results"]["gt"]["purity"] > 99.5 and rep["results"]["gt"]["gt_query_miou"] > 80  # thin masks fall to the filter
    assert rep["results"]["slic"]["regions_per_frame"] > 30


def test_a_report_with_every_frame_skipped_fails_with_the_reason(sample_data, tmp_path):
    from click.testing import CliRunner

    from evaluate.__main__ import main

    empty = tmp_path / "no_depth"
    empty.mkdir()
    r = CliRunner().invoke(main, ["proposals", "--dataset", "cityscapes", "--data-root", str(sample_data / "cityscapes"),
                                  "--out", str(tmp_path / "o"), "--demo-size", "tiny", "--max-frames", "2",
                                  "--depth", f"files:{empty}", "--workers", "1"])
    assert r.exit_code != 0
    assert "every frame was skipped (2)" in r.output and "no depth map" in r.output
    assert not list((tmp_path / "o").rglob("report.md"))


def test_report_scores_depth_rgb_when_asked(tmp_path):
    synth = pytest.importorskip("preprocess.synth")
    root = tmp_path / "city"
    synth.generate_preset(root, "tiny")
    cfg = ProposalsConfig(dataset="synthetic", data_root=str(root), out=str(tmp_path / "o"), demo_size="tiny",
                          max_frames=1, overlays=0, workers=1, proposals="depth-rgb")
    rep = run_report(cfg, echo=lambda s: None)
    assert set(rep["results"]) == {"depth-rgb", "slic", "felzenszwalb", "gt"}
    assert rep["depth_method"] == "depth-rgb" and rep["depth_rgb_params"]["merge_k"] == cfg.merge_k
    assert rep["results"]["depth-rgb"]["regions_per_frame"] > 1


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_rerun_reuses_the_report_until_an_input_changes(tiny_city, tmp_path):
    import shutil

    from click.testing import CliRunner

    from evaluate.__main__ import main

    city = tmp_path / "city"
    shutil.copytree(tiny_city, city)
    args = ["proposals", "--dataset", "synthetic", "--data-root", str(city), "--out", str(tmp_path / "o"),
            "--demo-size", "tiny", "--max-frames", "1", "--overlays", "1", "--workers", "1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    out = next((tmp_path / "o" / "synthetic-tiny" / "reports").glob("proposals-*"))
    written = _mtimes(out)
    assert "done.json" in written and "report.json" in written and any(n.endswith("_weights.png") for n in written)

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines()[-1] == f"proposals: reusing {out} (inputs unchanged; --force to recompute)"
    assert "| method |" not in again.output  # nothing was scored
    assert _mtimes(out) == written

    # the depth the regions are built from changes (a new depth source): the report is made again
    for npy in sorted(city.glob("seq*/depth/*.npy")):
        np.save(npy, 2 * np.load(npy))
    changed = CliRunner().invoke(main, args)
    assert changed.exit_code == 0 and "reusing" not in changed.output and "| method |" in changed.output  # scored
    forced = CliRunner().invoke(main, args + ["--force"])
    assert forced.exit_code == 0 and "reusing" not in forced.output


def test_a_baseline_off_the_region_count_is_noted():
    from evaluate.proposals import count_notes

    results = {"depth": {"regions_per_frame": 60.0}, "slic": {"regions_per_frame": 65.0},
               "felzenszwalb": {"regions_per_frame": 70.0}}
    notes = count_notes(results, "depth")
    assert len(notes) == 1 and notes[0].startswith("felzenszwalb: 70.0 regions per frame, more than 10 % away from depth's 60.0")
    assert count_notes({"slic": {"regions_per_frame": 5.0}}, "depth") == []  # no depth source: nothing to match


def test_report_uses_the_depth_the_region_store_was_built_from(tiny_city, tmp_path):
    """`make proposals` after regions built from another depth scores that depth, not the dataset's default."""
    import shutil

    from shared.stage import StageConfig, write_pointer

    city = tmp_path / "city"
    shutil.copytree(tiny_city, city)
    maps = tmp_path / "maps"
    maps.mkdir()
    for npy in sorted(city.glob("seq*/depth/*.npy")):
        np.save(maps / npy.name, 3 * np.load(npy))  # another depth source, named like the frames' own
    common = dict(dataset="synthetic", data_root=str(city), out=str(tmp_path / "o"), demo_size="tiny")
    store = tmp_path / "o" / "synthetic-tiny" / "regions" / "depth-abc"
    store.mkdir(parents=True)
    (store / "config.json").write_text(json.dumps({"config": {"depth": f"files:{maps}"}}))
    write_pointer(StageConfig(**common), "regions", "depth", store)
    lines: list[str] = []
    rep = run_report(ProposalsConfig(**common, max_frames=1, overlays=0, workers=1), echo=lines.append)
    assert lines[0] == f"proposals: depth files:{maps}, the source of the region store {store.resolve()} " \
                       "(--depth / DEPTH= overrides)"
    assert rep["depth"] == f"files:{maps}"
    # --depth wins over the store's
    rep = run_report(ProposalsConfig(**common, depth="gt", max_frames=1, overlays=0, workers=1), echo=lambda s: None)
    assert rep["depth"] == "gt"


@pytest.mark.parametrize("seed", [0, 1])
def test_on_exact_depth_at_192x384_the_paper_regions_beat_both_baselines_beyond_the_frame_spread(tmp_path, seed):
    """The method's claim on data with perfect depth: at the smallest working size where it holds
    (bench/regions_depth.py), the paper's regions score above SLIC and Felzenszwalb at matched region
    counts by more than the frame-to-frame std of the difference, on the demo city and another seed."""
    synth = pytest.importorskip("preprocess.synth")
    root = tmp_path / "city"
    synth.generate(root, 2, 6, (192, 384), seed=seed, progress=False, workers=1)
    cfg = ProposalsConfig(dataset="synthetic", data_root=str(root), out=str(tmp_path / "o"), demo_size="tiny",
                          size="192x384", overlays=0, workers=1)
    rep = run_report(cfg, echo=lambda _: None)
    res, paired = rep["results"], rep["paired"]
    for base in ("slic", "felzenszwalb"):
        assert abs(res[base]["regions_per_frame"] / res["depth"]["regions_per_frame"] - 1) <= 0.10
        gain = res["depth"]["gt_query_miou"] - res[base]["gt_query_miou"]
        assert gain > paired[base]["frame_std"] > 0, (base, gain, paired[base])
