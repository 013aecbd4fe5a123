"""Shard writer: webdataset read-back with the schema, determinism, reuse, resume, corrupt-shard rewrite."""
from __future__ import annotations

import dataclasses
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner

from preprocess.shards import ShardsConfig, epoch_groups, plan_shards, run_shards
from shared.frames import DataError, Frame, save_index
from shared.imageio import read_rgb, write_png
from shared.region_store import RegionRecord, chunk_name, write_chunk, write_manifest
from shared.shard_schema import decode_group, source_ids
from shared.stage import output_dir, read_pointer

H, W = 32, 48
NO_AUG = dict(jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0)


def _smooth_image(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    ph = rng.uniform(0, 6.28, 3)
    return np.rint(np.stack([127 + 100 * np.sin(xx / 25 + yy / 30 + ph[c]) for c in range(3)], -1)).astype(np.uint8)


def make_store(root: Path, n_frames: int = 6, seed: int = 0) -> Path:
    """A region store of hand-made frames (smooth images on disk, block regions, per-region depth)."""
    rng = np.random.default_rng(seed)
    store = root / "store"
    store.mkdir(parents=True)
    recs = []
    for i in range(n_frames):
        img_path = root / "images" / f"seq_{i:06d}.png"
        write_png(img_path, _smooth_image(rng))
        reg = np.zeros((H, W), dtype=np.uint16)
        reg[2:20, 3:15] = 1
        reg[10:30, 20:30] = 2
        reg[4:22, 33:45] = 3
        reg[24:31, 2:18] = 4  # 7 px high: filtered out by the demo-scaled 16-px rule? (scaled only at demo sizes)
        depth = rng.uniform(3, 40, 5)[reg].astype(np.float32)
        recs.append(RegionRecord(f"seq_{i:06d}", depth, reg, {"image": str(img_path), "n_regions": 4}))
    entries = {chunk_name(0): write_chunk(store / chunk_name(0), recs[:4]),
               chunk_name(1): write_chunk(store / chunk_name(1), recs[4:])}
    write_manifest(store, {"height": H, "width": W, "config_hash": f"handmade{seed}", "chunks": entries})
    return store


def _cfg(tmp: Path, store: Path, **kw) -> ShardsConfig:
    base = dict(dataset="folder", out=str(tmp / "runs"), regions=str(store), group_size=2, epochs=2,
                groups_per_shard=2, workers=1, **NO_AUG)
    base.update(kw)
    return ShardsConfig(**base)


def _write_index(cfg: ShardsConfig, n: int, cy: float, val: tuple[int, ...] = ()) -> None:
    frames = [Frame(f"seq_{i:06d}", f"/x/{i}.png", "val" if i in val else "train", "seq", i, W, H, 1.0, 2.0, 0.5, cy)
              for i in range(n)]
    save_index(frames, output_dir(cfg, "index.jsonl"))


def _read_all(out: Path) -> list[dict]:
    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def _echo(lines: list[str]):
    return lambda s: lines.append(s)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    store = make_store(tmp)
    cfg = _cfg(tmp, store, jpeg_quality=100)  # near-lossless, so colours can be checked after decoding
    _write_index(cfg, 6, cy=0.4)
    lines: list[str] = []
    out = run_shards(cfg, _echo(lines))
    return tmp, store, cfg, out, lines


def test_groups_cover_every_frame_once_per_epoch():
    ids = [f"f{i}" for i in range(11)]
    e0, e1 = epoch_groups(ids, 3, 0, 7), epoch_groups(ids, 3, 1, 7)
    assert len(e0) == 3 and all(len(g) == 3 for g in e0)
    assert len({f for g in e0 for f in g}) == 9 and e0 != e1
    assert epoch_groups(ids, 3, 0, 7) == e0 and epoch_groups(ids, 3, 0, 7, max_groups=2) == e0[:2]
    plans = plan_shards(ids, 3, 2, 7, 0, 2)
    assert [(p.name, p.epoch, p.first_group, len(p.groups)) for p in plans] == [
        ("shard-000000.tar", 0, 0, 2), ("shard-000001.tar", 0, 2, 1),
        ("shard-000002.tar", 1, 0, 2), ("shard-000003.tar", 1, 2, 1)]


def test_shards_read_back_through_webdataset_with_the_schema(written):
    tmp, store, cfg, out, _ = written
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["n_groups"] == 6 and man["group_size"] == 2 and man["images_per_group"] == 4
    assert (man["height"], man["width"]) == (H, W) and man["region_store"]["config_hash"] == "handmade0"
    assert [s["name"] for s in man["shards"]] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar",
                                                   "shard-000003.tar"]
    assert out.name.startswith("depth-") and man["config_hash"] in out.name
    assert read_pointer(cfg, "shards", "depth") == out.resolve()
    samples = _read_all(out)
    assert [s["__key__"] for s in samples] == [f"e{e:02d}_g{g:07d}" for e in range(2) for g in range(3)]
    src = {f"seq_{i:06d}": read_rgb(tmp / "images" / f"seq_{i:06d}.png") for i in range(6)}
    epoch_frames: dict[int, list[str]] = {0: [], 1: []}
    for s in samples:
        g = decode_group(s)
        assert g.images.shape == (4, H, W, 3)
        epoch_frames[int(s["__key__"][1:3])] += g.meta["sources"]
        sid = source_ids(g.layers, g.meta)
        assert (sid >= 0).all()
        f, rest = np.divmod(sid, H * W)
        sy, sx = np.divmod(rest, W)
        frames = np.stack([src[fid] for fid in g.meta["sources"]])
        # colour augmentation off: every pixel shows its source pixel, up to JPEG and interpolation error
        err = np.abs(g.images.astype(int) - frames[f, sy, sx].astype(int)).mean(-1)
        # (the exact, pre-JPEG check is in test_copy_paste; JPEG's 4:2:0 chroma smears colours across
        # paste edges, which on a 32x48 image are a good part of the pixels: hence medians)
        assert np.median(err) <= 2
        pasted = g.layers > 0
        base = np.array([m["base"] for m in g.meta["images"]])
        as_if_background = np.abs(g.images.astype(int) - frames[base].astype(int)).mean(-1)
        assert pasted.any() and np.median(err[pasted]) < 0.5 * np.median(as_if_background[pasted])
        # pixel-level positives exist across images: pasted pixels of one frame reappear elsewhere
        assert len(np.intersect1d(np.unique(sid[0]), np.unique(sid[1]))) > 0 or len(np.unique(sid)) < sid.size
    assert sorted(epoch_frames[0]) == sorted(epoch_frames[1]) == [f"seq_{i:06d}" for i in range(6)]
    # tar members carry no time or user: byte-identical reruns
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert all(m.mtime == 0 and m.uname == "" and m.uid == 0 for m in tar.getmembers())


