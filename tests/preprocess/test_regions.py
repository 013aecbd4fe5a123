"""The regions stage end to end on the tiny synthetic city: store round trip, no-op rerun,
kill-and-resume to identical bytes, bad frames skipped or --strict, depth sources."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
import time

import numpy as np
import pytest
from click.testing import CliRunner

from preprocess import regions as stage
from shared.regions.depth_source import DepthSource, check_depth, parse_depth_spec
from shared.frames import DataError
from shared.imageio import read_depth_map, write_png
from shared.region_store import RegionStore, read_manifest
from shared.stage import read_pointer


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    synth = pytest.importorskip("preprocess.synth")
    root = tmp_path_factory.mktemp("city") / "city-tiny"
    synth.generate_preset(root, "tiny")
    return root


def config(city: Path, out: Path, **kw) -> stage.RegionsConfig:
    base = dict(dataset="synthetic", data_root=str(city), out=str(out), demo_size="tiny", max_frames=4,
                chunk_size=2, workers=1)
    base.update(kw)
    return stage.RegionsConfig(**base)


def store_bytes(store: Path) -> dict[str, bytes]:
    """Chunk bytes plus the manifest without the output root (two runs into two folders)."""
    man = json.loads((store / "manifest.json").read_text())
    man["config"].pop("out")
    return {p.name: p.read_bytes() for p in sorted(store.glob("chunk_*.h5"))} | \
        {"manifest.json": json.dumps(man, sort_keys=True).encode()}


def test_store_round_trip_and_noop_rerun(city, tmp_path):
    cfg = config(city, tmp_path)
    lines: list[str] = []
    store = stage.run_regions(cfg, echo=lines.append)
    assert read_pointer(cfg, "regions", "depth") == store.resolve()
    assert store.name.startswith("depth-")
    # what it will do first (frames, size, depth, workers), what it wrote where and how long it took last
    assert lines[0].startswith("regions: plan: 4 frames in 2 chunks (0 chunks already done) at 96x192")
    assert "\n".join(lines).splitlines()[-1].startswith(f"regions: wrote 4 frames into {store} in ")
    man = read_manifest(store)
    for key in ("height", "width", "config", "config_hash", "depth_units", "proposals", "chunks", "skipped"):
        assert key in man
    assert (man["height"], man["width"]) == (96, 192) and man["skipped"] == []
    with RegionStore(store) as rs:
        assert len(rs) == 4
        rec = rs.read(rs.frame_ids()[0])
        assert rec.depth.shape == (96, 192) and rec.regions.dtype == np.uint16
        assert rec.attrs["image"].endswith(".png") and rec.attrs["n_regions"] == rec.regions.max() > 1
        gt = np.load(next(f for f in stage.frames_for(cfg) if f.id == rec.frame_id).depth)
        np.testing.assert_allclose(rec.depth, gt, rtol=1e-3)  # float16 storage
    before = store_bytes(store)
    lines.clear()
    assert stage.run_regions(cfg, echo=lines.append) == store
    assert "nothing to do" in lines[-1]
    assert store_bytes(store) == before


def test_kill_and_resume_gives_identical_bytes(city, tmp_path, monkeypatch):
    full = stage.run_regions(config(city, tmp_path / "a"), echo=lambda s: None)
    reference = store_bytes(full)

    cfg = config(city, tmp_path / "b")
    real = stage.write_chunk
    calls = []

    def dies_on_second_chunk(path, records):
        calls.append(Path(path).name)
        if len(calls) == 2:
            Path(path).with_name(f".{Path(path).name}.4242.tmp").write_bytes(b"half a chunk")  # a killed writer leaves this
            raise KeyboardInterrupt
        return real(path, records)

    monkeypatch.setattr(stage, "write_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        stage.run_regions(cfg, echo=lambda s: None)
    monkeypatch.setattr(stage, "write_chunk", real)
    store = Path(stage.output_dir(cfg, "regions")) / full.name
    assert len(read_manifest(store)["chunks"]) == 1  # one finished chunk survived the kill
    done_first = (store / "chunk_00000.h5").stat().st_mtime_ns
    lines: list[str] = []
    stage.run_regions(cfg, echo=lines.append)
    assert "(1 chunks already done)" in lines[0]
    assert (store / "chunk_00000.h5").stat().st_mtime_ns == done_first, "finished chunk was redone"
    assert store_bytes(store) == reference
    assert not list(store.glob(".*.tmp"))


def test_one_chunk_of_few_frames_runs_on_every_worker_with_the_same_bytes(city, tmp_path, monkeypatch):
    one = stage.run_regions(config(city, tmp_path / "one", chunk_size=8), echo=lambda s: None)
    calls = []
    real = stage.Executor

    class Recording(real):  # the tasks handed to the engine: one per frame
        def map_unordered(self, fn, task_args, desc="task"):
            calls.extend(args[0].id for args in task_args)
            return super().map_unordered(fn, task_args, desc)

    monkeypatch.setattr(stage, "Executor", Recording)
    lines: list[str] = []
    two = stage.run_regions(config(city, tmp_path / "two", chunk_size=8, workers=2), echo=lines.append)
    assert "in 1 chunks" in lines[0] and "2 worker(s)" in lines[0] and "2 worker(s)" in lines[-1]
    assert sorted(calls) == sorted(f.id for f in stage.frames_for(config(city, tmp_path))[:4])  # a task per frame
    chunks = lambda store: {p.name: p.read_bytes() for p in sorted(store.glob("chunk_*.h5"))}  # noqa: E731
    assert chunks(two) == chunks(one) and len(chunks(one)) == 1  # the manifest records the workers
    assert stage.n_workers(config(city, tmp_path, workers=16), 3) == 3


def test_other_proposal_methods_share_the_store_format(city, tmp_path):
    for method in ("depth-rgb", "felzenszwalb", "gt"):
        cfg = config(city, tmp_path, proposals=method, max_frames=2)
        store = stage.run_regions(cfg, echo=lambda s: None)
        assert read_pointer(cfg, "regions", method) == store.resolve()
        with RegionStore(store) as rs:
            rec = rs.read(rs.frame_ids()[0])
            assert rec.regions.max() >= 2


def make_depth_dir(city: Path, d: Path, n: int = 4) -> list:
    frames = stage.frames_for(config(city, d.parent / "idx"))[:n]
    d.mkdir()
    for f in frames:
        np.save(d / f"{f.id}.npy", 1.0 / np.load(f.depth))  # disparity, any scale
    return frames


def test_files_source_bad_frames_are_skipped_or_strict(city, tmp_path):
    ddir = tmp_path / "disp"
    frames = make_depth_dir(city, ddir)
    bad = np.load(ddir / f"{frames[1].id}.npy")
    bad[5, 5] = np.nan
    np.save(ddir / f"{frames[1].id}.npy", bad)
    np.save(ddir / f"{frames[2].id}.npy", np.ones((10, 50), np.float32))  # wrong aspect ratio
    (ddir / f"{frames[3].id}.npy").unlink()  # missing
    cfg = config(city, tmp_path / "out", depth=f"files:{ddir}", depth_kind="disparity")
    with pytest.raises(DataError) as e:
        stage.run_regions(dataclasses.replace(cfg, strict=True), echo=lambda s: None)
    assert "3 bad frame(s)" in str(e.value) and frames[1].id in str(e.value)
    assert not list(Path(cfg.out).rglob("chunk_*.h5")), "--strict wrote something"

    store = stage.run_regions(cfg, echo=lambda s: None)
    man = read_manifest(store)
    skipped = {s["frame"]: s for s in man["skipped"]}
    assert set(skipped) == {frames[1].id, frames[2].id, frames[3].id}
    assert "NaN" in skipped[frames[1].id]["problem"] and skipped[frames[1].id]["path"].endswith(".npy")
    assert "aspect ratio" in skipped[frames[2].id]["problem"]
    assert "no depth map" in skipped[frames[3].id]["problem"]
    with RegionStore(store) as rs:
        assert rs.frame_ids() == [frames[0].id]
    # the tolerated-invalid option fills a single NaN instead of skipping the frame
    store2 = stage.run_regions(dataclasses.replace(cfg, max_invalid_depth=0.01), echo=lambda s: None)
    assert frames[1].id not in {s["frame"] for s in read_manifest(store2)["skipped"]}


def test_disparity_files_give_the_same_regions_as_gt_depth(city, tmp_path):
    ddir = tmp_path / "disp"
    make_depth_dir(city, ddir, n=2)
    a = stage.run_regions(config(city, tmp_path / "gt", max_frames=2), echo=lambda s: None)
    b = stage.run_regions(config(city, tmp_path / "files", max_frames=2, depth=f"files:{ddir}",
                                 depth_kind="disparity"), echo=lambda s: None)
    with RegionStore(a) as ra, RegionStore(b) as rb:
        for fid in ra.frame_ids():
            np.testing.assert_array_equal(ra.read(fid).regions, rb.read(fid).regions)


def test_depth_spec_parsing_and_files(tmp_path):
    assert parse_depth_spec("", "synthetic").kind == "gt"
    with pytest.raises(ValueError, match="--depth"):
        parse_depth_spec("", "kitti")
    with pytest.raises(ValueError):
        parse_depth_spec("lidar:x", "kitti")
    with pytest.raises(DataError, match="not found"):
        parse_depth_spec(f"files:{tmp_path / 'nope'}", "kitti")
    png = np.array([[256, 512], [0, 65535]], dtype=np.uint16)
    write_png(tmp_path / "d.png", png)
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.png"), png.astype(np.float32))
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="t.npy"):
        read_depth_map(tmp_path / "t.npy")
    with pytest.raises(DataError, match="zero"):
        check_depth(np.array([[1.0, 0.0]]), "x.npy")
    np.testing.assert_array_equal(check_depth(np.array([[1.0, np.inf, 3.0]]), "x", 0.5), [[1.0, 1.0, 3.0]])


def test_missing_depth_file_message_lists_every_name_tried(tmp_path):
    from shared.frames import Frame

    (tmp_path / "sub").mkdir()
    frame = Frame(id="aachen_000000_000019", image="/x/aachen_000000_000019_leftImg8bit.png", split="train",
                  sequence="aachen_000000", index=19, width=8, height=4, fx=1, fy=1, cx=0.5, cy=0.5)
    src = DepthSource(parse_depth_spec(f"files:{tmp_path}", "cityscapes", "disparity", 65535))
    with pytest.raises(DataError) as e:
        src.path_for(frame)
    for stem in ("aachen_000000_000019", "aachen_000000_000019_leftImg8bit", "aachen_000000_000019_disparity",
                 "aachen_000000_000019_depth"):
        for ext in (".npy", ".npz", ".png"):
            assert stem + ext in e.value.problem
    # each of those names is found, in a subfolder too
    np.save(tmp_path / "sub" / "aachen_000000_000019_depth.npy", np.ones((4, 8), np.float32))
    assert DepthSource(src.spec).path_for(frame).name == "aachen_000000_000019_depth.npy"


def test_model_source_calls_the_depth_predictor(city, tmp_path, monkeypatch):
    import sys
    import types

    seen = {}

    class FakePredictor:
        def __init__(self, ckpt_path, device="cpu"):
            seen["init"] = (ckpt_path, device)

        def predict(self, rgb):
            seen["shape"] = rgb.shape
            return np.full(rgb.shape[:2], 3.0, np.float32) + np.linspace(0, 1, rgb.shape[1])[None]

    mod = types.ModuleType("shared.nets.depth_predictor")
    mod.DepthPredictor = FakePredictor
    monkeypatch.setitem(sys.modules, "shared.nets.depth_predictor", mod)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    src = DepthSource(parse_depth_spec(f"model:{ckpt}", "kitti"))
    frame = stage.frames_for(config(city, tmp_path / "o"))[0]
    rgb = np.zeros((48, 96, 3), np.uint8)
    d = src.load(frame, (48, 96), rgb)
    assert d.shape == (48, 96) and seen["init"] == (str(ckpt), "cpu") and seen["shape"] == (48, 96, 3)


def test_cli_help_and_missing_depth_error(tmp_path):
    from preprocess.__main__ import main

    r = CliRunner().invoke(main, ["regions", "--help"])
    assert r.exit_code == 0 and "--n-segments" in r.output and "--depth" in r.output and "--strict" in r.output
    r = CliRunner().invoke(main, ["regions", "--dataset", "kitti", "--data-root", str(tmp_path),
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code != 0


def test_demo_sizes_scale_the_paper_constants():
    cfg = stage.RegionsConfig(dataset="cityscapes", demo_size="tiny")
    assert stage.working_size(cfg, []) == (96, 192)
    p = stage.grouping_params(cfg, (96, 192))
    assert p.n_segments == 96 * 192 // 9 and (p.min_height, p.min_width) == (4, 2)
    full = stage.grouping_params(stage.RegionsConfig(dataset="cityscapes"), (384, 768))
    assert (full.n_segments, full.min_height, full.min_width, full.t_e) == (10000, 16, 6, 0.2)
    assert stage.working_size(stage.RegionsConfig(dataset="kitti"), []) == (384, 1280)
    assert json.loads(json.dumps(dataclasses.asdict(full)))["w_sup"] == 200.0


def test_a_bad_model_checkpoint_stops_the_run(city, tmp_path, monkeypatch):
    import sys
    import types

    import click

    class BrokenPredictor:
        def __init__(self, ckpt_path, device="cpu"):
            raise DataError(ckpt_path, "unreadable or truncated depth checkpoint")

    mod = types.ModuleType("shared.nets.depth_predictor")
    mod.DepthPredictor = BrokenPredictor
    monkeypatch.setitem(sys.modules, "shared.nets.depth_predictor", mod)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    cfg = config(city, tmp_path / "o", depth=f"model:{ckpt}", max_frames=2)
    with pytest.raises(click.ClickException, match="cannot load the depth model"):
        stage.run_regions(cfg, echo=lambda s: None)


def test_depth_rgb_knobs_key_only_depth_rgb_stores():
    from shared.config import config_hash
    from shared.regions.config import regions_hash

    paper = stage.RegionsConfig(dataset="synthetic")
    assert regions_hash(paper) == config_hash(paper)  # the paper's store names did not change
    assert regions_hash(dataclasses.replace(paper, merge_k=9.0)) == regions_hash(paper)
    rgb = dataclasses.replace(paper, proposals="depth-rgb")
    assert regions_hash(dataclasses.replace(rgb, merge_k=9.0)) != regions_hash(rgb)
    assert regions_hash(dataclasses.replace(rgb, w_app=0.1)) != regions_hash(rgb)
    for knob, value in (("small_per_k", 4.0), ("precise_q", 0.9), ("mean_k_half", 50.0), ("superpixel_factor", 1.0),
                        ("absorb_filtered", False)):
        assert regions_hash(dataclasses.replace(paper, **{knob: value})) == regions_hash(paper), knob
        assert regions_hash(dataclasses.replace(rgb, **{knob: value})) != regions_hash(rgb), knob

def test_depth_in_millimetres_is_stored_finite_and_gives_the_same_regions(city, tmp_path):
    """Depth maps in millimetres (values above float16's 65504 on the synthetic city's far
    facades) are stored finite, at their value, and give the regions of the metre maps."""
    frames = stage.frames_for(config(city, tmp_path / "idx"))[:2]
    ddir = tmp_path / "mm"
    ddir.mkdir()
    metres = {f.id: np.load(f.depth) for f in frames}
    assert max(m.max() for m in metres.values()) * 1000 > 65504  # the case that used to become inf
    for fid, m in metres.items():
        np.save(ddir / f"{fid}.npy", (m.astype(np.float64) * 1000).astype(np.float32))
    a = stage.run_regions(config(city, tmp_path / "gt", max_frames=2), echo=lambda s: None)
    b = stage.run_regions(config(city, tmp_path / "mm_out", max_frames=2, depth=f"files:{ddir}"), echo=lambda s: None)
    with RegionStore(a) as ra, RegionStore(b) as rb:
        for fid in ra.frame_ids():
            ma, mb = ra.read(fid), rb.read(fid)
            np.testing.assert_array_equal(ma.regions, mb.regions)
            assert np.isfinite(mb.depth).all()
            np.testing.assert_allclose(mb.depth, ma.depth * 1000, rtol=2e-3)


def test_non_physical_depth_ranges_are_refused_per_frame():
    sky = np.full((4, 6), 20.0, np.float32)
    sky[0] = 1e10  # sky written as a huge number
    with pytest.raises(DataError, match="spans 20 to 1e\\+10"):
        check_depth(sky, "d.npy")
    wide = np.geomspace(1e-3, 999.0, 24, dtype=np.float32).reshape(4, 6)  # 1 mm to 1 km: a camera's range
    assert check_depth(wide, "d.npy") is wide


def test_depth_files_within_two_percent_of_the_working_aspect_are_resized(tmp_path):
    """KITTI's own maps (375x1242, 370x1226, ...) at KITTI's working size 384x1280 (0.6 % apart)
    are resized; a map 5.6 % off belongs to another image or a crop and is refused for that frame."""
    from shared.frames import Frame

    frame = Frame("d_0000000005", str(tmp_path / "0000000005.png"), "train", "d", 5, 1242, 375, 0.58, 1.92, 0.5, 0.5)
    src = DepthSource(parse_depth_spec(f"files:{tmp_path}", "kitti"))
    for shape in [(375, 1242), (370, 1226), (376, 1241)]:
        np.save(tmp_path / "d_0000000005.npy", np.full(shape, 12.0, np.float32))
        src._files = None
        d = src.load(frame, (384, 1280))
        assert d.shape == (384, 1280) and (d == 12.0).all()
    np.save(tmp_path / "d_0000000005.npy", np.full((375, 1180), 12.0, np.float32))  # 5.6 % narrower
    src._files = None
    with pytest.raises(DataError, match="differs from the working size 384x1280 by 5.6%"):
        src.load(frame, (384, 1280))


def test_a_rerun_retries_frames_whose_files_were_repaired(city, tmp_path):
    """A frame whose header reads but whose body is truncated is skipped; once the file is repaired, the
    same command stores it (before, the finished chunk kept it out: "already complete ..., nothing to do")."""
    mine = tmp_path / "city"
    shutil.copytree(city, mine)
    cfg = config(mine, tmp_path / "out")
    victim = Path(stage.frames_for(cfg)[1].image)
    good = victim.read_bytes()
    victim.write_bytes(good[:len(good) // 2])
    store = stage.run_regions(cfg, echo=lambda s: None)
    assert [s["frame"] for s in read_manifest(store)["skipped"]] == [stage.frames_for(cfg)[1].id]

    lines: list[str] = []
    assert stage.run_regions(cfg, echo=lines.append) == store  # still truncated: nothing to retry
    assert "nothing to do" in lines[-1] and "1 skipped" in lines[-1]

    victim.write_bytes(good)
    lines.clear()
    stage.run_regions(cfg, echo=lines.append)
    out = "\n".join(lines)
    assert "plan: 2 frames in 1 chunks (1 chunks already done)" in out and "recovered 1 of 1 frame(s)" in out
    assert read_manifest(store)["skipped"] == []
    fresh = stage.run_regions(config(mine, tmp_path / "fresh"), echo=lambda s: None)
    assert store_bytes(store) == store_bytes(fresh)  # as if the file had never been damaged
    lines.clear()
    stage.run_regions(cfg, echo=lines.append)
    assert "nothing to do" in lines[-1] and "0 skipped" in lines[-1]


def test_regions_depth_network_uses_the_gpu_when_there_is_one(tmp_path, monkeypatch):
    """The regions stage's default device is auto: cuda where torch sees a GPU, cpu elsewhere; an explicit
    --device is kept."""
    import torch

    from shared.regions.config import RegionsConfig

    assert RegionsConfig().device == "auto"
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse_depth_spec(f"model:{ckpt}", "kitti", device="auto").device == "cuda"
    assert parse_depth_spec(f"model:{ckpt}", "kitti", device="cpu").device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_depth_spec(f"model:{ckpt}", "kitti", device="auto").device == "cpu"


def test_a_slow_manifest_is_written_less_often_than_every_chunk(city, tmp_path, monkeypatch):
    writes: list[int] = []
    real = stage.write_manifest

    def slow(store, manifest):  # as a big store's manifest would be: much slower than a chunk of frames
        writes.append(len(manifest.get("chunks", {})))
        time.sleep(0.2)
        real(store, manifest)

    monkeypatch.setattr(stage, "write_manifest", slow)
    cfg = config(city, tmp_path, proposals="felzenszwalb", max_frames=12, chunk_size=1)
    store = stage.run_regions(cfg, echo=lambda s: None)
    assert len(writes) < 12  # 12 chunks: the quadratic write-after-every-chunk is gone
    assert writes[-1] == 12 and len(read_manifest(store)["chunks"]) == 12  # the last write lists them all
