"""Damaged data and bad input as a user meets them, through the real commands on the tiny synthetic
city or a small folder dataset: each test is one row of the "When things go wrong" table in the
README (docs/design.md#reliability). Kills and resumes: tests/test_kill_resume.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shared.frames import DataError
from shared.imageio import write_png
from shared.region_store import RegionStore
from shared.stage import StageConfig, read_pointer


def invoke(package: str, *args: str):
    from importlib import import_module

    return CliRunner().invoke(import_module(f"{package}.__main__").main, list(args))


def error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


def folder_images(root: Path, n: int, size=(48, 96), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        yy, xx = np.mgrid[0:size[0], 0:size[1]]
        img = np.stack([(xx * 2 + i * 9) % 256, (yy * 3) % 256, rng.integers(0, 256, size)], -1).astype(np.uint8)
        paths.append(root / f"{i:04d}.png")
        write_png(paths[-1], img)
    return paths


# ---------------------------------------------------------------------------------------------
# bad frames are skipped and listed; --strict stops before writing


def test_a_zero_byte_image_is_left_out_of_the_index_and_listed(tmp_path):
    images = folder_images(tmp_path / "imgs", 5)
    images[2].write_bytes(b"")  # zero bytes
    out = tmp_path / "out"
    r = invoke("preprocess", "index", "--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "left out 1 unreadable image" in r.output and "0002.png" in r.output
    frames = {f["id"]: f for f in map(json.loads, (out / "folder" / "index.jsonl").read_text().splitlines())}
    assert sorted(frames) == ["imgs_0000", "imgs_0001", "imgs_0003", "imgs_0004"]
    assert frames["imgs_0001"]["next"] is None and frames["imgs_0003"]["prev"] is None  # no neighbour across the gap
    skipped = json.loads((out / "folder" / "index.skipped.json").read_text())
    assert [Path(s["path"]).name for s in skipped] == ["0002.png"]

    strict = tmp_path / "strict"
    r = invoke("preprocess", "index", "--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--out",
               str(strict), "--strict")
    assert r.exit_code == 1 and "--strict: 1 unreadable image" in error_line(r.output)
    assert not (strict / "folder" / "index.jsonl").exists()  # stopped before writing


def test_verify_finds_a_truncated_image_the_header_does_not_show(tmp_path):
    images = folder_images(tmp_path / "imgs", 4)
    images[1].write_bytes(images[1].read_bytes()[:300])
    out = tmp_path / "out"
    args = ["index", "--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--out", str(out)]
    assert invoke("preprocess", *args).exit_code == 0
    assert len((out / "folder" / "index.jsonl").read_text().splitlines()) == 4  # headers read fine
    r = invoke("preprocess", *args, "--verify")
    assert r.exit_code == 0 and "truncated" in r.output
    assert len((out / "folder" / "index.jsonl").read_text().splitlines()) == 3


def test_a_frame_of_another_size_is_skipped_naming_both_sizes_not_stretched(tmp_path):
    folder_images(tmp_path / "imgs", 4)
    write_png(tmp_path / "imgs" / "0004.png", np.zeros((50, 96, 3), np.uint8))  # one frame of another size
    depth = tmp_path / "depth"
    depth.mkdir()
    for i in range(5):
        np.save(depth / f"{i:04d}.npy", np.full((48, 96), 5.0 + i, np.float32))
    from preprocess.regions import RegionsConfig, run_regions

    cfg = RegionsConfig(dataset="folder", data_root=str(tmp_path / "imgs"), out=str(tmp_path / "out"),
                        demo_size="tiny", depth=f"files:{depth}", proposals="felzenszwalb", size="48x96", workers=1)
    store = run_regions(cfg, echo=lambda s: None)
    skipped = json.loads((store / "manifest.json").read_text())["skipped"]
    assert [s["frame"] for s in skipped] == ["imgs_0004"]
    assert "frame is 96x50, the other 4 frame(s) of sequence imgs are 96x48" in skipped[0]["problem"]


def test_a_stage_that_produced_nothing_exits_non_zero_and_is_not_complete_on_rerun(tmp_path):
    folder_images(tmp_path / "imgs", 3)
    (tmp_path / "nodepth").mkdir()  # a depth folder without a map for any frame
    args = ["regions", "--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"),
            "--demo-size", "tiny", "--depth", f"files:{tmp_path / 'nodepth'}", "--workers", "1"]
    for attempt in range(2):
        r = invoke("preprocess", *args)
        assert r.exit_code == 1, r.output
        assert "every frame was skipped (3)" in r.output and "no depth map for frame" in r.output
        assert "already complete" not in r.output
    assert not (tmp_path / "out" / "folder-tiny" / "regions" / "depth.current").exists()  # nothing to follow


def test_a_truncated_image_is_skipped_by_depth_training_and_inference(tiny_city, tmp_path):
    import torch

    from preprocess.depth_inference import DepthInferConfig, infer_dataset
    from shared.datasets.synthetic import read_synthetic
    from shared.frames import DataError
    from train.depth import DepthTrainConfig, train

    city = tmp_path / "city"
    shutil.copytree(tiny_city, city)
    bad = city / "seq00" / "rgb" / "000002.png"
    bad.write_bytes(bad.read_bytes()[:500])  # header intact: the index keeps it, decoding fails
    frames = read_synthetic(city)
    torch.set_num_threads(1)
    common = dict(data_root=str(city), demo_size="tiny", max_steps=2, height=64, width=64, batch_size=2,
                  image_every=0, log_every=1)
    with pytest.raises(DataError, match="000002.png"):
        train(DepthTrainConfig(out=str(tmp_path / "strict"), on_bad="error", **common), frames, echo=lambda s: None)
    assert not list((tmp_path / "strict").rglob("checkpoint.pt"))
    said: list[str] = []
    ckpt = train(DepthTrainConfig(out=str(tmp_path / "runs"), **common), frames, echo=said.append)
    assert any("000002.png" in s and "truncated" in s for s in said)
    config = json.loads((ckpt.parent / "config.json").read_text())
    assert any("000002.png" in s for s in config["skipped"])
    assert config["targets"] == 1  # train split = seq00, targets 1..4; 1, 2 and 3 touch frame 2

    cfg = DepthInferConfig(out=str(tmp_path / "runs"), data_root=str(city), demo_size="tiny", device="cpu", workers=1)
    n, skipped = infer_dataset(cfg, frames, ckpt, tmp_path / "pred")
    assert n == 11 and [Path(s["path"]).name for s in skipped] == ["000002.png"]


# ---------------------------------------------------------------------------------------------
# damaged stores, housekeeping, moved trees


@pytest.fixture
def tiny_run(tiny_city, tmp_path) -> Path:
    """OUT with the tiny city inside (as `make` renders it) and its regions and shards made."""
    out = tmp_path / "runs"
    shutil.copytree(tiny_city, out / "synthetic" / "city-tiny")
    args = ["--dataset", "synthetic", "--out", str(out), "--demo-size", "tiny", "--workers", "1"]
    assert invoke("preprocess", "regions", *args, "--chunk-size", "4").exit_code == 0
    r = invoke("preprocess", "shards", *args)
    assert r.exit_code == 0, r.output
    return out


def test_a_damaged_region_chunk_stops_shards_naming_the_chunk(tiny_run):
    cfg = StageConfig(dataset="synthetic", out=str(tiny_run), demo_size="tiny")
    store = read_pointer(cfg, "regions", "depth")
    chunk = store / "chunk_00001.h5"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))
    shards = read_pointer(cfg, "shards", "depth")
    shutil.rmtree(shards)  # so that the shards must be made again from the store
    r = invoke("preprocess", "shards", "--dataset", "synthetic", "--out", str(tiny_run), "--demo-size", "tiny",
               "--workers", "1")
    line = error_line(r.output)
    assert r.exit_code == 1 and str(chunk) in line and "damaged" in line and "make regions" in line
    assert "Traceback" not in r.output


def test_a_damaged_shard_stops_training_then_make_shards_repairs_it(tiny_run):
    """A same-size shard with one flipped byte: `make train` stops naming the shard and the repair,
    none of its groups trained on; `make shards` rewrites that shard alone; training then runs."""
    import torch

    torch.set_num_threads(1)
    cfg = StageConfig(dataset="synthetic", out=str(tiny_run), demo_size="tiny")
    shard_set = read_pointer(cfg, "shards", "depth")
    shard = shard_set / "shard-000001.tar"
    good, other = shard.read_bytes(), (shard_set / "shard-000000.tar").stat().st_mtime_ns
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    shard.write_bytes(bytes(bad))
    train = ["contrastive", "--dataset", "synthetic", "--out", str(tiny_run), "--demo-size", "tiny", "--workers", "1",
             "--no-progress"]
    r = invoke("train", *train)
    line = error_line(r.output)
    assert r.exit_code == 1 and str(shard) in line and "damaged" in line and "none of its groups" in line
    assert f"make shards DATASET=synthetic DEMO_SIZE=tiny OUT={tiny_run}" in line
    r = invoke("preprocess", "shards", "--dataset", "synthetic", "--out", str(tiny_run), "--demo-size", "tiny",
               "--workers", "1")
    assert r.exit_code == 0 and "does not match its manifest checksum" in r.output and "wrote 1 shards" in r.output
    assert shard.read_bytes() == good and (shard_set / "shard-000000.tar").stat().st_mtime_ns == other
    r = invoke("train", *train)
    assert r.exit_code == 0 and "finished" in r.output, r.output


def test_a_moved_output_tree_reads_its_own_inputs(tiny_run, tmp_path):
    """Pointers, the frame index and the manifests hold paths relative to the output tree: after
    `mv`, the stages find everything in the new place (the old one is gone) and a shard rewritten
    there is byte-identical to the one it replaces."""
    cfg = StageConfig(dataset="synthetic", out=str(tiny_run), demo_size="tiny")
    pointer = tiny_run / "synthetic-tiny" / "shards" / "depth.current"
    assert pointer.read_text().strip().startswith("depth-")  # relative to its folder
    index = (tiny_run / "synthetic-tiny" / "index.jsonl").read_text()
    assert str(tiny_run) not in index and "../synthetic/city-tiny/" in index
    shard = read_pointer(cfg, "shards", "depth") / "shard-000001.tar"
    before = shard.read_bytes()

    moved = tmp_path / "elsewhere" / "runs"
    shutil.move(str(tiny_run), str(moved))
    assert not tiny_run.exists()
    cfg = StageConfig(dataset="synthetic", out=str(moved), demo_size="tiny")
    (read_pointer(cfg, "shards", "depth") / "shard-000001.tar").unlink()
    r = invoke("preprocess", "shards", "--dataset", "synthetic", "--out", str(moved), "--demo-size", "tiny",
               "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "wrote 1 shards" in r.output and str(moved) in r.output
    assert (read_pointer(cfg, "shards", "depth") / "shard-000001.tar").read_bytes() == before


def tree_bytes(out: Path) -> dict[str, bytes]:
    """Every file of an output tree by its path inside the tree; configs and manifests without the OUT
    they record (a rerun in a new place may refresh that field, nothing else)."""
    def content(p: Path) -> bytes:
        if p.suffix != ".json":
            return p.read_bytes()
        data = json.loads(p.read_text())
        for d in (data, data.get("config") if isinstance(data, dict) else None):
            if isinstance(d, dict):
                d.pop("out", None)
        return json.dumps(data, sort_keys=True).encode()

    return {str(p.relative_to(out)): content(p) for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_copied_output_tree_reruns_every_stage_as_nothing_to_do(tiny_run, tmp_path):
    """Copy a finished OUT, remove the original, rerun every stage in the copy: each one reuses what it
    finds, names the new place, and no byte changes (the region chunks used to record absolute image
    paths, so the copy's stores named the old OUT's images)."""
    train = ["--dataset", "synthetic", "--demo-size", "tiny", "--workers", "1", "--no-progress", "--max-steps", "1"]
    assert invoke("train", "contrastive", "--out", str(tiny_run), *train).exit_code == 0
    copy = tmp_path / "copy" / "runs"
    shutil.copytree(tiny_run, copy)
    before = tree_bytes(copy)
    shutil.rmtree(tiny_run)
    args = ["--dataset", "synthetic", "--out", str(copy), "--demo-size", "tiny", "--workers", "1"]
    for package, stage, extra, said in (("preprocess", "synth", (), "nothing to do"),
                                        ("preprocess", "regions", ("--chunk-size", "4"), "nothing to do"),
                                        ("preprocess", "shards", (), "reusing"),
                                        ("train", "contrastive", train[6:], "nothing to do")):
        r = invoke(package, stage, *args, *extra)
        assert r.exit_code == 0 and said in r.output and str(copy) in r.output, r.output
        assert str(tiny_run) not in r.output, r.output
    assert tree_bytes(copy) == before
    with RegionStore(read_pointer(StageConfig(dataset="synthetic", out=str(copy), demo_size="tiny"), "regions",
                                  "depth")) as store:
        assert all(store.attrs(f)["image"].startswith(str(copy)) for f in store.frame_ids())


def test_the_same_data_under_two_output_roots_gets_the_same_shard_set_name(tiny_run, tiny_city, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_city, other / "synthetic" / "city-tiny")
    args = ["--dataset", "synthetic", "--out", str(other), "--demo-size", "tiny", "--workers", "1"]
    assert invoke("preprocess", "regions", *args, "--chunk-size", "4").exit_code == 0
    assert invoke("preprocess", "shards", *args).exit_code == 0
    names = [(out / "synthetic-tiny" / "shards" / "depth.current").read_text() for out in (tiny_run, other)]
    assert names[0] == names[1]
    stores = [read_pointer(StageConfig(dataset="synthetic", out=str(out), demo_size="tiny"), "regions", "depth")
              for out in (tiny_run, other)]
    assert [p.read_bytes() for p in sorted(stores[0].glob("chunk_*.h5"))] == \
        [p.read_bytes() for p in sorted(stores[1].glob("chunk_*.h5"))]


def test_a_damaged_chunk_in_a_copied_tree_names_the_copy_in_its_repair(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    store = read_pointer(StageConfig(dataset="synthetic", out=str(copy), demo_size="tiny"), "regions", "depth")
    chunk = store / "chunk_00000.h5"
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(DataError) as e, RegionStore(store) as rs:
        rs.read(rs.frame_ids()[0])
    assert f"OUT={copy}" in str(e.value) and f"OUT={tiny_run} " not in str(e.value) + " "


def test_old_absolute_pointers_are_still_read(tmp_path):
    cfg = StageConfig(dataset="synthetic", out=str(tmp_path), demo_size="tiny")
    target = tmp_path / "synthetic-tiny" / "regions" / "depth-abc"
    target.mkdir(parents=True)
    (target.parent / "depth.current").write_text(str(target.resolve()) + "\n")
    assert read_pointer(cfg, "regions", "depth") == target.resolve()


def test_stale_temporaries_of_killed_saves_go_and_live_ones_stay(tmp_path):
    import os
    import subprocess
    import sys

    from shared.atomic import remove_stale_temporaries, write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process id that no longer runs
    killed = tmp_path / f".checkpoint.pt.{dead}.tmp"
    killed.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"  # a writer that still runs
    live.write_bytes(b"in progress")
    assert remove_stale_temporaries(tmp_path) == [killed]
    assert live.exists() and not killed.exists()
    other = tmp_path / f".log.jsonl.{dead}.tmp"
    other.write_bytes(b"x")
    write_text(tmp_path / "log.jsonl", "{}\n")  # the next write of a file clears its killed writes
    assert not other.exists()


def test_a_partial_last_log_line_is_trimmed_on_resume(tmp_path):
    from shared.checkpoint import trim_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    assert [r["step"] for r in trim_log(log, 2)] == [1, 2]
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def test_a_finished_tree_moved_to_read_only_storage_is_used_as_it_is(tiny_run, tmp_path, monkeypatch):
    """After a move the manifests' and configs' OUT is stale, but a read-only copy cannot be
    refreshed: the finished store and shard set are used as they are, with a note."""
    import errno

    from shared import atomic

    moved = tmp_path / "archive"
    shutil.move(str(tiny_run), str(moved))

    def read_only(path, fsync=False):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "atomic_path", read_only)
    args = ["--dataset", "synthetic", "--out", str(moved), "--demo-size", "tiny", "--workers", "1"]
    r = invoke("preprocess", "regions", *args, "--chunk-size", "4")
    assert r.exit_code == 0 and "already complete" in r.output and "note:" in r.output, r.output
    r = invoke("preprocess", "shards", *args)
    assert r.exit_code == 0 and "reusing" in r.output and "note:" in r.output, r.output
    r = invoke("preprocess", "regions", *args, "--chunk-size", "3")  # other settings: something to write
    assert r.exit_code == 1 and "read-only filesystem" in error_line(r.output)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_prints_one_line_saying_what_was_kept_and_how_to_resume(tiny_city, tmp_path, workers):
    """Ctrl-C (SIGINT to the whole process group, workers included) mid-stage: exit code 130 and, instead
    of click's bare "Aborted!" or workers' tracebacks, one line naming what was kept and the command that
    resumes; that command, run as printed, finishes the stage. One worker: the tasks run in the stage's
    own process; two: the interrupt comes from a worker. The stage starts with SIGINT at its default, as
    from a terminal: an ignored SIGINT is inherited (an engine started earlier in the suite leaves it
    ignored in this process, and Python then keeps it ignored)."""
    import os
    import shlex
    import signal
    import subprocess
    import sys

    out = tmp_path / "runs"
    shutil.copytree(tiny_city, out / "synthetic" / "city-tiny")
    args = ["regions", "--dataset", "synthetic", "--out", str(out), "--demo-size", "tiny", "--workers", workers,
            "--chunk-size", "2"]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "CPCDR_KILL_AT": "2", "CPCDR_KILL_SIGNAL": "INT"}  # the second frame a worker finishes
    r = subprocess.run([sys.executable, "-m", "preprocess", *args], cwd=root, env=env, capture_output=True, text=True,
                       start_new_session=True, timeout=300,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    said = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip() and "frame/s]" not in ln
            and not ln.startswith("regions:")]
    assert r.returncode == 130 and len(said) == 1, r.stderr
    assert said[0].startswith(f"interrupted: the finished work is kept in {out}/synthetic-tiny ")
    assert "Aborted" not in r.stderr and "Traceback" not in r.stderr
    resume = shlex.split(said[0].split("resume with `")[1].rstrip("`"))
    assert resume[:3] == ["python", "-m", "preprocess"] and resume[3:] == args
    done = subprocess.run([sys.executable, *resume[1:]], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "regions: wrote" in done.stdout, done.stdout + done.stderr