def test_horizon_comes_from_the_frame_index(written):
    _, _, _, out, _ = written
    man = json.loads((out / "manifest.json").read_text())
    assert man["params"]["height_tolerance"] == 16  # not a demo size: the paper's value


def test_the_stage_says_what_it_will_do_first_and_what_it_wrote_last(written):
    *_, out, lines = written
    text = "\n".join(lines).splitlines()
    # 6 frames, M=2, 2 epochs: 3 groups of 4 images per epoch, 2 groups per shard
    assert text[0].startswith("shards: plan: 6 groups (24 images) in 4 shards to write (0 shards already done) "
                              "from 6 frames")
    assert text[-1].startswith(f"shards: wrote 4 shards (6 groups, 24 images) into {out} in ")


def test_rerun_reuses_and_same_seed_gives_identical_bytes_with_any_worker_count(written):
    tmp, store, cfg, out, _ = written
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    lines: list[str] = []
    assert run_shards(cfg, _echo(lines)) == out
    assert "reusing" in lines[-1]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")} == before
    other = dataclasses.replace(cfg, out=str(tmp / "runs2"), workers=2)
    _write_index(other, 6, cy=0.4)
    out2 = run_shards(other, _echo([]))
    assert out2.name == out.name
    for p in out.glob("shard-*.tar"):
        assert (out2 / p.name).read_bytes() == p.read_bytes()
    seeded = run_shards(dataclasses.replace(cfg, out=str(tmp / "runs3"), seed=1), _echo([]))
    assert seeded.name != out.name
    # other horizons (here: no frame index, mid-height) are another output
    lines = []
    moved = run_shards(dataclasses.replace(cfg, out=str(tmp / "runs4"), epochs=1), _echo(lines))
    assert "horizon at mid-height" in lines[0]
    _write_index(dataclasses.replace(cfg, out=str(tmp / "runs5")), 6, cy=0.4)
    assert run_shards(dataclasses.replace(cfg, out=str(tmp / "runs5"), epochs=1), _echo([])).name != moved.name
    assert (seeded / "shard-000000.tar").read_bytes() != (out / "shard-000000.tar").read_bytes()


