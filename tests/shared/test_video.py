"""DATASET=video: frame tables from container metadata, frame selection, exact decoding by seeking."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.config import config_hash
from shared.datasets import build_index
from shared.frames import DataError
from shared.regions.config import RegionsConfig, aspect_size, working_size
from shared.video import frame_ref, parse_ref, probe, read_frame, select_frames
from tests.fixtures.videos import city_frames, write_video


@pytest.fixture(scope="module")
def frames(tiny_city) -> list[np.ndarray]:
    return city_frames(tiny_city)  # 12 frames, 96x192


@pytest.fixture(scope="module")
def videos(frames, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {codec: write_video(d / f"drive.{ext}", frames, codec)
            for codec, ext in (("ffv1", "mkv"), ("libx264", "mp4"), ("mpeg4", "avi"))}


def _decode_all(path: Path) -> list[np.ndarray]:
    t = probe(path)
    return [read_frame(frame_ref(path, n, p)) for n, p in enumerate(t.pts)]


def test_lossless_video_decodes_every_frame_exactly_in_order(videos, frames):
    t = probe(videos["ffv1"])
    assert len(t.pts) == len(frames) and (t.width, t.height) == (192, 96) and t.problems == []
    for n, got in enumerate(_decode_all(videos["ffv1"])):
        assert np.array_equal(got, frames[n]), f"frame {n} differs"


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_lossy_video_keeps_count_and_order(videos, frames, codec):
    got = _decode_all(videos[codec])
    assert len(got) == len(frames)
    ref = np.stack(frames).astype(np.int16)
    for n, g in enumerate(got):
        err = np.abs(ref - g.astype(np.int16)).mean(axis=(1, 2, 3))  # [N] distance to every original
        assert int(np.argmin(err)) == n and err[n] < 8, (n, err.round(1))


def test_metadata_index_when_the_container_lists_every_frame(videos):
    # MPEG-4 part 2 without B-frames in AVI: the container's index holds every frame, nothing is demuxed
    assert probe(videos["mpeg4"]).source == "container index"
    assert probe(videos["ffv1"]).source == "packets"  # Matroska's cues list keyframes only


def test_select_frames_known_answers():
    t = np.arange(10) * 0.1  # 10 fps
    assert select_frames(t) == list(range(10))
    assert select_frames(t, stride=3) == [0, 3, 6, 9]
    assert select_frames(t, fps=5) == [0, 2, 4, 6, 8]
    assert select_frames(t, fps=20) == list(range(10))  # never repeats a frame
    assert select_frames(t, start=0.25, end=0.65) == [3, 4, 5, 6]
    assert select_frames(t, fps=5, start=0.3) == [3, 5, 7, 9]
    vfr = np.array([0.0, 0.04, 0.08, 0.2, 0.21, 0.4, 0.7, 0.75])  # a phone's variable frame rate
    assert select_frames(vfr, fps=10) == [0, 3, 5, 6]  # the first frame at or after 0, .1 (.2), .3 (.4), .5 (.7)
    with pytest.raises(ValueError, match="not both"):
        select_frames(t, stride=2, fps=5)


def test_variable_frame_rate_by_timestamps(frames, tmp_path):
    ms = [0, 40, 80, 200, 210, 400, 700, 750, 760, 900, 1000, 1400]
    path = write_video(tmp_path / "vfr.mkv", frames, "ffv1", pts=ms)
    t = probe(path)
    assert np.allclose(t.seconds(), np.array(ms) / 1000)
    index = build_index("video", path, fps=10)
    assert [f.id for f in index] == [f"vfr_{n:06d}" for n in (0, 3, 5, 6, 9, 10, 11)]
    for f in index:
        n = parse_ref(f.image)[1]
        assert np.array_equal(read_frame(f.image), frames[n])


@pytest.mark.parametrize("codec,ext", [("ffv1", "mkv"), ("mpeg4", "mp4")])
def test_rotation_from_the_display_matrix(frames, tmp_path, codec, ext):
    path = write_video(tmp_path / f"phone.{ext}", frames[:3], codec, rotation=90)
    t = probe(path)
    assert (t.rotation, t.width, t.height) == (90, 96, 192)
    got = read_frame(frame_ref(path, 1, t.pts[1]))
    want = np.rot90(frames[1], 1)  # 90 degrees counter-clockwise, as the matrix says
    assert got.shape == want.shape == (192, 96, 3)
    assert np.abs(got.astype(int) - want).mean() < 8 < np.abs(got.astype(int) - np.rot90(frames[1], -1)).mean()


def test_ids_stride_neighbours_and_intrinsics(videos, tmp_path):
    folder = tmp_path / "footage"
    folder.mkdir()
    shutil.copy(videos["ffv1"], folder / "a.day.mkv")
    shutil.copy(videos["mpeg4"], folder / "b.avi")
    (folder / "b.avi.intrinsics.json").write_text(json.dumps({"fx": 0.9, "fy": 1.8, "cx": 0.5, "cy": 0.45}))
    (folder / "intrinsics.json").write_text(json.dumps({"fx": 0.7, "fy": 1.4, "cx": 0.5, "cy": 0.5}))
    index = build_index("video", folder, stride=4)
    assert [f.id for f in index] == ["a_day_000000", "a_day_000004", "a_day_000008", "b_000000", "b_000004",
                                     "b_000008"]
    assert [f.index for f in index] == [0, 1, 2] * 2
    assert (index[1].prev, index[1].next, index[0].prev) == ("a_day_000000", "a_day_000008", None)
    assert (index[0].fx, index[3].fx, index[3].cy) == (0.7, 0.9, 0.45)
    assert build_index("video", folder, stride=4) == index  # deterministic


def test_truncated_file_keeps_the_frames_before_the_damage(videos, frames, tmp_path):
    data = videos["ffv1"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    skipped: list[dict[str, str]] = []
    index = build_index("video", cut, skipped=skipped)
    assert 0 < len(index) < len(frames)
    kept = []
    for f in index:
        try:
            kept.append(np.array_equal(read_frame(f.image), frames[parse_ref(f.image)[1]]))
        except DataError as e:  # the last listed frame may be the one cut in half: it names itself
            assert f.image in str(e) and ("truncated" in e.problem or "decod" in e.problem)
    assert kept and all(kept) and len(kept) >= len(index) - 1
    mp4 = tmp_path / "cut.mp4"
    mp4.write_bytes(videos["libx264"].read_bytes()[:2000])
    with pytest.raises(DataError, match="cut.mp4: cannot open as a video"):
        build_index("video", mp4)


def _decode_refs(refs: list[str]) -> list[np.ndarray]:
    return [read_frame(r) for r in refs]


def test_two_workers_decode_interleaved_frames_identically(videos):
    from joblib import Parallel, delayed

    t = probe(videos["libx264"])
    refs = [frame_ref(videos["libx264"], n, p) for n, p in enumerate(t.pts)]
    alone = [read_frame(r) for r in refs]
    orders = [refs[::2] + refs[1::2][::-1], refs[1::2] + refs[::2][::-1]]  # each worker jumps back and forth
    a, b = Parallel(n_jobs=2, backend="loky")(delayed(_decode_refs)(o) for o in orders)
    by_ref = {r: x for o, out in zip(orders, (a, b)) for r, x in zip(o, out)}
    for r, x in zip(refs, alone):
        assert np.array_equal(by_ref[r], x), r
    assert np.array_equal(read_frame(refs[7]), alone[7]) and np.array_equal(read_frame(refs[3]), alone[3])


def test_video_options_leave_other_hashes_unchanged():
    # hashes of main before the video options existed: the stores of other datasets keep their names
    assert config_hash(RegionsConfig()) == "7ac55c3ec07e"
    assert config_hash(RegionsConfig(dataset="cityscapes", data_root="/x")) == "924b5af5e958"
    assert config_hash(RegionsConfig(dataset="video", fps=5)) != config_hash(RegionsConfig(dataset="video"))


def test_working_size_follows_the_aspect():
    assert aspect_size(1080, 1920) == (384, 672)
    assert aspect_size(1024, 2048) == (384, 768) and aspect_size(375, 1242) == (384, 1280)
    assert aspect_size(1920, 1080) == (384, 224)  # portrait phone video


def test_working_size_of_video_and_folder_datasets(videos):
    index = build_index("video", videos["ffv1"])
    assert working_size(RegionsConfig(dataset="video"), index) == (384, 768)
    assert working_size(RegionsConfig(dataset="video", demo_size="tiny"), index) == (96, 192)
    assert working_size(RegionsConfig(dataset="cityscapes"), index) == (384, 768)


def test_frames_are_cropped_to_the_working_aspect_never_stretched(tmp_path):
    from preprocess.index import summarise
    from shared.video import aspect_crop

    assert aspect_crop(1080, 1920) == (15, 0, 1890, 1080) and aspect_crop(1024, 2048) is None
    assert aspect_crop(1920, 1080) == (0, 34, 1080, 1851)  # portrait: rows go
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (108, 200, 3), dtype=np.uint8) for _ in range(3)]  # 384 rows -> 704: 198 wide
    path = write_video(tmp_path / "wide.mkv", frames, "ffv1")
    (tmp_path / "wide.mkv.intrinsics.json").write_text(json.dumps({"fx": 0.5, "fy": 1.0, "cx": 0.5, "cy": 0.5}))
    index = build_index("video", path)
    f = index[1]
    assert (f.width, f.height) == (198, 108) and f.image.endswith(",crop=1:0:198:108")
    assert np.array_equal(read_frame(f.image), frames[1][:, 1:199])
    assert np.isclose(f.fx * 198, 0.5 * 200) and np.isclose(f.cx * 198, 0.5 * 200 - 1)  # the same pixels' focal
    assert working_size(RegionsConfig(dataset="video"), index) == (384, 704)
    assert 384 / 108 == 704 / 198  # one scale for both axes
    assert any(line.startswith("crop         3 video frames") for line in summarise(index))


def test_checking_many_frames_by_one_straight_decode(videos, frames, tmp_path):
    from shared.video import check_frames

    t = probe(videos["libx264"])
    refs = [frame_ref(videos["libx264"], n, p) for n, p in enumerate(t.pts)]
    assert check_frames(refs[::3]) == {}
    data = videos["ffv1"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    tc = probe(videos["ffv1"])  # the whole file's table: the frames past the cut are named
    bad = check_frames([frame_ref(cut, n, p) for n, p in enumerate(tc.pts)])
    assert 0 < len(bad) < len(frames) and all("cut.mkv#frame=" in r for r in bad)
    assert frame_ref(cut, len(frames) - 1, tc.pts[-1]) in bad and frame_ref(cut, 0, tc.pts[0]) not in bad
    assert check_frames([frame_ref(tmp_path / "gone.mp4", 0, 0)]) == {
        frame_ref(tmp_path / "gone.mp4", 0, 0): "video file not found"}
