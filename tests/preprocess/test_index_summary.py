"""The index summary announces frames that fall back to a reader's built-in intrinsics."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from preprocess.index import summarise
from shared.datasets.folder import read_folder


def _folder(root, intrinsics=None):
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / f"{i:04d}.png")
    if intrinsics:
        (root / "intrinsics.json").write_text(json.dumps(intrinsics))
    return read_folder(root)


def test_built_in_intrinsics_are_announced(tmp_path):
    lines = summarise(_folder(tmp_path / "plain"))
    assert ("intrinsics   3 of 3 frames use built-in default intrinsics: a KITTI-like camera (no intrinsics.json "
            "found), normalised fx=0.580 fy=1.920 cx=0.500 cy=0.500; give real ones as intrinsics.json") in lines[-1]


def test_cityscapes_without_camera_files_names_the_default_and_where_real_ones_go(tmp_path):
    from click.testing import CliRunner

    from preprocess.__main__ import main

    img = tmp_path / "cs" / "leftImg8bit" / "val" / "testcity"
    img.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img / f"testcity_000000_{i:06d}_leftImg8bit.png")
    r = CliRunner().invoke(main, ["index", "--dataset", "cityscapes", "--data-root", str(tmp_path / "cs"),
                                  "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    note = next(line for line in lines if "built-in default intrinsics" in line)
    assert note.startswith("intrinsics   2 of 2 frames use built-in default intrinsics: Cityscapes' typical camera")
    assert "fx=1.105 fy=2.212 cx=0.536 cy=0.501" in note and "camera/<split>/<city>/" in note
    assert lines[-1].startswith(f"index: wrote 2 frames into {tmp_path / 'runs' / 'cityscapes' / 'index.jsonl'} in ")
    # a rerun on the same files finds the same index: it says so instead of "wrote"
    again = CliRunner().invoke(main, ["index", "--dataset", "cityscapes", "--data-root", str(tmp_path / "cs"),
                                      "--out", str(tmp_path / "runs")])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1].startswith(
        f"index: reused 2 frames in {tmp_path / 'runs' / 'cityscapes' / 'index.jsonl'} in ")
    # a new frame changes the index: "wrote" again
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img / "testcity_000000_000002_leftImg8bit.png")
    third = CliRunner().invoke(main, ["index", "--dataset", "cityscapes", "--data-root", str(tmp_path / "cs"),
                                      "--out", str(tmp_path / "runs")])
    assert third.stdout.strip().splitlines()[-1].startswith("index: wrote 3 frames into ")


def test_own_intrinsics_are_not_flagged(tmp_path):
    lines = summarise(_folder(tmp_path / "own", {"fx": 0.7, "fy": 1.4, "cx": 0.5, "cy": 0.5}))
    assert not any("built-in default" in line for line in lines)
    assert any(line.startswith("intrinsics   fx=0.700 fy=1.400") for line in lines)
