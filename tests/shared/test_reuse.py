"""Done records (shared/reuse.py): a finished output is reused only while its config, its inputs and
its own files are as they were."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from shared.config import field
from shared.reuse import done_key, file_stamp, frames_stamp, is_done, manifest_stamp, mark_done, reuse


@dataclass
class Cfg:
    steps: int = field(3, "steps")
    workers: int = field(2, "workers", hash=False)


def _finished(tmp_path, key="k1"):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "a.json").write_text("{}")
    (out / "b.png").write_bytes(b"png")
    mark_done(out / "done.json", key, "stage", Cfg(), {"x": "1"}, [out / "a.json", out / "b.png"])
    return out


def test_key_follows_the_hashed_config_and_the_inputs_only():
    assert done_key(Cfg(), {"ckpt": "10 5"}) == done_key(Cfg(workers=7), {"ckpt": "10 5"})  # hash=False
    assert done_key(Cfg(), {"ckpt": "10 5"}) != done_key(Cfg(steps=4), {"ckpt": "10 5"})
    assert done_key(Cfg(), {"ckpt": "10 5"}) != done_key(Cfg(), {"ckpt": "10 6"})


def test_a_rerun_reuses_and_says_so_in_one_line(tmp_path):
    out = _finished(tmp_path)
    lines: list[str] = []
    assert reuse(out / "done.json", "k1", "stage", out, echo=lines.append)
    assert lines == [f"stage: reusing {out} (inputs unchanged; --force to recompute)"]
    record = json.loads((out / "done.json").read_text())
    assert sorted(record["outputs"]) == ["a.json", "b.png"]  # relative: the tree can move
    assert record["inputs"] == {"x": "1"} and record["stage"] == "stage"


def test_another_key_force_or_a_touched_output_recompute_and_drop_the_record(tmp_path):
    out = _finished(tmp_path)
    assert not reuse(out / "done.json", "k2", "stage", out, echo=print)
    assert not (out / "done.json").exists()  # the run that follows rewrites the outputs
    out = _finished(tmp_path)
    assert not reuse(out / "done.json", "k1", "stage", out, force=True, echo=print)
    out = _finished(tmp_path)
    st = (out / "b.png").stat()
    os.utime(out / "b.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten by another run since
    assert not is_done(out / "done.json", "k1")
    out = _finished(tmp_path)
    (out / "a.json").unlink()
    assert not is_done(out / "done.json", "k1")


def test_a_record_listing_a_file_that_was_not_written_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="never.png"):
        mark_done(tmp_path / "done.json", "k", "stage", Cfg(), {}, [tmp_path / "never.png"])
    assert not (tmp_path / "done.json").exists()


def test_broken_or_foreign_records_are_not_done(tmp_path):
    (tmp_path / "done.json").write_text("{not json")
    assert not is_done(tmp_path / "done.json", "k")
    (tmp_path / "done.json").write_text(json.dumps({"key": "k", "outputs": {}}))  # no format, nothing listed
    assert not is_done(tmp_path / "done.json", "k")
    assert not is_done(tmp_path / "missing.json", "k")


def test_manifest_stamp_ignores_bookkeeping_and_follows_checksums():
    m = {"config_hash": "abc", "config": {"out": "/a", "workers": 2},
         "shards": [{"name": "s0.tar", "sha256": "11", "bytes": 5}, {"name": "s1.tar", "sha256": "22"}]}
    moved = {**m, "config": {"out": "/b", "workers": 8}, "shards": list(reversed(m["shards"]))}
    assert manifest_stamp(m, "shards") == manifest_stamp(moved, "shards")
    changed = {**m, "shards": [{"name": "s0.tar", "sha256": "33"}, m["shards"][1]]}
    assert manifest_stamp(changed, "shards") != manifest_stamp(m, "shards")
    assert manifest_stamp({**m, "config_hash": "abd"}, "shards") != manifest_stamp(m, "shards")
    store = {"config_hash": "r", "chunks": {"chunk_00000.h5": {"sha256": "aa"}}}  # region stores: a dict of chunks
    assert manifest_stamp(store, "chunks") != manifest_stamp({**store, "chunks": {"chunk_00000.h5": {"sha256": "ab"}}},
                                                             "chunks")


def test_file_and_frame_stamps_change_when_a_file_is_rewritten(tmp_path):
    from shared.frames import Frame

    img = tmp_path / "a.png"
    img.write_bytes(b"12345")
    frames = [Frame("s_000000", str(img), "val", "s", 0, 4, 2, 1.0, 2.0, 0.5, 0.5)]
    before, stamp = frames_stamp(frames, ("image", "semantic")), file_stamp(img)
    assert stamp.startswith("5 ") and file_stamp(tmp_path / "none") == "missing"
    img.write_bytes(b"123456")
    assert frames_stamp(frames, ("image", "semantic")) != before and file_stamp(img) != stamp
