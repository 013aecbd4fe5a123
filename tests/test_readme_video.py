"""The README's `## Your own video` section works as written: its make commands run, at tiny size, on
a video made from the synthetic city, and write what they promise."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.videos import city_frames, write_video

ROOT = Path(__file__).resolve().parents[1]


def video_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Your own video\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, "README.md has no `## Your own video` section"
    return m.group(1)


def video_commands() -> list[list[str]]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", video_section(), flags=re.S)
    assert len(blocks) == 1, "the video section keeps its commands in one fenced block"
    return [shlex.split(line.split("#")[0]) for line in blocks[0].splitlines() if line.strip().startswith("make ")]


def test_the_section_is_short_and_has_three_commands():
    assert len(video_section().strip().splitlines()) <= 14  # 15 with its heading
    cmds = video_commands()
    assert [c[1] for c in cmds] == ["index", "train", "eval"]
    assert all("DATASET=video" in c for c in cmds)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_the_readme_video_commands_run_at_tiny_size(tiny_city, tmp_path):
    video = write_video(tmp_path / "drive.mp4", city_frames(tiny_city), "libx264")  # 12 frames at 10 fps
    out = tmp_path / "runs"
    # the README's DATA_ROOT is the user's file: here the video just made; tiny size, a short depth run
    extra = [f"OUT={out}", "DEMO_SIZE=tiny", f"PY={sys.executable}", "DEPTH_ARGS=--max-steps 2", "WORKERS=2"]
    for cmd in video_commands():
        cmd = [f"DATA_ROOT={video}" if w.startswith("DATA_ROOT=") else w for w in cmd]
        done = subprocess.run([*cmd[:1], "-C", str(ROOT), "--no-print-directory", *cmd[1:], *extra],
                              capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    run = out / "video-tiny"
    rows = [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"drive_{n:06d}" for n in range(0, 12, 2)]  # FPS=5 of 10 fps
    assert (run / "train" / "model.current").is_file() and (run / "regions" / "depth.current").is_file()
    report = json.loads(next((run / "eval").glob("*-features/report.json")).read_text())
    assert report["scores"] is None and "no labels" in report["why_no_scores"]
    assert all((run / "eval" / next((run / "eval").glob("*-features")).name / p).is_file() for p in report["pictures"])
