"""The run report page, built from a hand-made run folder (JSON, logs and PNGs as the stages write them)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from evaluate.report import NOISE_NOTE, TINY_NOTE, make_report, read_log

RUN = "synthetic-small"


def _png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(path)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _log(path: Path, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n" for i, v in enumerate(losses)))


def _scores(miou: float, std: float | None, n: int) -> dict:
    return {"miou": miou, "miou_std": std, "pixel_accuracy": 50.0, "pixel_accuracy_std": std, "n_runs": n}


def fake_run(root: Path, seeds: int = 3) -> Path:
    """A run folder with one output of every stage; `seeds` networks per unsupervised model."""
    run = root / RUN
    store = run / "regions" / "depth-abc"
    _json(store / "config.json", {"config": {"depth": "model:/x/depth/run-1/checkpoint.pt"}})
    (run / "regions" / "depth.current").write_text(str(store) + "\n")
    prop = run / "reports" / "proposals-123"
    _json(prop / "report.json", {"depth": "model:/x/depth/run-1/checkpoint.pt", "frames": 40, "results": {
        "depth": {"purity": 91.5, "coverage": 80.0, "regions_per_frame": 60.0},
        "slic": {"purity": 88.25, "coverage": 99.0, "regions_per_frame": 60.0}}})
    for method in ("gt", "depth", "slic"):
        _png(prop / f"seq00_000000_{method}.png")
    _png(run / "shards" / "depth-9" / "inspect" / "e00_g0000000.png", 200)
    _log(run / "depth" / "run-1" / "log.jsonl", [0.3, 0.2, 0.15])
    _png(run / "depth" / "run-1" / "images" / "step-000003.png", 60)
    _log(run / "train" / "abc" / "log.jsonl", [4.8, 4.6])
    _json(run / "eval" / "abc-kmeans" / "report.json", {"clustering": "kmeans", "frames": ["a", "b"], "protocols": {
        "paper": {"models": {"pre-trained": _scores(21.25, 1.5 if seeds > 1 else None, seeds),
                             "random init": _scores(9.75, 0.5 if seeds > 1 else None, seeds)}}}})
    _json(run / "eval" / "depth-777.json", {"frames": 6, "split": "val", "model": {"abs_rel": 0.125, "a1": 0.8},
                                             "baseline": {"abs_rel": 0.375, "a1": 0.4}})
    _json(run / "finetune" / "semantic-pretrained-1" / "report.json",
          {"task": "semantic", "init": "pretrained", "label_fraction": "1", "miou": 30.5, "miou_std": 2.25,
           "pixel_accuracy": 70.0, "pixel_accuracy_std": 1.0, "networks": [{}, {}, {}],
           "train_frames": [1], "pool_frames": [8]})
    return run


def test_page_shows_every_stage_with_spreads(tmp_path):
    run = fake_run(tmp_path, seeds=3)
    page, rebuilt = make_report(run, "small")
    assert rebuilt and page == run / "report" / "index.html"
    text = page.read_text()
    for anchor in ("samples", "copy-paste", "losses", "proposals", "depth", "unsupervised", "finetune"):
        assert f'id="{anchor}"' in text
    assert "<script" not in text.lower()
    assert "model:/x/depth/run-1/checkpoint.pt" in text  # which depth the regions used
    assert "21.25 ± 1.50 <small>(3 networks)" in text and "9.75 ± 0.50" in text
    assert "30.50 ± 2.25" in text  # fine-tuning mean +- std over its 3 networks
    assert "no scratch run with these labels" in text
    assert "<td>0.125</td>" in text and "<td>0.375</td>" in text  # depth model vs mean-depth baseline
    assert "91.50" in text and "88.25" in text
    assert NOISE_NOTE not in text and TINY_NOTE not in text  # 3 seeds, small preset: no noise note
    # Every picture is a file beside the page, linked relatively.
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 3 + 1 + 1 + 2  # 3 proposal overlays, depth snapshot, contact sheet, 2 loss charts
    assert "depth network at step-000003" in text
    for src in sources:
        assert not src.startswith("/") and (page.parent / src).is_file(), src
    for href in re.findall(r'<a href="(\.\./[^"#]+)"', text):
        assert (page.parent / href).exists(), href


def test_single_seed_and_tiny_preset_say_the_difference_means_nothing(tmp_path):
    run = fake_run(tmp_path, seeds=1)
    text = make_report(run, "small")[0].read_text()
    unsupervised = text.split('id="unsupervised"')[1].split("<h2")[0]
    assert NOISE_NOTE in unsupervised and "±" not in unsupervised
    assert "21.25 <small>(1 network)" in unsupervised
    text = make_report(run, "tiny", force=True)[0].read_text()
    assert TINY_NOTE in text


def test_reuse_until_an_input_changes(tmp_path):
    run = fake_run(tmp_path)
    page, rebuilt = make_report(run, "small")
    assert rebuilt
    assert make_report(run, "small") == (page, False)
    log = run / "train" / "abc" / "log.jsonl"
    os.utime(log, ns=(log.stat().st_atime_ns, log.stat().st_mtime_ns + 10**9))
    assert make_report(run, "small") == (page, True)
    shutil.rmtree(run / "finetune")  # a removed input changes the page too
    page, rebuilt = make_report(run, "small")
    assert rebuilt and "No fine-tuning report" in page.read_text()


def test_empty_run_folder_names_what_is_missing(tmp_path):
    run = tmp_path / RUN
    run.mkdir()
    text = make_report(run, "")[0].read_text()
    assert "No proposal pictures" in text and "No contact sheet" in text and "No training log" in text
    assert "No unsupervised evaluation" in text and "unknown (no depth region store)" in text


def test_read_log_skips_lines_without_step_and_loss(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.5}\n{"step": 2}\nnot json\n{"step": 3, "loss": NaN}\n{"step": 4, "loss": 1}\n')
    assert read_log(path) == ([1.0, 4.0], [2.5, 1.0])


def test_cli_builds_then_reuses(tmp_path):
    from evaluate.__main__ import main

    fake_run(tmp_path / "out" / "synthetic", seeds=2)
    # The CLI's run folder is <out>/<dataset>-<demo-size>/.
    shutil.move(str(tmp_path / "out" / "synthetic" / RUN), str(tmp_path / "out" / RUN))
    args = ["report", "--out", str(tmp_path / "out"), "--demo-size", "small"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "report: wrote" in first.output
    second = CliRunner().invoke(main, args)
    assert "report: reusing" in second.output



def test_layout_orders_frames_zooms_small_pictures_and_aligns_names(tmp_path):
    run = fake_run(tmp_path)
    _log(run / "train" / "a-run-name-long-enough-to-need-a-wider-legend" / "log.jsonl", [3.0, 2.0])
    page = make_report(run, "small")[0]
    text = page.read_text()
    samples = text.split('id="samples"')[1].split("<h2")[0]
    # Ground truth first, then ours, then the baseline, whatever the file names' alphabetical order.
    order = re.findall(r'<img src="img/reports__proposals-123__seq00_000000_([a-z-]+)\.png"', samples)
    assert order == ["gt", "depth", "slic"]
    assert "seq00_000000: depth regions (ours)" in samples and "seq00_000000: SLIC baseline" in samples
    # The 12 px wide depth snapshot is shown enlarged by a whole factor (32) to 384 px.
    assert 'width="384" height="256" class="zoom"' in samples
    # Every picture links to its own full-size file.
    for src in re.findall(r'<img src="([^"]+)"', text):
        assert f'<a href="{src}"><img src="{src}"' in text
    # Names left-aligned, numbers right-aligned (the default).
    unsupervised = text.split('id="unsupervised"')[1].split("<h2")[0]
    assert '<td class="text">random init</td>' in unsupervised and '<td>9.75 ±' in unsupervised


def test_every_image_the_page_names_exists_and_opens(tmp_path):
    page = make_report(fake_run(tmp_path), "small")[0]
    sources = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert sources
    for src in sources:
        with Image.open(page.parent / src) as img:
            img.verify()  # a truncated or non-image file raises here


def test_loss_plots_are_matplotlib_with_labelled_axes_from_zero(tmp_path):
    page = make_report(fake_run(tmp_path), "small")[0]
    plots = json.loads((page.parent / "plots.json").read_text())
    assert {p["file"] for p in plots} == {"img/loss_depth.png", "img/loss_train.png"}
    for p in plots:
        assert p["x_label"] == "training step" and "loss" in p["y_label"] and "(" in p["y_label"]  # a unit
        assert p["y_range"][0] == 0.0  # losses of 0.3 -> 0.15 are not stretched over the whole axis
        with Image.open(page.parent / p["file"]) as img:
            assert img.size[0] >= 400 and len(img.getcolors(1 << 16) or range(1 << 16)) > 50  # drawn, anti-aliased


def test_headlines_have_verdicts_and_both_fine_tuning_rows(tmp_path):
    run = fake_run(tmp_path, seeds=3)
    text = make_report(run, "small")[0].read_text()
    unsupervised = text.split('id="unsupervised"')[1].split("<h2")[0]
    assert "pre-trained vs random init, mIoU, paper protocol: </b>ahead: +11.50 against a spread of 1.50" in unsupervised
    finetune = text.split('id="finetune"')[1].split("<h2")[0]
    assert "semantic, trained on 1 labelled frame of 8 (1/8)" in finetune
    assert '<td class="text">scratch</td><td class="text">not run <small>(make finetune INIT=scratch)</small>' in finetune
    _json(run / "finetune" / "semantic-scratch-1" / "report.json",
          {"task": "semantic", "init": "scratch", "label_fraction": "1", "miou": 29.5, "miou_std": 2.0,
           "pixel_accuracy": 69.0, "pixel_accuracy_std": 1.0, "networks": [{}, {}, {}],
           "train_frames": [1], "pool_frames": [8]})
    finetune = make_report(run, "small")[0].read_text().split('id="finetune"')[1].split("<h2")[0]
    assert finetune.count("<tr>") == 3  # head, pretrained, scratch
    assert "pre-trained vs scratch, mIoU: </b>within the spread: +1.00 against a spread of 2.25" in finetune
    assert "make demo DEMO_SIZE=small" in finetune  # what can separate them
    depth = text.split('id="depth"')[1].split("<h2")[0]
    assert "ahead: -0.25 with one network per side" in depth  # abs_rel 0.125 vs 0.375, lower is better


def test_proposal_rows_off_the_region_count_and_another_depth_are_flagged(tmp_path):
    run = fake_run(tmp_path)
    prop = run / "reports" / "proposals-123" / "report.json"
    rep = json.loads(prop.read_text())
    rep["results"]["felzenszwalb"] = {"purity": 80.0, "regions_per_frame": 70.0}  # 16.7 % above 60
    rep["depth"] = "gt"  # not the depth of the region store
    rep["results"]["depth"]["gt_query_miou"], rep["results"]["slic"]["gt_query_miou"] = 50.0, 47.0
    rep["paired"] = {"slic": {"mean": 2.5, "frame_std": 4.0, "frames": 12}}  # per-frame differences
    prop.write_text(json.dumps(rep))
    section = make_report(run, "small")[0].read_text().split('id="proposals"')[1].split("<h2")[0]
    assert "felzenszwalb ⚠ region count off by more than 10 %" in section
    assert "slic ⚠" not in section
    assert "this report used depth gt, the region store model:/x/depth/run-1/checkpoint.pt" in section
    # the pooled difference, judged against the frames' spread (deterministic methods have no seeds)
    assert "depth vs slic, GT-query mIoU: </b>within the spread: +3.00 against a frame-to-frame std of 4.00" in section
    assert "make demo DEMO_SIZE=small DEMO_DEPTH=gt" in section  # what separates region methods: the depth
    assert "(three pre-training seeds" not in section  # not seeds: the methods are deterministic
    assert "depth vs felzenszwalb" not in section  # no verdict against a baseline at another region count


def test_summary_picture_shows_the_losses_and_the_verdicts(tmp_path):
    from evaluate.report import collect, verdict_lines
    from evaluate.report_summary import summary_picture

    run = fake_run(tmp_path, seeds=3)
    (tmp_path / "img").mkdir()
    lines = verdict_lines(collect(run, tmp_path / "img", tiny=False))
    assert ("ahead", "pre-trained vs random init, mIoU, paper protocol: ahead: +11.50 against a spread of 1.50") in lines
    out = summary_picture(run, tmp_path / "summary.png", tiny=False)
    with Image.open(out) as img:
        assert img.size[0] >= 1000 and len(img.convert("RGB").getcolors(1 << 20)) > 100
