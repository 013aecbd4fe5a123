"""Reading the synthetic city back as a frame index."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from preprocess.synth import generate
from shared.datasets import build_index
from shared.datasets.synthetic import read_synthetic
from shared.frames import DataError, load_index, save_index
from shared.imageio import image_size, read_label


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "city"
    generate(root, sequences=3, frames=4, size=(24, 64), seed=1, progress=False)
    return root


def _copy(city: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(city, dst)
    return dst


def test_rows_ids_splits_and_links(city):
    frames = read_synthetic(city)
    assert len(frames) == 12
    assert [f.id for f in frames[:4]] == ["seq00_000000", "seq00_000001", "seq00_000002", "seq00_000003"]
    assert all("." not in f.id for f in frames)
    assert {f.sequence: f.split for f in frames} == {"seq00": "train", "seq01": "train", "seq02": "val"}
    by = {f.id: f for f in frames}
    assert by["seq01_000000"].prev is None and by["seq01_000000"].next == "seq01_000001"
    assert by["seq01_000002"].prev == "seq01_000001" and by["seq01_000002"].next == "seq01_000003"
    assert by["seq01_000003"].next is None
    assert build_index("synthetic", city) == frames


def test_rows_point_at_the_right_files_and_geometry(city):
    frames = read_synthetic(city)
    for f in frames:
        assert (f.width, f.height) == (64, 24) and image_size(f.image) == (24, 64)
        assert read_label(f.semantic).dtype == np.uint8
        assert read_label(f.instance).dtype == np.uint16
        d = np.load(f.depth)
        assert d.dtype == np.float32 and d.shape == (24, 64)
        K = f.K(f.width, f.height)
        assert K[0, 0] == pytest.approx(K[1, 1])  # square pixels
        assert (K[0, 2], K[1, 2]) == (32.0, 12.0)
        cams = json.loads((city / f.sequence / "cameras.json").read_text())
        assert np.allclose(K, cams["K"])
        pose = f.pose_matrix()
        assert np.allclose(pose.reshape(-1), cams["frames"][f.index]["cam_to_world"])
        assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)) and np.allclose(pose[3], [0, 0, 0, 1])
    # consecutive poses move forward along +X by under 1.5 m
    a, b = frames[0].pose_matrix(), frames[1].pose_matrix()
    assert 0.5 < b[0, 3] - a[0, 3] < 1.5


def test_index_round_trips(city, tmp_path):
    frames = read_synthetic(city)
    save_index(frames, tmp_path / "index.jsonl")
    assert load_index(tmp_path / "index.jsonl") == frames


def test_missing_root_and_city_json(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_synthetic(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="city.json"):
        read_synthetic(tmp_path / "empty")


def test_incomplete_city_is_refused(city, tmp_path):
    root = _copy(city, tmp_path)
    meta = json.loads((root / "city.json").read_text())
    meta["complete"] = False
    (root / "city.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="incomplete") as e:
        read_synthetic(root)
    assert str(root / "city.json") in str(e.value)


def test_missing_frame_file_is_named(city, tmp_path):
    root = _copy(city, tmp_path)
    gone = root / "seq01" / "depth" / "000002.npy"
    gone.unlink()
    with pytest.raises(DataError) as e:
        read_synthetic(root)
    assert e.value.path == str(gone)


def test_damaged_cameras_json_is_named(city, tmp_path):
    root = _copy(city, tmp_path)
    bad = root / "seq00" / "cameras.json"
    bad.write_text("{not json")
    with pytest.raises(DataError) as e:
        read_synthetic(root)
    assert e.value.path == str(bad)
    cams = json.loads((city / "seq00" / "cameras.json").read_text())
    cams["frames"][1]["cam_to_world"] = [1.0, 0.0]
    bad.write_text(json.dumps(cams))
    with pytest.raises(DataError, match="16 numbers"):
        read_synthetic(root)


def test_wrong_image_size_is_named(city, tmp_path):
    from PIL import Image

    root = _copy(city, tmp_path)
    img = root / "seq02" / "rgb" / "000000.png"
    Image.new("RGB", (32, 12)).save(img)
    with pytest.raises(DataError, match="32x12") as e:
        read_synthetic(root)
    assert e.value.path == str(img)