def test_killed_run_resumes_and_corrupt_shards_are_rewritten(tmp_path):
    store = make_store(tmp_path, seed=1)
    cfg = _cfg(tmp_path, store, epochs=1, groups_per_shard=1)
    out = run_shards(cfg, _echo([]))
    good = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    assert len(good) == 3
    # a killed run: the last shard never got listed, a half-written temp file lies around
    man = json.loads((out / "manifest.json").read_text())
    man["shards"] = man["shards"][:2]
    man["complete"] = False
    (out / "manifest.json").write_text(json.dumps(man))
    (out / "shard-000002.tar").unlink()
    (out / ".shard-000002.tar.4242.tmp").write_bytes(b"half")  # shared.atomic's name in a killed process
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    lines: list[str] = []
    run_shards(cfg, _echo(lines))
    assert any("1 groups (4 images) in 1 shards to write (2 shards already done)" in s for s in lines)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-00000[01].tar")} == mtimes
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    # a flipped byte and a truncation are caught by the checksum and rewritten
    p0, p1 = out / "shard-000000.tar", out / "shard-000001.tar"
    data = bytearray(p0.read_bytes())
    data[700] ^= 0xFF
    p0.write_bytes(bytes(data))
    p1.write_bytes(good["shard-000001.tar"][:1000])
    lines = []
    run_shards(cfg, _echo(lines))
    assert sum("checksum" in s for s in lines) == 2
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == good
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_bad_source_images_are_skipped_and_listed_or_strict(tmp_path):
    store = make_store(tmp_path, seed=2)
    (tmp_path / "images" / "seq_000003.png").unlink()  # missing
    truncated = tmp_path / "images" / "seq_000001.png"
    truncated.write_bytes(truncated.read_bytes()[:200])  # truncated: the header still reads
    with pytest.raises(DataError, match="(?s)--strict: 2 bad source image.*seq_000001.png.*seq_000003.png"):
        run_shards(_cfg(tmp_path, store, strict=True), _echo([]))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.tar"))  # nothing written
    lines: list[str] = []
    out = run_shards(_cfg(tmp_path, store), _echo(lines))
    man = json.loads((out / "manifest.json").read_text())
    assert [s["frame"] for s in man["skipped"]] == ["seq_000001", "seq_000003"]
    assert "truncated" in man["skipped"][0]["problem"] and "not found" in man["skipped"][1]["problem"]
    assert any("left out 2 frame(s)" in ln for ln in lines)
    used = {src for s in _read_all(out) for src in json.loads(s["meta.json"])["sources"]}
    assert used and not used & {"seq_000001", "seq_000003"}
    with pytest.raises(DataError, match="group-size"):
        run_shards(_cfg(tmp_path, store, group_size=5), _echo([]))


