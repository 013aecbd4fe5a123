"""The one checkpoint module: atomic, deterministic bytes, a missing file is a fresh start, a damaged one
an error naming it, RNG states that make a resumed run draw the same numbers."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import shared.checkpoint as _ck
from shared.checkpoint import clear_stale_saves, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from shared.frames import DataError


def test_same_state_same_bytes_whatever_the_name(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 3}
    a, b = save_checkpoint(state, tmp_path / "a.pt"), save_checkpoint(state, tmp_path / "run" / "b.pt")
    assert a.read_bytes() == b.read_bytes()  # no file or temporary name inside the archive
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "run").glob(".*.tmp"))
    back = load_checkpoint(a, mmap=True)
    assert back["step"] == 3 and torch.equal(back["model"]["w"], state["model"]["w"])


def test_missing_is_none_and_damaged_names_the_file(tmp_path):
    assert load_checkpoint(tmp_path / "none.pt") is None
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        load_checkpoint(bad)


def test_clear_stale_saves_removes_only_temporaries(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    stale = tmp_path / ".checkpoint.pt.4242.tmp"  # shared.atomic's name of a save killed in another process
    stale.write_bytes(b"half")
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert clear_stale_saves(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.jsonl"]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint({"rng": rng_state()}, tmp_path / "c.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


# SaveClock: the wall-time checkpoint rule of the trainers
def test_due_after_the_period_and_again_after_each_save(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_ck.time, "perf_counter", lambda: now[0])
    clock = _ck.SaveClock(10.0)
    assert not clock.due()
    now[0] += 599.0
    assert not clock.due()
    now[0] += 1.0
    assert clock.due()
    clock.saved()
    assert not clock.due()
    now[0] += 600.0
    assert clock.due()


def test_never_due_when_off_or_under_several_processes(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(_ck.time, "perf_counter", lambda: now[0])
    off, ranks = _ck.SaveClock(0.0), _ck.SaveClock(10.0, enabled=False)
    now[0] += 1e9
    assert not off.due() and not ranks.due()
