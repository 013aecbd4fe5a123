"""The synthetic city: exact geometry, frame-to-frame consistency, labels, determinism, resume, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from preprocess import synth
from preprocess.synth_render import render, render_points, value_noise
from preprocess.synth_scene import (box_on_ground, camera_pose, car_in_front_of_facade, drive,
                                    level_pose, pixel_K, street, two_planes)
from shared.frames import DataError
from shared.imageio import read_label, read_rgb
from shared.labels import (BUILDING, CAR, PERSON, POLE, ROAD, SIDEWALK, SKY, THING_LABEL_IDS, VEGETATION,
                           instance_label_ids)

SIZE = (48, 96)


def _pixel_grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    return u, v


def _rays(K: np.ndarray, T: np.ndarray, H: int, W: int) -> np.ndarray:
    """World ray directions [H, W, 3] with unit camera z (so hit parameter = depth)."""
    u, v = _pixel_grid(H, W)
    pc = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(H * W)])
    return (T[:3, :3] @ pc).T.reshape(H, W, 3)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("city") / "c"
    synth.generate(root, sequences=2, frames=5, size=(64, 128), seed=3, progress=False)
    return root


# ---------------------------------------------------------------------------------------------
# Known answers from simple scenes


def test_road_depth_matches_level_camera_formula():
    H, W = SIZE
    K = pixel_K(SIZE)
    out = render(two_planes(wall_distance=20.0, wall_height=6.0), K, level_pose(height=1.6), SIZE)
    road = out["label"] == ROAD
    assert road.sum() > 0.2 * H * W
    _, v = _pixel_grid(H, W)
    expected = K[1, 1] * 1.6 / (v - K[1, 2])  # Z = f_y h / (v - c_y) below the horizon
    np.testing.assert_allclose(out["depth"][road], expected[road], rtol=1e-4)
    # the wall faces the camera: every wall pixel is exactly 20 m deep
    wall = out["label"] == BUILDING
    assert wall.sum() > 0.1 * H * W
    np.testing.assert_allclose(out["depth"][wall], 20.0, rtol=1e-5)
    # above the wall top (6 m high, 20 m away) is sky, at a finite depth beyond the wall
    sky = out["label"] == SKY
    assert sky[0].all() and np.isfinite(out["depth"][sky]).all() and (out["depth"][sky] > 20).all()
    # a nearer sky box: a level camera looks at its far wall, 100 m away, just above the wall
    near = render(two_planes(wall_distance=20.0, wall_height=6.0, sky_distance=100.0), K, level_pose(height=1.6), SIZE)
    assert np.array_equal(near["label"], out["label"])
    assert near["depth"][sky].max() <= 100.0 + 1e-3 and near["depth"][sky].min() > 20


def test_box_projects_where_pinhole_says():
    H, W = 96, 192
    K = pixel_K((H, W))
    out = render(box_on_ground(distance=8.0, size=(2.0, 2.0, 1.5)), K, level_pose(height=1.0), (H, W))
    box = out["label"] == CAR
    assert (out["instance"][box] == CAR * 1000).all()
    cols = np.nonzero(box.any(axis=0))[0]
    rows = np.nonzero(box.any(axis=1))[0]
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    # front face: |Y| <= 1 at X = 8 -> u in cx +- f / 8; top at Z = 1.5 -> v = cy - f * 0.5 / 8
    assert abs(cols[0] + 0.5 - (cx - f / 8)) <= 1.0 and abs(cols[-1] + 0.5 - (cx + f / 8)) <= 1.0
    assert abs(rows[0] + 0.5 - (cy - f * 0.5 / 8)) <= 1.0
    # a camera 1 m high, below the 1.5 m top, sees only the front face
    np.testing.assert_allclose(out["depth"][box], 8.0, rtol=1e-5)


def test_car_in_front_of_facade_layers():
    out = render(car_in_front_of_facade(car_distance=10.0, facade_distance=25.0), pixel_K((64, 128)),
                 level_pose(), (64, 128))
    labels = set(np.unique(out["label"]).tolist())
    assert labels == {ROAD, CAR, BUILDING, SKY}
    car = out["label"] == CAR
    assert (out["instance"][car] == CAR * 1000).all()
    # the car is in front of the facade: near face at 10 - 4.3/2 m, the facade at 25 m
    assert out["depth"][car].min() == pytest.approx(10.0 - 2.15, rel=1e-5)
    np.testing.assert_allclose(out["depth"][out["label"] == BUILDING], 25.0, rtol=1e-5)


def test_pose_convention_level_camera_axes():
    T = level_pose(x=2.0, y=-1.0, height=1.5)
    R = T[:3, :3]
    assert np.allclose(R @ [0, 0, 1], [1, 0, 0])  # camera z (forward) = world +X
    assert np.allclose(R @ [0, 1, 0], [0, 0, -1])  # camera y (down) = world -Z
    assert np.allclose(R @ [1, 0, 0], [0, -1, 0])  # camera x (right) = world -Y
    assert np.isclose(np.linalg.det(R), 1.0)
    T2 = camera_pose(0, 0, 1.6, yaw=0.1, pitch=0.05)
    fwd = T2[:3, :3] @ [0, 0, 1]
    assert fwd[1] > 0 and fwd[2] > 0  # positive yaw turns left (+Y), positive pitch looks up


def test_value_noise_is_deterministic_and_bounded():
    pts = np.random.default_rng(0).uniform(-50, 50, size=(200, 3))
    a = np.array([value_noise(x, y, z, 5) for x, y, z in pts])
    b = np.array([value_noise(x, y, z, 5) for x, y, z in pts])
    c = np.array([value_noise(x, y, z, 6) for x, y, z in pts])
    assert (a == b).all() and not np.allclose(a, c)
    assert a.min() >= 0.0 and a.max() < 1.0 and a.std() > 0.05
    # continuous: a tiny step changes the value only a little
    d = np.array([value_noise(x + 1e-4, y, z, 5) for x, y, z in pts])
    assert np.abs(d - a).max() < 1e-2


def test_culling_behind_camera_changes_nothing():
    rng = np.random.default_rng(1)
    poses, speed = drive(rng, 12)
    world = street(rng, speed * 12 + 60, speed, seed=1)
    T = poses[11]
    K = pixel_K(SIZE)
    full = render(world.scene_at(11), K, T, SIZE)
    culled_scene = world.scene_at(11, behind_x=T[0, 3] - 3.0)
    assert len(culled_scene.kind) < len(world.primitives)
    culled = render(culled_scene, K, T, SIZE)
    for k in full:
        assert np.array_equal(full[k], culled[k]), k


def test_tiled_render_equals_testing_every_primitive():
    """`render` tests each 16x16 tile only against primitives whose projected bounds overlap it;
    that must give exactly what testing every ray against every primitive gives."""
    params = {"sequences": 1, "frames": 30, "size": [40, 88], "seed": 5, "fx": 0.6, "format": 1}
    poses, _, world = synth.sequence_world(params, 0)
    H, W = 40, 88  # not a multiple of the tile size
    K = pixel_K((H, W))
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    for f in (0, 13, 29):
        scene = world.scene_at(f)
        tiled = render(scene, K, poses[f], (H, W))
        brute = render_points(scene, K, poses[f], uv)
        for k in tiled:
            assert np.array_equal(tiled[k].reshape(brute[k].shape), brute[k]), (f, k)
    empty = render(world.scene_at(0, behind_x=1e9), K, poses[0], (H, W))  # no primitives at all
    assert set(np.unique(empty["label"]).tolist()) <= {ROAD, SIDEWALK, SKY}


# ---------------------------------------------------------------------------------------------
# A rendered city on disk


def test_road_depth_on_disk_matches_ray_plane_intersection(city):
    cams = json.loads((city / "seq00" / "cameras.json").read_text())
    H, W = cams["height"], cams["width"]
    K = np.array(cams["K"])
    for fr in cams["frames"][::2]:
        i = fr["index"]
        T = np.array(fr["cam_to_world"]).reshape(4, 4)
        assert 1.5 <= T[2, 3] <= 1.65
        depth = np.load(city / "seq00" / "depth" / f"{i:06d}.npy")
        label = read_label(city / "seq00" / "labelIds" / f"{i:06d}.png")
        assert depth.dtype == np.float32 and depth.shape == (H, W)
        assert np.isfinite(depth).all() and depth.min() > 0
        d = _rays(K, T, H, W)
        expected = -T[2, 3] / d[..., 2]  # ray-plane intersection with Z = 0
        road = label == ROAD
        assert road.sum() > 0.1 * H * W
        np.testing.assert_allclose(depth[road], expected[road], rtol=1e-4)


def _reproject(K, T0, T1, depth0):
    H, W = depth0.shape
    u, v = _pixel_grid(H, W)
    pc = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(H * W)]) * depth0.ravel()
    pw = T0[:3, :3] @ pc + T0[:3, 3:]
    T1i = np.linalg.inv(T1)
    p1 = T1i[:3, :3] @ pw + T1i[:3, 3:]
    uv1 = (K @ p1)[:2] / p1[2]
    return uv1.T, p1[2]


def _frame(city, seq, i):
    cams = json.loads((city / seq / "cameras.json").read_text())
    fr = cams["frames"][i]
    return (np.array(fr["cam_to_world"]).reshape(4, 4), np.load(city / seq / "depth" / f"{i:06d}.npy"),
            read_rgb(city / seq / "rgb" / f"{i:06d}.png"), read_label(city / seq / "instanceIds" / f"{i:06d}.png"),
            cams)


@pytest.mark.parametrize("seq", ["seq00", "seq01"])
def test_consecutive_frames_agree_with_recorded_depth_and_pose(city, seq):
    """Every static point of frame t, moved by the recorded depth and poses into frame t+1, has the
    colour and depth that t+1's camera sees exactly there (the rays are cast through the sub-pixel
    points); a wrong pose or a wrong depth breaks it."""
    T0, d0, rgb0, inst0, cams = _frame(city, seq, 1)
    T1, *_ = _frame(city, seq, 2)
    K = np.array(cams["K"])
    # the street exactly as the generator built it, to cast rays for frame t+1
    params = json.loads((city / "city.json").read_text())["params"]
    poses, _, world = synth.sequence_world(params, int(seq[3:]))
    assert np.allclose(poses[2], T1)
    scene1 = world.scene_at(2)
    static = ~np.isin(inst0, cams["moving_instance_ids"])
    H, W = d0.shape

    def errors(T_target, depth):
        """(share of moved points seen at their predicted depth, mean colour error on those,
        mean colour error on all moved points inside the image)"""
        uv1, z1 = _reproject(K, T0, T_target, depth)
        seen = render_points(scene1, K, T1, uv1)
        inside = (uv1[:, 0] > 0) & (uv1[:, 0] < W) & (uv1[:, 1] > 0) & (uv1[:, 1] < H) & static.ravel()
        visible = inside & (np.abs(seen["depth"] - z1) < 1e-4 * z1)  # else occluded in t+1 (or wrong)
        colour = np.abs(seen["rgb"].astype(int) - rgb0.reshape(-1, 3).astype(int)).max(axis=1)
        return visible[inside].mean(), colour[visible].mean() if visible.any() else np.inf, colour[inside].mean()

    visible, colour_visible, _ = errors(T1, d0)
    assert visible > 0.9  # nearly every static point is seen again, at its predicted depth
    assert colour_visible < 0.05  # and with its colour (up to uint8 rounding)
    shifted = T1.copy()
    # 30 cm off to the right, up and forward (a pure forward shift would leave the depth of the
    # road and facades, planes parallel to the motion, unchanged: only colour would tell)
    shifted[:3, 3] += T1[:3, :3] @ [0.3, -0.3, 0.3]
    visible_bad, _, colour_bad = errors(shifted, d0)
    assert visible_bad < 0.1 and colour_bad > 2.0
    visible_bad, _, colour_bad = errors(T1, d0 * 1.05)  # depth 5 % too far
    assert visible_bad < 0.1 and colour_bad > 2.0


def test_warping_the_next_image_photometrically(city):
    """The plain photometric check a depth network sees: warp image t+1 into t with GT depth and
    pose (bilinear) and compare on static pixels; the median error is small and grows with a
    wrong pose."""
    T0, d0, rgb0, inst0, cams = _frame(city, "seq00", 2)
    T1, d1, rgb1, _, _ = _frame(city, "seq00", 3)
    K = np.array(cams["K"])
    H, W = d0.shape
    static = ~np.isin(inst0, cams["moving_instance_ids"]).ravel()

    def median_error(T_target):
        uv1, z1 = _reproject(K, T0, T_target, d0)
        x, y = uv1[:, 0] - 0.5, uv1[:, 1] - 0.5
        ok = (x >= 0) & (y >= 0) & (x < W - 1) & (y < H - 1) & static
        x0 = np.clip(np.floor(x).astype(int), 0, W - 2)
        y0 = np.clip(np.floor(y).astype(int), 0, H - 2)
        ax, ay = (x - x0)[:, None], (y - y0)[:, None]
        img = rgb1.astype(np.float64)
        warped = (img[y0, x0] * (1 - ax) * (1 - ay) + img[y0, x0 + 1] * ax * (1 - ay)
                  + img[y0 + 1, x0] * (1 - ax) * ay + img[y0 + 1, x0 + 1] * ax * ay)
        return np.median(np.abs(warped - rgb0.reshape(-1, 3))[ok])

    good = median_error(T1)
    shifted = T1.copy()
    shifted[:3, 3] += T1[:3, :3] @ [0.3, 0.0, 0.3]
    assert good < 3.0
    assert median_error(shifted) > 1.8 * good


def test_labels_and_instance_convention(city):
    seen: set[int] = set()
    for seq in ("seq00", "seq01"):
        for i in range(5):
            lab = read_label(city / seq / "labelIds" / f"{i:06d}.png")
            inst = read_label(city / seq / "instanceIds" / f"{i:06d}.png")
            assert lab.dtype == np.uint8 and inst.dtype == np.uint16
            seen |= set(np.unique(lab).tolist())
            assert np.array_equal(instance_label_ids(inst), lab)
            thing = np.isin(lab, THING_LABEL_IDS)
            assert (inst[thing] >= 1000).all() and (inst[~thing] == lab[~thing]).all()
    assert {ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR} <= seen


def test_moving_objects_are_recorded(city):
    cams = json.loads((city / "seq00" / "cameras.json").read_text())
    moving = set(cams["moving_instance_ids"])
    assert moving and all(m >= 1000 for m in moving)
    for fr in cams["frames"]:
        inst = read_label(city / "seq00" / "instanceIds" / f"{fr['index']:06d}.png")
        present = set(np.unique(inst).tolist())
        assert set(fr["dynamic_instance_ids"]) == moving & present


# ---------------------------------------------------------------------------------------------
# Determinism, completeness, resume


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        synth.generate(tmp_path / name, sequences=2, frames=2, size=(24, 48), seed=seed, progress=False)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert len(a) == 2 * (1 + 2 * 4) + 1
    assert a == b
    assert a.keys() == c.keys() and a["seq00/rgb/000000.png"] != c["seq00/rgb/000000.png"]


def test_parallel_workers_write_the_same_bytes(tmp_path):
    args = dict(sequences=2, frames=2, size=(16, 32), seed=9, progress=False)
    synth.generate(tmp_path / "one", workers=1, **args)
    synth.generate(tmp_path / "two", workers=2, **args)
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def test_killed_render_is_not_complete_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    import preprocess.synth_render as sr

    args = dict(sequences=2, frames=3, size=(24, 48), seed=2, progress=False)
    assert not synth.city_is_complete(tmp_path / "nothing")
    real_render = sr.render
    calls = {"n": 0}

    def dying_render(*a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt("killed")
        return real_render(*a, **k)

    monkeypatch.setattr(sr, "render", dying_render)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "killed", **args)
    assert not synth.city_is_complete(tmp_path / "killed")
    assert json.loads((tmp_path / "killed" / "city.json").read_text())["complete"] is False
    monkeypatch.setattr(sr, "render", real_render)
    res = synth.generate(tmp_path / "killed", **args)
    assert res["rendered"] == 2  # 4 frames survived the kill
    assert synth.city_is_complete(tmp_path / "killed")
    synth.generate(tmp_path / "fresh", **args)
    assert _tree_bytes(tmp_path / "killed") == _tree_bytes(tmp_path / "fresh")
    # a finished city is reused as it is; a missing frame file makes it incomplete again
    assert synth.generate(tmp_path / "fresh", **args)["reused"]
    (tmp_path / "fresh" / "seq01" / "depth" / "000002.npy").unlink()
    assert not synth.city_is_complete(tmp_path / "fresh")


def test_other_parameters_restart_cleanly(tmp_path):
    synth.generate(tmp_path / "c", sequences=3, frames=2, size=(16, 32), seed=0, progress=False)
    synth.generate(tmp_path / "c", sequences=2, frames=2, size=(16, 32), seed=0, progress=False)
    assert synth.city_is_complete(tmp_path / "c")
    assert not (tmp_path / "c" / "seq02").exists()
    assert json.loads((tmp_path / "c" / "seq01" / "cameras.json").read_text())["split"] == "val"


def test_refuses_a_folder_that_is_not_a_city(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="mine"):
        synth.generate(tmp_path / "mine", sequences=1, frames=1, size=(16, 32), progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_presets_are_the_documented_sizes():
    assert synth.city_preset("tiny") == (2, 6, (96, 192))
    assert synth.city_preset("small") == (3, 10, (192, 384))
    assert synth.city_preset("full") == (8, 40, (384, 768))
    with pytest.raises(ValueError, match="preset"):
        synth.generate_preset(Path("/nonexistent"), "huge")


def test_cli_renders_and_summarises(tmp_path):
    from preprocess.__main__ import main

    root = tmp_path / "cli"
    r = CliRunner().invoke(main, ["synth", "--data-root", str(root), "--sequences", "1", "--frames", "2",
                                  "--size", "16x32", "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert "wrote 2 frames" in r.output and str(root) in r.output and "frames/s" in r.output
    lines = r.stdout.strip().splitlines()  # (the progress bar goes to stderr)
    assert lines[0].startswith("synthetic city: plan: 1 sequences x 2 frames = 2 frames at 16x32")
    assert lines[-1].startswith(f"synthetic city: wrote 2 frames (0 already there) into {root} in ")
    assert synth.city_is_complete(root)
    assert read_rgb(root / "seq00" / "rgb" / "000001.png").shape == (16, 32, 3)
    r = CliRunner().invoke(main, ["synth", "--data-root", str(root), "--sequences", "1", "--frames", "2",
                                  "--size", "16x32", "--seed", "4"])
    assert r.exit_code == 0 and "already complete" in r.output
    r = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--demo-size", "tiny", "--size", "16by32"])
    assert r.exit_code != 0 and "HEIGHTxWIDTH" in r.output
    r = CliRunner().invoke(main, ["synth", "--dataset", "kitti", "--data-root", str(root)])
    assert r.exit_code != 0


def test_cli_out_places_the_preset_city_where_stages_look(tmp_path):
    from preprocess.__main__ import main
    from shared.stage import StageConfig, dataset_root

    r = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--demo-size", "tiny", "--frames", "1",
                                  "--size", "16x32"])
    assert r.exit_code == 0, r.output
    assert synth.city_is_complete(dataset_root(StageConfig(out=str(tmp_path), demo_size="tiny")))


def test_stages_render_the_tiny_preset_once_and_then_reuse_it(tmp_path, capsys):
    from shared.stage import StageConfig, dataset_root, frames_for

    cfg = StageConfig(out=str(tmp_path), demo_size="tiny")
    frames = frames_for(cfg)
    sequences, n, size = synth.city_preset("tiny")
    assert len(frames) == sequences * n
    assert (frames[0].height, frames[0].width) == size
    assert synth.city_is_complete(dataset_root(cfg))
    assert "rendered" in capsys.readouterr().out
    assert frames_for(cfg) == frames
    assert "reusing" in capsys.readouterr().out


def test_a_very_long_street_keeps_instance_numbers_below_1000():
    world = street(np.random.default_rng(0), length=9000.0, speed=1.0, seed=0)
    ids = {p.instance for p in world.primitives if p.instance >= 1000}
    assert {i // 1000 for i in ids} == {PERSON, CAR}  # k >= 1000 would spill into labelId 27
    assert len([i for i in ids if i // 1000 == CAR]) > 500  # capped, not dropped
    with pytest.raises(ValueError, match="seed"):
        synth.generate(Path("/nonexistent"), 1, 1, (16, 32), seed=-1)
