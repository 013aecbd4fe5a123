"""SIGKILL at seeded random points, then resume: every stage ends where an uninterrupted run ends.

Each stage runs as its real command in a subprocess on the tiny synthetic city. The uninterrupted
run counts the fault-injection points it passes (shared/faults.py: every frame, group and step,
before and after every atomic rename); then a second output tree is killed at three points drawn
with a fixed seed (CPCDR_KILL_AT: the process SIGKILLs itself, nothing runs after it) and the
command is rerun to the end. After each kill of a trainer the test also leaves a torn last line in its
log (a write the kill cut short), which the rerun must drop. Region stores and shard sets must be byte-identical and finished
chunks / shards never rewritten; training must reach the same step with the same logged losses
(each step logged once) and the same weights. No temporary file may be left behind.

Slow (about a minute on a laptop core): marked `slow`, which CI runs (`make test` runs everything;
`pytest -m "not slow"` leaves it out locally).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
pytestmark = pytest.mark.slow


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CPCDR_KILL")}
    full_env.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=600)


def count_points(args: list[str], tmp: Path) -> int:
    """Run the command to the end; how many kill points it passed."""
    counter = tmp / "points.txt"
    done = run(args, CPCDR_KILL_COUNT=str(counter))
    assert done.returncode == 0, done.stderr[-3000:]
    return int(counter.read_text())


def kill_then_finish(args: list[str], points: int, rng: np.random.Generator, between=None) -> list[int]:
    """KILLS runs, each SIGKILLed, then a run to the end; between(i) is called after each kill.

    The kills land at KILLS positions drawn over the first 85 % of the uninterrupted run's points
    (a rerun skips some writes, so the very end may not come again); run i is killed that many
    points after where run i-1 died, which a resumed run reaches no later than the uninterrupted
    one. Returns the points the kills hit, counted within each run."""
    positions = sorted(int(p) for p in rng.choice(np.arange(1, max(KILLS + 1, int(0.85 * points))), KILLS,
                                                  replace=False))
    hits, before = [], 0
    for i, position in enumerate(positions):
        k = position - before
        before = position
        done = run(args, CPCDR_KILL_AT=str(k))
        assert done.returncode == -signal.SIGKILL, f"kill at point {k} did not happen: {done.stderr[-2000:]}"
        hits.append(k)
        if between:
            between(i)
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    return hits


def no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob(".*.tmp")]
    assert not left, left


def listed_files(folder: Path, names: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of files: a file rewritten by a rename gets a new inode."""
    return {n: ((folder / n).stat().st_ino, (folder / n).stat().st_mtime_ns) for n in names if (folder / n).is_file()}


def stage_args(stage: list[str], city: Path, out: Path, *extra: str) -> list[str]:
    return [*stage, "--dataset", "synthetic", "--data-root", str(city), "--out", str(out), "--demo-size", "tiny",
            "--workers", "1", *extra]


@pytest.fixture(scope="module")
def reference(tiny_city, tmp_path_factory):
    """The uninterrupted regions and shards runs (their outputs feed the later stages)."""
    tmp = tmp_path_factory.mktemp("reference")
    regions = stage_args(["preprocess", "regions"], tiny_city, tmp / "runs", "--chunk-size", "2", "--max-frames", "8")
    points = {"regions": count_points(regions, tmp)}
    store = next((tmp / "runs" / "synthetic-tiny" / "regions").glob("depth-*"))
    shards = stage_args(["preprocess", "shards"], tiny_city, tmp / "runs", "--regions", str(store),
                        "--epochs", "3", "--max-groups", "1")
    points["shards"] = count_points(shards, tmp)
    shard_set = next((tmp / "runs" / "synthetic-tiny" / "shards").glob("depth-*"))
    return {"store": store, "shards": shard_set, "points": points}


def test_regions_survive_kills(tiny_city, reference, tmp_path):
    rng = np.random.default_rng([13, 1])
    out = tmp_path / "runs"
    args = stage_args(["preprocess", "regions"], tiny_city, out, "--chunk-size", "2", "--max-frames", "8")
    store = out / "synthetic-tiny" / "regions" / reference["store"].name
    finished: dict[str, tuple[int, int]] = {}

    def check(_: int) -> None:
        manifest = json.loads((store / "manifest.json").read_text()) if (store / "manifest.json").is_file() else {}
        now = listed_files(store, sorted(manifest.get("chunks", {})))
        assert {n: now[n] for n in finished if n in now} == finished  # a listed chunk is never rewritten
        finished.update(now)

    hits = kill_then_finish(args, reference["points"]["regions"], rng, check)
    check(KILLS)
    ref = reference["store"]
    chunks = sorted(p.name for p in ref.glob("chunk_*.h5"))
    assert len(chunks) == 4 and sorted(p.name for p in store.glob("chunk_*.h5")) == chunks
    for name in chunks:
        assert (store / name).read_bytes() == (ref / name).read_bytes(), name
    a, b = (json.loads((s / "manifest.json").read_text()) for s in (store, ref))
    assert a["chunks"] == b["chunks"] and a["skipped"] == b["skipped"] == []
    no_temporaries(out)
    print(f"regions: killed at points {hits} of {reference['points']['regions']}")


