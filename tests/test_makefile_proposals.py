"""`make proposals` passes what `make regions` gets (PROPOSALS, REGIONS_ARGS), PROPOSALS_ARGS last."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> str:
    r = subprocess.run(["make", "-n", "-o", ".venv/.done", "-C", str(ROOT), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_proposals_takes_the_regions_args():
    out = dry_run("proposals", "DATASET=cityscapes", "DATA_ROOT=/data", "DEPTH=files:/d",
                  "REGIONS_ARGS=--depth-kind disparity --depth-scale 65535", "PROPOSALS=depth-rgb",
                  "PROPOSALS_ARGS=--max-frames 3 --depth-scale 2")
    line = next(ln for ln in out.splitlines() if "-m evaluate proposals" in ln)
    tail = line.split("-m evaluate proposals", 1)[1].split()
    assert "--proposals depth-rgb --depth-kind disparity --depth-scale 65535 --max-frames 3 --depth-scale 2" in \
        " ".join(tail)  # click keeps the last --depth-scale: PROPOSALS_ARGS wins
    sweep = dry_run("proposals-sweep", "REGIONS_ARGS=--depth-kind disparity", "SWEEP_ARGS=--synthetic-frames 2")
    line = next(ln for ln in sweep.splitlines() if "-m evaluate proposals-sweep" in ln)
    assert line.rstrip().endswith("--depth-kind disparity --synthetic-frames 2")


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_proposals_leaves_the_depth_to_the_region_store(tmp_path):
    """With a region store recorded and no DEPTH, `make proposals` passes no --depth (the command then scores
    the store's own source) instead of the trained network or the exact depth; DEPTH= still wins."""
    (tmp_path / "kitti" / "regions").mkdir(parents=True)
    (tmp_path / "kitti" / "regions" / "depth.current").write_text("depth-abc\n")

    def run(*args: str) -> str:
        r = subprocess.run(["make", "-s", "-o", ".venv/.done", "-C", str(ROOT), "proposals", "PY=echo", "DATASET=kitti",
                            "DATA_ROOT=/data", f"OUT={tmp_path}", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return next(ln for ln in r.stdout.splitlines() if ln.startswith("-m evaluate proposals"))

    assert "--depth" not in run().replace("--depth-", "")
    assert "--depth files:/d" in run("DEPTH=files:/d")
