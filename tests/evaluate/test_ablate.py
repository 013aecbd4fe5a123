"""The ablation runner: the grid it plans, the tables' seed-spread rule, and a real 2-cell grid on the
tiny synthetic city that a rerun leaves untouched and a kill between cells does not make redo."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from evaluate.ablate import (PICIE, RANDOM, SWAV, WARMUP_SHARE, AblateConfig, Cell, compare, format_tables,
                             grid_cells, mean_std, run_hash, schedule_options, shard_options, summarise)

ROOT = Path(__file__).resolve().parents[2]


def test_full_grid_has_every_cell_once_and_the_peers_last():
    cells = grid_cells(AblateConfig(proposals=("depth", "gt"), lams=(0.5, 1.0), ms=(0, 4), cells=()))
    # (depth|gt) x (0.5|1) x (0|4) = 8, but lambda 1 with M 0 is the same run for both proposals
    assert len(cells) == 8 - 1 + 2  # 7 grid cells + PiCIE and random init (the SwAV peer is in the grid)
    assert cells[-2:] == [Cell("", 0.0, 0, "picie"), Cell("", 0.0, 0)]  # random init last: it needs a checkpoint
    assert [c.key for c in cells[-2:]] == ["picie", "random"] and cells[-2].label == PICIE
    assert sum(1 for c in cells if c.lam == 1.0 and c.m == 0) == 1
    assert Cell("depth", 1.0, 0) in cells and Cell("gt", 1.0, 0) not in cells


def test_explicit_cells_and_bad_cells():
    cells = grid_cells(AblateConfig(cells=("gt:0.5:8", "depth:0:2"), peers=False))
    assert cells == [Cell("gt", 0.5, 8), Cell("depth", 0.0, 2)]
    for bad in ("depth:0.5", "depth:1.5:8", "depth:0.5:1", "depth:x:8"):
        with pytest.raises(click.BadParameter):
            grid_cells(AblateConfig(cells=(bad,)))


def test_every_m_trains_on_the_same_number_of_images_per_step():
    every = ["--max-groups", "0", "--epochs", "2"]
    assert shard_options(0, 16) == (["--group-size", "8", "--rounds", "0,0", *every], 1)  # views of itself
    assert shard_options(8, 16) == (["--group-size", "8", *every], 1)
    assert shard_options(2, 16) == (["--group-size", "2", *every], 4)  # 4 groups of 2M = 4 images
    with pytest.raises(click.BadParameter):
        shard_options(3, 16)


def _opt(opts: list[str], name: str) -> float:
    return float(opts[opts.index(name) + 1])


@pytest.mark.parametrize("n_groups,groups_per_step,steps", [(10, 1, 64), (20, 2, 64), (10, 2, 64), (7, 3, 5),
                                                             (100, 1, 30)])
def test_every_cell_trains_the_same_steps_with_the_same_warm_up(n_groups, groups_per_step, steps):
    opts = schedule_options(n_groups, groups_per_step, steps)
    per_epoch = n_groups // groups_per_step  # one loader worker reads every group of an epoch
    assert _opt(opts, "--workers") == 1
    assert _opt(opts, "--max-steps") == steps
    assert _opt(opts, "--epochs") * per_epoch >= steps > (_opt(opts, "--epochs") - 1) * per_epoch
    # the trainer warms up round(warmup_epochs x steps per epoch) steps
    assert round(_opt(opts, "--warmup-epochs") * per_epoch) == round(WARMUP_SHARE * steps)


def test_results_of_other_run_settings_are_never_mixed_into_a_grid(tmp_path):
    cfg = AblateConfig(out=str(tmp_path), dataset="synthetic", demo_size="tiny", name="g", cells=("depth:0.5:2",),
                       seeds=(0,), peers=False, train_steps=4)
    assert run_hash(cfg) == run_hash(AblateConfig(**{**cfg.__dict__, "seeds": (0, 1, 2), "cells": ()}))
    assert run_hash(cfg) != run_hash(AblateConfig(**{**cfg.__dict__, "train_steps": 8}))
    results = tmp_path / "synthetic-tiny" / "ablate" / "g" / "results"
    results.mkdir(parents=True)
    (results / "depth-l0.5-m2-s0.json").write_text(json.dumps({"cell": "depth-l0.5-m2", "seed": 0,
                                                               "run_hash": "0123456789ab"}))
    from evaluate.ablate import run_grid
    from shared.frames import DataError

    with pytest.raises(DataError, match="other run settings"):
        run_grid(cfg, echo=lambda *_: None)


def test_mean_std_and_the_spread_rule():
    m, s, n = mean_std([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and s == pytest.approx(1.0)
    assert math.isnan(mean_std([4.0])[1]) and mean_std([])[2] == 0
    assert compare([10, 11, 12], [1, 2, 3]) == ">"  # 9 apart, spread 1
    assert compare([10, 11, 12], [10.5, 11.5, 12.5]) == "~"  # within the spread
    assert compare([1, 2, 3], [10, 11, 12]) == "<"
    assert compare([10], [1, 2]) == "?"  # one seed is no spread


def test_tables_put_cells_under_their_m_and_peers_in_their_own_rows():
    cells = [Cell("depth", 0.5, 0), Cell("depth", 0.5, 4), Cell("depth", 1.0, 0), Cell("", 0.0, 0, "picie"),
             Cell("", 0.0, 0)]
    results = [{"cell": "depth-l0.5-m0", "seed": s, "cluster_paper": 10.0 + s, "cluster_picie": 5.0,
                "finetune": 30.0} for s in (0, 1)]
    results += [{"cell": "depth-l0.5-m4", "seed": 0, "cluster_paper": 20.0, "cluster_picie": 6.0, "finetune": 31.0}]
    results += [{"cell": "random", "seed": s, "cluster_paper": 3.0, "cluster_picie": 2.0, "finetune": 20.0}
                for s in (0, 1, 2)]
    results += [{"cell": "picie", "seed": s, "cluster_paper": 8.0 + s, "cluster_picie": 7.0, "finetune": 25.0}
                for s in (0, 1)]
    t = summarise(results, cells, min_seeds=2)["cluster_paper"]
    assert t["depth lambda=0.5"]["0"]["mean"] == 10.5 and t["depth lambda=0.5"]["0"]["n"] == 2
    assert t["depth lambda=0.5"]["4"]["too_few_seeds"] and not t["depth lambda=0.5"]["0"]["too_few_seeds"]
    assert t[RANDOM]["-"]["mean"] == 3.0 and t[SWAV]["-"]["n"] == 0 and t[PICIE]["-"]["mean"] == 8.5
    text = "\n".join(format_tables({"cluster_paper": t}, [0, 4]))
    assert "10.50 +- 0.71 (n=2)" in text and "20.00 (n=1) *" in text


def _grid(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "evaluate", "ablate", "--demo-size", "tiny", "--out", str(out), "--name", "smoke",
            "--cells", "depth:0.5:2,felzenszwalb:0.5:2", "--seeds", "0", "--no-peers", "--train-steps", "2",
            "--finetune-iterations", "2", "--label-fraction", "1/2", "--workers", "1", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_cell_grid_resumes_after_a_kill_and_reruns_nothing(tmp_path):
    out = tmp_path / "runs"
    root = out / "synthetic-tiny" / "ablate" / "smoke"
    first = root / "results" / "depth-l0.5-m2-s0.json"
    # the runner SIGKILLs itself between the cells: its kill points (shared/faults.py) are two per atomic
    # write (before and after the rename: config.json, shard_sets.json, the first result) and then the one
    # after the first cell, the 7th; the assertions below fail loudly if that count ever changes
    r = subprocess.run(_grid(out), cwd=ROOT, env={**_env(), "CPCDR_KILL_AT": "7"}, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:] + r.stderr[-3000:]
    assert first.is_file() and not (root / "results" / "felzenszwalb-l0.5-m2-s0.json").exists()
    before = json.loads(first.read_text())
    r = subprocess.run(_grid(out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "(1 already done)" in r.stdout or "(2 already done)" in r.stdout
    assert "depth lambda=0.5, seed 0" not in r.stdout.replace("depth lambda=0.5 M=2, seed 0", "ran-depth")
    assert json.loads(first.read_text()) == before  # the finished cell was not redone
    tables = json.loads((root / "tables.json").read_text())["tables"]
    for metric in ("cluster_paper", "cluster_picie", "finetune"):
        for row in ("depth lambda=0.5", "felzenszwalb lambda=0.5"):
            v = tables[metric][row]["2"]
            assert v["n"] == 1 and 0 <= v["mean"] <= 100
    assert (root / "tables.md").is_file() and (root / "cluster_paper.png").is_file()
    for cell in ("depth-l0.5-m2", "felzenszwalb-l0.5-m2"):  # every cell trained exactly --train-steps steps
        log = out / "synthetic-tiny" / "train" / f"ablate-smoke-{cell}-s0" / "log.jsonl"
        assert json.loads(log.read_text().splitlines()[-1])["step"] == 2
    # a rerun of the same grid trains nothing
    log_size = (root / "commands.log").stat().st_size
    r = subprocess.run(_grid(out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "(2 already done)" in r.stdout
    assert (root / "commands.log").stat().st_size == log_size
    # grown by the peers: only they run, and PiCIE trains exactly --train-steps steps of the same images per step
    r = subprocess.run([a for a in _grid(out) if a != "--no-peers"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "5 cells x 1 seeds = 5 runs (2 already done)" in r.stdout
    tables = json.loads((root / "tables.json").read_text())["tables"]
    for row in (SWAV, PICIE, RANDOM):
        for metric in ("cluster_paper", "finetune"):
            assert tables[metric][row]["-"]["n"] == 1 and 0 <= tables[metric][row]["-"]["mean"] <= 100
    picie = out / "synthetic-tiny" / "picie" / "ablate-smoke-picie-s0"
    assert json.loads((picie / "log.jsonl").read_text().splitlines()[-1])["step"] == 2
    assert json.loads((picie / "config.json").read_text())["config"]["batch_size"] == 2  # 4 images per step


def test_two_grids_of_one_out_build_stores_one_at_a_time(tmp_path):
    """While one grid holds the stores lock (between `preprocess regions` and `preprocess shards`, which
    record their outputs in shared pointers), another process cannot take it."""
    from evaluate.ablate import stores_lock
    from shared.stage import output_dir

    cfg = AblateConfig(out=str(tmp_path), dataset="synthetic", demo_size="tiny")
    probe = ("import fcntl, sys\n"
             "fh = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    lock = output_dir(cfg, "ablate", ".stores.lock")
    with stores_lock(cfg):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], timeout=60)
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], timeout=60)
    assert (held.returncode, free.returncode) == (3, 0)


def test_shard_sets_are_asked_of_the_stages_not_read_from_an_earlier_record(tmp_path, monkeypatch):
    """An earlier invocation's record may name a set made by other proposal code or constants: the stages
    decide (they reuse finished work), once per invocation."""
    from evaluate import ablate

    cfg = AblateConfig(out=str(tmp_path), demo_size="tiny")
    stale, fresh = tmp_path / "shards-old", tmp_path / "shards-new"
    stale.mkdir()
    fresh.mkdir()
    key = "depth-m2-8"
    (tmp_path / "shard_sets.json").write_text(json.dumps({key: str(stale)}))
    ran: list[str] = []
    monkeypatch.setattr(ablate, "_run", lambda cmd, log, echo=None: ran.append(cmd[1]))  # [package, command, ...]
    monkeypatch.setattr(ablate, "_read_pointer", lambda cfg, stage, name: fresh if stage == "shards" else tmp_path)
    checked: dict[str, Path] = {}
    path, groups = ablate.ensure_shards(cfg, "depth", 2, 8, tmp_path, tmp_path / "log", lambda s: None, checked)
    assert path == fresh and groups == 2 and ran == ["regions", "shards"]
    assert json.loads((tmp_path / "shard_sets.json").read_text())[key] == str(fresh)
    # within one invocation the answer is remembered
    assert ablate.ensure_shards(cfg, "depth", 2, 8, tmp_path, tmp_path / "log", lambda s: None, checked)[0] == fresh
    assert ran == ["regions", "shards"]