def test_shards_survive_kills(tiny_city, reference, tmp_path):
    rng = np.random.default_rng([13, 2])
    out = tmp_path / "runs"
    args = stage_args(["preprocess", "shards"], tiny_city, out, "--regions", str(reference["store"]),
                      "--epochs", "3", "--max-groups", "1")
    shard_set = out / "synthetic-tiny" / "shards" / reference["shards"].name
    finished: dict[str, tuple[int, int]] = {}

    def check(_: int) -> None:
        manifest = json.loads((shard_set / "manifest.json").read_text()) \
            if (shard_set / "manifest.json").is_file() else {}
        now = listed_files(shard_set, [s["name"] for s in manifest.get("shards", [])])
        assert {n: now[n] for n in finished if n in now} == finished  # a listed shard is never rewritten
        finished.update(now)

    hits = kill_then_finish(args, reference["points"]["shards"], rng, check)
    ref = reference["shards"]
    tars = sorted(p.name for p in ref.glob("shard-*.tar"))
    assert len(tars) == 3 and sorted(p.name for p in shard_set.glob("shard-*.tar")) == tars
    for name in tars:
        assert (shard_set / name).read_bytes() == (ref / name).read_bytes(), name
    a, b = (json.loads((s / "manifest.json").read_text()) for s in (shard_set, ref))
    assert a["shards"] == b["shards"] and a["complete"] and b["complete"]
    no_temporaries(out)
    print(f"shards: killed at points {hits} of {reference['points']['shards']}")


def tear_logs(root: Path) -> None:
    """Append half a JSON line to every training log under `root`: what a kill in mid-write leaves."""
    for log in root.rglob("log.jsonl"):
        with open(log, "a") as fh:
            fh.write('{"step": 99, "loss": 1.')


def stop_tear_finish(args: list[str]) -> None:
    """Run 2 steps (--stop-after: checkpointed), leave a torn last line in the log, then run to the end:
    the one kill that always lands after the log has lines."""
    done = run([*args, "--stop-after", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path(args[args.index("--out") + 1])
    assert any(out.rglob("log.jsonl")), "no log after 2 steps"
    tear_logs(out)
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]


def _training_matches(run_a: Path, run_b: Path, steps: int) -> None:
    import torch

    logs = [[json.loads(ln) for ln in (r / "log.jsonl").read_text().splitlines()] for r in (run_a, run_b)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == list(range(1, steps + 1))
    for x, y in zip(*logs):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6), x["step"]
    a, b = (torch.load(r / "checkpoint.pt", map_location="cpu", weights_only=True) for r in (run_a, run_b))
    assert a["step"] == b["step"] == steps
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], atol=1e-5, rtol=1e-5, msg=k)


def trainer_survives_kills(name: str, train, steps: int, seed: int, tmp_path: Path) -> None:
    """`train(out)`: the trainer's arguments writing under `out`. Uninterrupted (a), killed KILLS times with a
    torn log line after each kill (b), and stopped after 2 steps with a torn line (c): the same run."""
    points = count_points(train(tmp_path / "a"), tmp_path)
    hits = kill_then_finish(train(tmp_path / "b"), points, np.random.default_rng([13, seed]),
                            lambda _: tear_logs(tmp_path / "b"))
    stop_tear_finish(train(tmp_path / "c"))
    (run_a,), (run_b,), (run_c,) = ([p.parent for p in (tmp_path / o).rglob("checkpoint.pt")] for o in "abc")
    _training_matches(run_a, run_b, steps)
    _training_matches(run_a, run_c, steps)
    no_temporaries(tmp_path / "b")
    print(f"{name}: killed at points {hits} of {points}")


def test_contrastive_training_survives_kills(tiny_city, reference, tmp_path):
    trainer_survives_kills("contrastive", lambda out: stage_args(
        ["train", "contrastive"], tiny_city, out, "--shards", str(reference["shards"]), "--epochs", "3",
        "--max-steps", "8", "--checkpoint-every", "2", "--log-every", "1", "--no-progress"), 8, 3, tmp_path)


def test_depth_training_survives_kills(tiny_city, tmp_path):
    trainer_survives_kills("depth", lambda out: stage_args(
        ["train", "depth-train"], tiny_city, out, "--max-steps", "8", "--ckpt-every", "2", "--log-every", "1",
        "--image-every", "3", "--height", "64", "--width", "64", "--batch-size", "2"), 8, 4, tmp_path)


def test_picie_training_survives_kills(tiny_city, tmp_path):
    trainer_survives_kills("picie", lambda out: stage_args(
        ["train", "picie"], tiny_city, out, "--epochs", "3", "--checkpoint-every", "2", "--log-every", "1",
        "--no-progress"), 6, 5, tmp_path)


def test_finetune_training_survives_kills(tiny_city, tmp_path):
    trainer_survives_kills("finetune", lambda out: stage_args(
        ["train", "finetune"], tiny_city, out, "--init", "scratch", "--iterations", "6", "--checkpoint-every", "2",
        "--log-every", "1", "--no-progress"), 6, 6, tmp_path)
