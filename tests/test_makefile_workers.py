"""WORKERS: the CPU stages get the machine's cores by default; the trainers' data loaders keep their own
defaults unless the user sets WORKERS."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def command(target: str, module: str, *args: str) -> str:
    """The line of `make -n target` that runs `python -m <module>` (WORKERS unset in the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "WORKERS"}
    r = subprocess.run(["make", "-n", "-o", ".venv/.done", "-C", str(ROOT), target, "DATASET=synthetic", *args],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return next(ln for ln in r.stdout.splitlines() if f"-m {module}" in ln)


def test_cpu_stages_default_to_the_machine_cores():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(cores)
    assert f"--workers {nproc} " in command("shards", "preprocess shards") + " "
    assert "--workers 3 " in command("shards", "preprocess shards", "WORKERS=3") + " "


@pytest.mark.parametrize("target,module", [("train", "train contrastive"), ("picie", "train picie"),
                                           ("depth", "train depth-train")])
def test_trainers_keep_their_loader_default_unless_workers_is_set(target, module):
    assert "--workers" not in command(target, module)
    assert "--workers 3 " in command(target, module, "WORKERS=3") + " "


def test_a_run_folder_without_a_depth_model_says_so_and_names_another_folders(tmp_path):
    """DEMO_SIZE=small has its own run folder: a depth model trained without DEMO_SIZE is named, not silently
    ignored, before depth is trained again."""
    (tmp_path / "kitti" / "depth").mkdir(parents=True)
    (tmp_path / "kitti" / "depth" / "model.current").write_text("run-1/checkpoint.pt\n")
    r = subprocess.run(["make", "-s", "-o", ".venv/.done", "-C", str(ROOT), "regions", "PY=echo", "DATASET=kitti",
                        "DATA_ROOT=/data", "DEMO_SIZE=small", f"OUT={tmp_path}"], capture_output=True, text=True,
                       timeout=60)
    out = r.stdout
    assert f"depth: run folder {tmp_path}/kitti-small/ (DATASET=kitti DEMO_SIZE=small) has no depth model yet" in out
    assert f"another run folder has one: {tmp_path}/kitti/depth/model.current" in out
