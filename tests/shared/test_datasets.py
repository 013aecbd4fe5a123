"""Dataset readers on the real KITTI / Cityscapes samples, plus bad-layout errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from shared.datasets import build_index
from shared.datasets.kitti import read_calibration
from shared.frames import DataError, by_id, load_index, save_index
from shared.imageio import read_depth_map, read_label, read_rgb
from shared.labels import IGNORE, to_27_classes, to_train_ids


def test_kitti_index(sample_data):
    root = sample_data / "kitti"
    frames = build_index("kitti", root)
    assert len(frames) == 7
    assert {f.sequence for f in frames} == {"2011_09_26_drive_0023_sync_02"}
    assert [f.index for f in frames] == list(range(7))
    f = frames[3]
    assert (f.width, f.height) == (1242, 375)
    P = read_calibration(root / "2011_09_26" / "calib_cam_to_cam.txt")["P_rect_02"].reshape(3, 4)
    K = f.K(1242, 375)
    np.testing.assert_allclose(K[:2, :3], P[:2, :3], rtol=1e-9)
    # normalised intrinsics scale to any working size
    np.testing.assert_allclose(f.K(1280, 384)[0, 0], P[0, 0] / 1242 * 1280)
    assert f.prev == frames[2].id and f.next == frames[4].id
    assert frames[0].prev is None and frames[-1].next is None
    assert "." not in f.id
    d = read_depth_map(f.depth)
    assert d.shape == (375, 1242) and 0.01 < (d > 0).mean() < 0.2 and d.max() < 150


def test_cityscapes_index(sample_data):
    frames = build_index("cityscapes", sample_data / "cityscapes")
    ids = by_id(frames)
    assert len(frames) == 91  # 3 snippets x 30 + 1 val frame
    snippets = {f.sequence for f in frames if f.split == "train"}
    assert snippets == {"aachen_000000", "aachen_000001", "aachen_000002"}
    labelled = [f for f in frames if f.semantic]
    assert sorted(f.id for f in labelled) == ["aachen_000000_000019", "aachen_000001_000019",
                                               "aachen_000002_000019", "frankfurt_000000_000294"]
    f = ids["aachen_000001_000019"]
    assert f.image.endswith("leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png")  # lossless one wins
    assert f.instance and f.prev == "aachen_000001_000018" and f.next == "aachen_000001_000020"
    assert ids["aachen_000002_000000"].prev is None and ids["aachen_000002_000029"].next is None
    assert ids["aachen_000000_000005"].image.endswith(".jpg")
    # public Cityscapes camera, normalised: fx * 2048 = 2262.52
    np.testing.assert_allclose(f.K(2048, 1024)[0, 0], 2262.52, rtol=1e-6)
    np.testing.assert_allclose(f.K(768, 384)[1, 2], 513.14 * 384 / 1024, rtol=1e-6)


def test_train_id_map_matches_official_fixture(sample_data):
    gt = sample_data / "cityscapes" / "gtFine" / "val" / "frankfurt"
    label_ids = read_label(gt / "frankfurt_000000_000294_gtFine_labelIds.png")
    train_ids = read_label(gt / "frankfurt_000000_000294_gtFine_labelTrainIds.png")
    ours = to_train_ids(label_ids)
    # The fixture's two maps were downscaled separately, so ~0.2 % of pixels (edges) disagree.
    assert (ours == train_ids).mean() > 0.995
    # reading labelIds as trainIds would be badly wrong: the maps differ on most valid pixels
    assert (label_ids != train_ids).mean() > 0.5


def test_27_class_map():
    lab = np.array([[0, 6, 7, 33, 34]])
    assert to_27_classes(lab).tolist() == [[IGNORE, IGNORE, 0, 26, IGNORE]]
    assert to_train_ids(np.array([7, 8, 11, 26, 33, 9])).tolist() == [0, 1, 2, 13, 18, IGNORE]


def test_index_round_trip(sample_data, tmp_path):
    frames = build_index("kitti", sample_data / "kitti")
    p = save_index(frames, tmp_path / "index.jsonl")
    assert load_index(p) == frames


def _write_images(folder, n, size=(8, 12)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_folder_reader(tmp_path):
    _write_images(tmp_path / "drive_a", 3)
    _write_images(tmp_path / "drive_b", 2)
    (tmp_path / "intrinsics.json").write_text(json.dumps({"fx": 0.7, "fy": 1.4, "cx": 0.5, "cy": 0.45}))
    frames = build_index("folder", tmp_path)
    assert [f.sequence for f in frames] == ["drive_a"] * 3 + ["drive_b"] * 2
    assert frames[1].prev == frames[0].id and frames[2].next is None and frames[3].prev is None
    assert frames[0].fx == 0.7 and (frames[0].height, frames[0].width) == (8, 12)


@pytest.mark.parametrize("dataset", ["kitti", "cityscapes", "folder"])
def test_empty_or_wrong_layout_names_the_path(tmp_path, dataset):
    (tmp_path / "something").mkdir()
    with pytest.raises(DataError) as e:
        build_index(dataset, tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_calibration_names_the_file(tmp_path):
    _write_images(tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data", 2)
    with pytest.raises(DataError, match="calib_cam_to_cam.txt"):
        build_index("kitti", tmp_path)


def test_truncated_and_non_images_name_the_file(tmp_path):
    _write_images(tmp_path / "seq", 1, size=(64, 64))
    good = tmp_path / "seq" / "0000.png"
    data = good.read_bytes()
    bad = tmp_path / "seq" / "0001.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        read_rgb(bad)
    assert "0001.png" in str(e.value) and "truncated" in str(e.value)
    (tmp_path / "seq" / "0002.png").write_text("not an image")
    with pytest.raises(DataError, match="0002.png"):
        build_index("folder", tmp_path)
