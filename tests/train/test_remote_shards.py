"""Shard sets read from where they live: an http server on 127.0.0.1 and a pipe: command give the
batches of the local folder, the trainer runs from a URL, and a shard damaged on the server (one
flipped byte, same size) stops the stream with an error that names its URL."""
from __future__ import annotations

import functools
import http.server
import json
import math
import shutil
import threading
from pathlib import Path

import pytest
import torch

from shared.frames import DataError
from tests.fixtures.toy_shards import build_shard_set
from train import contrastive as C
from train.shard_loader import (Augment, ShardStream, check_batch, make_loader, open_shard_set, plan_epoch,
                                verified_samples)
from train.shard_reader import open_url

H, W = 64, 128


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder served, base URL): a static file server on a free port of 127.0.0.1, stopped at the end.
    The folder holds `set/` (a toy shard set) and `bad/` (its copy with one byte flipped)."""
    top = tmp_path_factory.mktemp("www")
    good = build_shard_set(top / "set", n_groups=4, n_shards=2)
    bad = top / "bad"
    shutil.copytree(good, bad)
    p = bad / "shard-000001.tar"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01  # in the tar's end blocks: the tar still parses, only the checksum can tell
    p.write_bytes(bytes(data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(top)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield top, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def batches(location: str, workers: int = 0) -> list[dict]:
    plan = plan_epoch(open_shard_set(location), 0, seed=5, groups_per_step=1, workers=max(workers, 1))
    stream = ShardStream(plan, 0, seed=5, groups_per_step=1, aug=Augment(H, W), features_per_step=20000,
                         lam=0.5, shuffle_buffer=2)
    return [check_batch(b) for b in make_loader(stream, workers, pin_memory=False)]  # as the trainer reads them


def same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for k in ("images", "pixel_index", "pixel_group", "region_index", "region_group"):
            assert torch.equal(x[k], y[k]), k


def test_manifest_and_batches_over_http_and_pipe_equal_the_folders(served):
    top, base = served
    local = open_shard_set(top / "set")
    for location in (f"{base}/set", f"{base}/set/", f"pipe:cat {top}/set/{{name}}"):
        remote = open_shard_set(location)
        assert (remote.height, remote.width, remote.n_groups, remote.shards, remote.config_hash) == \
            (local.height, local.width, local.n_groups, local.shards, local.config_hash)
        assert remote.root == location
    reference = batches(str(top / "set"))
    same_batches(batches(f"{base}/set"), reference)
    same_batches(batches(f"pipe:cat {top}/set/{{name}}"), reference)


def test_a_flipped_byte_on_the_server_is_caught_by_the_checksum_and_named(served):
    top, base = served
    url = f"{base}/bad/shard-000001.tar"
    open_shard_set(f"{base}/bad")  # the manifest reads; the shards are checked as they stream
    listed = {s["name"]: (int(s["bytes"]), s["sha256"])
              for s in json.loads((Path(top) / "set" / "manifest.json").read_text())["shards"]}
    with pytest.raises(DataError, match="sha256") as e:
        list(verified_samples([(url, listed["shard-000001.tar"][1])], open_stream=open_url))
    assert e.value.path == url
    with pytest.raises(DataError, match="sha256") as e:  # and through the training stream
        batches(f"{base}/bad")
    assert e.value.path == url
    # the untouched shard of the same set reads fine; a truncated one is caught by its size
    untouched = [(f"{base}/bad/shard-000000.tar", listed["shard-000000.tar"][1])]
    assert len(list(verified_samples(untouched, open_stream=open_url))) == 2
    size, sha = listed["shard-000001.tar"]
    with pytest.raises(DataError, match=f"its {size - 512} bytes have sha256"):  # lost end padding
        list(verified_samples([(f"pipe:head -c {size - 512} {top}/set/shard-000001.tar", sha)], open_stream=open_url))
    with pytest.raises(DataError, match="not a readable tar"):  # cut inside a member
        list(verified_samples([(f"pipe:head -c 3072 {top}/set/shard-000001.tar", sha)], open_stream=open_url))


def test_missing_sets_and_failing_commands_are_named(served, tmp_path):
    top, base = served
    with pytest.raises(DataError, match="HTTP 404") as e:
        open_shard_set(f"{base}/no-such-set")
    assert e.value.path == f"{base}/no-such-set/manifest.json"
    with pytest.raises(DataError, match="exited with status 1") as e:
        open_shard_set(f"pipe:cat {tmp_path}/{{name}}")
    assert "No such file" in e.value.problem
    with pytest.raises(DataError, match=r"\{name\}"):
        open_shard_set(f"pipe:cat {top}/set/manifest.json")
    url = f"pipe:cat {tmp_path}/shard-000000.tar"  # the manifest was there, the shard is not
    with pytest.raises(DataError, match="exited with status 1") as e:
        list(verified_samples([(url, "0" * 64)], open_stream=open_url))
    assert e.value.path == url


def test_training_from_a_url_matches_training_from_the_folder(served, tmp_path):
    top, base = served
    torch.set_num_threads(1)
    kw = dict(out=str(tmp_path), backbone="resnet18", num_prototypes=20, crop_height=32, crop_width=64, epochs=1,
              max_steps=2, warmup_epochs=0.25, lr=0.05, workers=0, log_every=1, checkpoint_every=2,
              progress=False, seed=3)
    logs = []
    for location in (f"{base}/set", str(top / "set")):
        run = C.train(C.ContrastiveConfig(shards=location, **kw))
        logs.append([json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()])
        assert json.loads((run / "config.json").read_text())["shards"] == location
    assert [r["step"] for r in logs[0]] == [1, 2] and all(math.isfinite(r["loss"]) for r in logs[0])
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    with pytest.raises(DataError, match="sha256") as e:
        C.train(C.ContrastiveConfig(shards=f"{base}/bad", **{**kw, "out": str(tmp_path / "bad")}))
    assert e.value.path.startswith(f"{base}/bad/shard-")