def test_cli_registered_with_help_and_demo_preset(tmp_path):
    from preprocess.__main__ import main

    r = CliRunner().invoke(main, ["shards", "--help"])
    assert r.exit_code == 0 and "--group-size" in r.output and "--rounds" in r.output
    store = make_store(tmp_path, seed=3)
    r = CliRunner().invoke(main, ["shards", "--dataset", "folder", "--out", str(tmp_path / "runs"),
                                  "--regions", str(store), "--demo-size", "tiny", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "preset: group_size=4, epochs=2, max_groups=2, groups_per_shard=1" in r.output
    out = read_pointer(ShardsConfig(dataset="folder", out=str(tmp_path / "runs"), demo_size="tiny"), "shards", "depth")
    man = json.loads((out / "manifest.json").read_text())
    assert man["group_size"] == 4 and man["n_groups"] == 2 and len(man["shards"]) == 2
    assert man["params"]["height_tolerance"] == 1
    r = CliRunner().invoke(main, ["shards", "--dataset", "folder", "--out", str(tmp_path / "runs"),
                                  "--regions", str(store), "--demo-size", "tiny", "--group-size", "9"])
    assert r.exit_code != 0 and "group-size 9" in r.output


def test_correspondence_tracks_join_pixels_showing_the_same_source_pixel():
    from preprocess.shard_inspect import pick_correspondences

    sid = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    layers = np.zeros((3, 4, 5), dtype=np.uint8)
    sid[1, 2, 3] = sid[0, 1, 1]  # pasted into image 1 ...
    sid[2, 0, 4] = sid[0, 1, 1]  # ... and into image 2
    layers[1, 2, 3] = layers[2, 0, 4] = 1
    tracks = pick_correspondences(sid, layers, 3, seed=0)
    assert tracks == [[(0, 1.0, 1.0), (1, 3.0, 2.0), (2, 4.0, 0.0)]]
    assert pick_correspondences(sid, np.zeros_like(layers), 3, seed=0) == []


def test_inspect_renders_a_contact_sheet_of_a_group(written):
    from preprocess.__main__ import main
    from shared.imageio import read_rgb

    tmp, _, cfg, out, _ = written
    png = tmp / "sheet.png"
    r = CliRunner().invoke(main, ["inspect", "--dataset", "folder", "--out", cfg.out, "--key", "e01_g0000002",
                                  "--tile-width", "96", "--output", str(png)])
    assert r.exit_code == 0, r.output
    assert "e01_g0000002 from shard-000003.tar" in r.output
    sheet = read_rgb(png)
    assert sheet.shape[1] == 2 * (96 + 4) + 4 and sheet.shape[0] > 4 * 64  # 2 rounds x (images + regions) rows
    r = CliRunner().invoke(main, ["inspect", "--dataset", "folder", "--out", cfg.out, "--key", "e05_g0000000"])
    assert r.exit_code != 0 and "no finished shard holds group e05_g0000000" in r.output


@pytest.mark.parametrize("dataset", ["kitti", "cityscapes"])
def test_real_sample_frames_end_to_end(tmp_path, sample_data, dataset):
    """Real images through the stage: index (horizon from the real K), store, shards, read-back."""
    from skimage.segmentation import felzenszwalb

    from shared.datasets import build_index

    root = sample_data / dataset
    frames = [f for f in build_index(dataset, root) if f.split == "train"][:5]
    h, w = (48, 160) if dataset == "kitti" else (48, 96)
    recs = []
    for f in frames:
        rgb = read_rgb(f.image, (h, w))
        regions = (felzenszwalb(rgb, scale=60, sigma=0.8, min_size=20) + 1).astype(np.uint16)
        # a level ground plane below the horizon, far above it: depth = fy * 1.65 m / (row - horizon)
        rows = np.arange(h)[:, None] + 0.5 - f.cy * h
        depth = np.where(rows > 0.5, f.fy * h * 1.65 / np.maximum(rows, 0.5), 80.0) * np.ones((1, w))
        recs.append(RegionRecord(f.id, depth.astype(np.float32), regions, {"image": f.image}))
    store = tmp_path / "store"
    store.mkdir()
    write_manifest(store, {"height": h, "width": w, "config_hash": "real",
                           "chunks": {chunk_name(0): write_chunk(store / chunk_name(0), recs)}})
    cfg = ShardsConfig(dataset=dataset, data_root=str(root), out=str(tmp_path / "runs"), regions=str(store),
                       group_size=2, epochs=1, groups_per_shard=1, workers=1, jpeg_quality=100, **NO_AUG)
    lines: list[str] = []
    out = run_shards(cfg, _echo(lines))
    assert not any("mid-height" in s for s in lines)  # the horizons came from the real intrinsics
    samples = _read_all(out)
    assert len(samples) == 2
    src = {f.id: read_rgb(f.image, (h, w)) for f in frames}
    for s in samples:
        g = decode_group(s)
        sid = source_ids(g.layers, g.meta)
        assert (sid >= 0).all() and (g.layers > 0).any()
        f_idx, rest = np.divmod(sid, h * w)
        sy, sx = np.divmod(rest, w)
        frames_arr = np.stack([src[fid] for fid in g.meta["sources"]])
        err = np.abs(g.images.astype(int) - frames_arr[f_idx, sy, sx].astype(int)).mean(-1)
        assert np.median(err) <= 3


def test_only_the_chosen_splits_are_synthesised(tmp_path):
    store = make_store(tmp_path, seed=4)
    cfg = _cfg(tmp_path, store, epochs=1, groups_per_shard=4)
    _write_index(cfg, 6, cy=0.5, val=(1, 4))
    out = run_shards(cfg, _echo([]))
    used = [f for s in _read_all(out) for f in decode_group(s).meta["sources"]]
    assert sorted(used) == ["seq_000000", "seq_000002", "seq_000003", "seq_000005"]
    both = run_shards(dataclasses.replace(cfg, splits=("train", "val")), _echo([]))
    assert both != out and len(_read_all(both)) == 3
    with pytest.raises(DataError, match="fewer than --group-size 5"):
        run_shards(dataclasses.replace(cfg, group_size=5), _echo([]))


def test_automatic_shard_size_respects_the_size_cap_and_the_minimum_shard_count(tmp_path):
    store = make_store(tmp_path, n_frames=8, seed=5)
    base = dict(epochs=1, groups_per_shard=0)
    # 4 groups per epoch; at least 2 shards -> 2 groups per shard
    man = json.loads((run_shards(_cfg(tmp_path, store, min_shards=2, **base), _echo([])) / "manifest.json").read_text())
    assert man["groups_per_shard"] == 2 and [s["samples"] for s in man["shards"]] == [2, 2]
    # a size cap below one group's size -> one group per shard
    man = json.loads((run_shards(_cfg(tmp_path, store, min_shards=1, shard_mb=0.001, **base), _echo([]))
                      / "manifest.json").read_text())
    assert man["groups_per_shard"] == 1 and len(man["shards"]) == 4


def test_the_plan_names_the_depth_the_region_store_was_built_from(tmp_path):
    from preprocess.shards import store_depth

    assert store_depth(tmp_path) == "unknown: the store has no readable config.json"
    (tmp_path / "config.json").write_text(json.dumps({"config": {"depth": "model:runs/x/depth/run-1/checkpoint.pt"}}))
    assert store_depth(tmp_path) == "model:runs/x/depth/run-1/checkpoint.pt"
    (tmp_path / "config.json").write_text(json.dumps({"config": {"depth": ""}}))
    assert store_depth(tmp_path) == "the dataset's default (exact depth on the synthetic city)"


def test_a_finished_set_is_reused_without_reading_its_sources(tmp_path, monkeypatch):
    import preprocess.shards as shards

    store = make_store(tmp_path, seed=4)
    out = run_shards(_cfg(tmp_path, store), _echo([]))
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    decoded: list[str] = []
    real = shards.read_rgb
    monkeypatch.setattr(shards, "read_rgb", lambda path, *a: decoded.append(path) or real(path, *a))
    (tmp_path / "images" / "seq_000002.png").unlink()  # a source gone after the set was finished
    lines: list[str] = []
    assert run_shards(_cfg(tmp_path, store), _echo(lines)) == out
    assert decoded == [] and any("reusing" in s for s in lines) and not any("left out" in s for s in lines)
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.tar")} == before
    # a damaged shard is not a finished set: the usual path checks the sources and rewrites it
    (out / "shard-000000.tar").write_bytes(b"damaged")
    run_shards(_cfg(tmp_path, store), _echo(lines := []))
    assert decoded and any("left out 1 frame(s)" in s for s in lines)
