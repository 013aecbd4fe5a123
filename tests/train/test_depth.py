"""The depth trainer: warping on the synthetic city, bad-input errors, a short run lowering the
loss, resuming at the same step with the same result, and the CLI end to end (CPU, tiny sizes)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shared.camera_torch import warp
from shared.frames import DataError, Frame, link_sequences
from shared.imageio import read_label, read_rgb
from shared.nets.depth_net import DepthModel
from shared.nets.depth_predictor import load_depth_checkpoint
from train.depth import (DepthTrainConfig, build_frame_cache, depth_losses, resolved,
                         train, training_triplets)
from train.depth_losses import photometric_error


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from more threads, and on a shared machine OpenMP threads
    that spin-wait on a busy core make a step up to ten times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from preprocess.synth import generate_preset

    root = tmp_path_factory.mktemp("city") / "city-tiny"
    generate_preset(root, "tiny")
    return root


@pytest.fixture(scope="module")
def city_frames(city):
    from shared.datasets.synthetic import read_synthetic

    return read_synthetic(city)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.tensor(img / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]


def test_warp_synthetic_city_with_true_depth_and_pose(city, city_frames):
    """GT depth of frame t + GT relative pose reproject frame t-1 into t; wrong depth is clearly worse."""
    by = {f.id: f for f in city_frames}
    cams = json.loads((city / "seq00" / "cameras.json").read_text())
    for t in (1, 2, 3):
        tgt = by[f"seq00_{t:06d}"]
        src = by[tgt.prev]
        K = torch.tensor(tgt.K(tgt.width, tgt.height), dtype=torch.float32)[None]
        T = torch.tensor(np.linalg.inv(src.pose_matrix()) @ tgt.pose_matrix(), dtype=torch.float32)[None]
        depth = torch.tensor(np.load(tgt.depth))[None, None]
        dynamic = cams["frames"][t]["dynamic_instance_ids"]
        static = torch.tensor(~np.isin(read_label(tgt.instance), dynamic))[None, None]
        target, source = _t(read_rgb(tgt.image)), _t(read_rgb(src.image))

        def errors(d):
            warped, valid = warp(source, d, T, K)
            m = valid & static
            return (warped - target).abs().mean(1, keepdim=True)[m], photometric_error(warped, target)[m]

        l1, photo = errors(depth)
        # The renderer aliases its fine textures (one ray per pixel), so the mean carries sampling
        # noise; the typical (median) static pixel is reproduced almost exactly.
        assert l1.median() < 0.012, float(l1.median())
        for factor in (0.7, 1.3):
            l1_w, photo_w = errors(depth * factor)
            assert l1_w.median() > 2.0 * l1.median(), (factor, float(l1_w.median()), float(l1.median()))
            assert photo_w.mean() > 1.4 * photo.mean()
        assert photometric_error(source, target)[static].mean() > 1.8 * photo.mean()


def _frame(fid: str, seq: str, i: int, w: int = 64, h: int = 32, split: str = "train") -> Frame:
    return Frame(id=fid, image=f"/data/{fid}.png", split=split, sequence=seq, index=i, width=w, height=h,
                 fx=0.6, fy=1.2, cx=0.5, cy=0.5)


def test_presets_fill_unset_fields_only():
    tiny = resolved(DepthTrainConfig(demo_size="tiny"))
    assert (tiny.height, tiny.width, tiny.batch_size, tiny.max_steps) == (64, 128, 4, 160)
    full = resolved(DepthTrainConfig())
    assert (full.height, full.width, full.batch_size, full.max_steps) == (192, 640, 12, 0)  # 0: from epochs
    assert resolved(DepthTrainConfig(demo_size="tiny", width=96)).width == 96


def test_recipes_the_paper_by_default_the_cpu_one_for_demo_sizes_and_only_where_unset():
    full = resolved(DepthTrainConfig())
    assert (full.recipe, full.pose_translation_scale, full.pose_forward_init, full.lr) == ("paper", 0.01, 0.0, 1e-4)
    for size in ("tiny", "small"):
        assert resolved(DepthTrainConfig(demo_size=size)).pose_translation_scale == 0.1
    assert resolved(DepthTrainConfig(recipe="cpu")).pose_translation_scale == 0.1  # full size, CPU recipe
    assert resolved(DepthTrainConfig(demo_size="tiny", recipe="paper")).pose_translation_scale == 0.01
    assert resolved(DepthTrainConfig(demo_size="tiny", pose_translation_scale=0.5)).pose_translation_scale == 0.5


def test_translation_scale_multiplies_only_the_translation():
    torch.manual_seed(0)
    a = DepthModel(pose_translation_scale=0.01).eval()
    b = DepthModel(pose_translation_scale=0.1).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        (ra, ta), (rb, tb) = a.pose(x, x.flip(-1)), b.pose(x, x.flip(-1))
    assert torch.equal(ra, rb)
    torch.testing.assert_close(tb, 10 * ta)


def test_forward_init_starts_the_camera_moving_forward():
    """The forward init shifts only the optical-axis translation, by its value, towards the later camera
    seeing the earlier one's points nearer (z < 0 in the earlier-to-later transform)."""
    x = torch.rand(4, 3, 64, 64)
    outputs = []
    for forward in (0.0, 0.015):
        torch.manual_seed(0)
        model = DepthModel(pose_translation_scale=0.1, pose_forward_init=forward).eval()
        bias = float(model.pose_decoder.convs[-1].bias[5])
        with torch.no_grad():
            outputs.append((model.pose(x, x.roll(1, 0)), bias))
    ((r0, t0), b0), ((r1, t1), b1) = outputs
    assert b1 == pytest.approx(-0.15)
    assert torch.equal(r0, r1) and torch.equal(t0[:, :2], t1[:, :2])
    torch.testing.assert_close(t1[:, 2] - t0[:, 2], torch.full((4,), 0.1 * (b1 - b0)))
    assert torch.all(t1[:, 2] < t0[:, 2] - 0.01)


def test_training_triplets_and_bad_input_errors_name_frames():
    good = link_sequences([_frame(f"a_{i}", "a", i) for i in range(4)])
    trips, problems = training_triplets(good, "train")
    assert trips == [("a_0", "a_1", "a_2"), ("a_1", "a_2", "a_3")] and problems == []

    short = link_sequences([_frame("b_0", "b", 0), _frame("b_1", "b", 1)])
    with pytest.raises(DataError, match=r"sequence b has 2 frame\(s\) \(b_0, b_1\)"):
        training_triplets(good + short, "train")
    trips, problems = training_triplets(good + short, "train", on_bad="skip")
    assert len(trips) == 2 and len(problems) == 1

    missing = [dataclasses.replace(f, next="c_9") if f.id == "a_3" else f for f in good]
    missing = [dataclasses.replace(f, prev="a_2", next="c_9") if f.id == "a_3" else f for f in missing]
    with pytest.raises(DataError, match="neighbour c_9 of frame a_3 is not in the frame index"):
        training_triplets(missing, "train")

    sized = [dataclasses.replace(f, width=80) if f.id == "a_3" else f for f in good]
    with pytest.raises(DataError, match=r"a_3.png: frame a_3 is 80x32 but its neighbour a_2 is 64x32"):
        training_triplets(sized, "train")
    trips, _ = training_triplets(sized, "train", on_bad="skip")
    assert trips == [("a_0", "a_1", "a_2")]

    with pytest.raises(DataError, match="no frame of split 'val' has both temporal neighbours"):
        training_triplets(good, "val")


def test_frame_cache_names_image_of_wrong_size(tmp_path, city_frames):
    f = dataclasses.replace(city_frames[0], width=100)
    with pytest.raises(DataError, match=r"000000.png: image is 192x96 but the frame index says 100x96"):
        build_frame_cache([f], 64, 64, tmp_path, workers=1)


def _fixed_loss(model: DepthModel, cache: np.ndarray, K: torch.Tensor, cfg: DepthTrainConfig) -> float:
    """Loss of the model on all targets without augmentation (frames are rows 0..n of seq00)."""
    n = cache.shape[0]
    rows = np.array([[i, i - 1, i + 1] for i in range(1, n - 1)])
    x = torch.from_numpy(np.asarray(cache[rows.reshape(-1)])).reshape(len(rows), 3, *cache.shape[1:])
    x = x.permute(0, 1, 4, 2, 3).float() / 255.0
    with torch.no_grad():
        loss, _ = depth_losses(model, x, x, K.expand(len(rows), 3, 3), cfg, torch.Generator().manual_seed(0))
    return float(loss)


def test_short_training_lowers_loss(tmp_path, city, city_frames):
    cfg = DepthTrainConfig(out=str(tmp_path), data_root=str(city), demo_size="tiny", max_steps=16, height=64,
                           width=96, lr=3e-4, ckpt_every=1000, image_every=0, log_every=4)
    ckpt = train(cfg, city_frames, echo=lambda s: None)
    rc = resolved(cfg)
    state = load_depth_checkpoint(ckpt)
    assert state["step"] == 16
    seq = [f for f in city_frames if f.sequence == "seq00"]
    cache = build_frame_cache(seq, rc.height, rc.width, tmp_path / "evalcache", workers=1)
    K = torch.tensor(seq[0].K(rc.width, rc.height), dtype=torch.float32)[None]
    torch.manual_seed(rc.seed)
    recipe = (None, rc.pose_translation_scale, rc.pose_forward_init)  # the pose output as trained (tiny: cpu recipe)
    before = _fixed_loss(DepthModel(*recipe).train(), cache, K, rc)
    model = DepthModel(*recipe)
    model.load_state_dict(state["model"])
    after = _fixed_loss(model.train(), cache, K, rc)
    assert after < 0.9 * before, (before, after)
    log = [json.loads(line) for line in (ckpt.parent / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12, 16] and all(r["images_per_s"] > 0 for r in log)
    assert (ckpt.parent / "images" / "step-000016.png").is_file()
    pointer = tmp_path / "synthetic-tiny" / "depth" / "model.current"
    assert pointer.read_text().strip() == "run-" + ckpt.parent.name[4:] + "/depth_net.pt"  # relative to its folder
    slim = (pointer.parent / pointer.read_text().strip()).resolve()
    assert slim == ckpt.resolve().with_name("depth_net.pt")  # readers get the slim inference file
    # It holds the depth encoder + decoder, bit for bit, and nothing of the pose net or the optimizer.
    light = load_depth_checkpoint(slim)
    assert light["step"] == 16 and light["config"] == state["config"] and "optimizer" not in light
    depth_keys = {k for k in state["model"] if k.startswith(("depth_encoder.", "depth_decoder."))}
    assert set(light["model"]) == depth_keys and len(depth_keys) < len(state["model"])
    for k in depth_keys:
        assert torch.equal(light["model"][k], state["model"][k]), k
    assert slim.stat().st_size < 0.5 * ckpt.stat().st_size


def test_resume_continues_from_same_step_with_same_result(tmp_path, city, city_frames):
    common = dict(data_root=str(city), demo_size="tiny", max_steps=4, ckpt_every=2, image_every=0, log_every=1,
                  height=64, width=64, batch_size=2)
    straight = train(DepthTrainConfig(out=str(tmp_path / "a"), **common), city_frames, echo=lambda s: None)
    cfg_b = DepthTrainConfig(out=str(tmp_path / "b"), **common)
    killed = train(cfg_b, city_frames, echo=lambda s: None, kill_after=3)  # killed after step 3: ckpt at 2
    assert load_depth_checkpoint(killed)["step"] == 2
    stale = killed.parent / ".checkpoint.pt.4242.tmp"  # what a save killed midway leaves
    stale.write_bytes(b"half")
    said: list[str] = []
    resumed = train(cfg_b, city_frames, echo=said.append)
    assert not stale.exists()
    assert any("resuming" in s and "at step 2/4" in s for s in said)
    a, b = load_depth_checkpoint(straight), load_depth_checkpoint(resumed)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-6, rtol=1e-5, msg=k)
    steps = [json.loads(line)["step"] for line in (resumed.parent / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # step 3 ran twice (before the kill, after resuming at 2), logged once
    said.clear()
    train(cfg_b, city_frames, echo=said.append)
    assert any("reusing finished run" in s for s in said)


def test_stop_after_checkpoints_where_it_stops_and_a_rerun_finishes_the_same_run(tmp_path, city, city_frames):
    common = dict(data_root=str(city), demo_size="tiny", max_steps=4, ckpt_every=1000, ckpt_minutes=0, image_every=0,
                  log_every=1, height=64, width=64, batch_size=2, out=str(tmp_path))
    said: list[str] = []
    ckpt = train(DepthTrainConfig(stop_after=3, **common), city_frames, echo=said.append)
    assert load_depth_checkpoint(ckpt)["step"] == 3  # saved at the stop, though --ckpt-every is 1000
    assert any(s.startswith("depth: stopped at step 3/4 (rerun to resume)") for s in said)
    assert not ckpt.with_name("depth_net.pt").exists()  # not finished: no inference weights, no pointer
    said.clear()
    done = train(DepthTrainConfig(**common), city_frames, echo=said.append)  # stop_after is not in the run key
    assert done == ckpt and any("resuming" in s and "at step 3/4" in s for s in said)
    assert load_depth_checkpoint(done)["step"] == 4 and done.with_name("depth_net.pt").is_file()


def test_cli_end_to_end_on_synthetic_city(tmp_path, city):
    from train.__main__ import main

    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["depth", "--dataset", "synthetic", "--data-root", str(city), "--out", str(out),
                                    "--demo-size", "tiny", "--max-steps", "2", "--workers", "1", "--width", "96",
                                    "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "checkpoint.pt" in res.output
    pointer = out / "synthetic-tiny" / "depth" / "model.current"
    ckpt = pointer.parent / pointer.read_text().strip()
    state = load_depth_checkpoint(ckpt)
    assert state["step"] == 2 and state["config"]["height"] == 64 and state["config"]["width"] == 96
    assert (ckpt.parent / "config.json").is_file()
    res = CliRunner().invoke(main, ["depth", "--out", str(out), "--height", "50"])
    assert res.exit_code != 0 and "multiples of 32 and at least 64" in res.output


def test_cli_bad_checkpoint_and_sequence_errors(tmp_path):
    from train.__main__ import main

    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="ckpt.pt"):
        load_depth_checkpoint(bad)
    folder = tmp_path / "two"
    for i in range(2):
        from shared.imageio import write_png
        write_png(folder / f"{i:03d}.png", np.zeros((32, 64, 3), np.uint8))
    res = CliRunner().invoke(main, ["depth", "--dataset", "folder", "--data-root", str(folder),
                                    "--out", str(tmp_path / "runs"), "--demo-size", "tiny"])
    assert res.exit_code != 0
    assert "has 2 frame(s)" in res.output and "000" in res.output, res.output


def test_lr_step_decay_at_the_papers_fraction():
    from train.depth import lr_at

    cfg = DepthTrainConfig()  # 20 epochs, decay x0.1 after 15
    assert lr_at(149, 200, cfg) == pytest.approx(1e-4) and lr_at(150, 200, cfg) == pytest.approx(1e-5)
    assert lr_at(224, 300, cfg) == pytest.approx(1e-4) and lr_at(225, 300, cfg) == pytest.approx(1e-5)


def test_augment_flip_and_colour_properties():
    from train.depth import augment

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 3, 8, 12, generator=g)
    K = torch.tensor([[10.0, 0, 5.0], [0, 10.0, 4.0], [0, 0, 1]]).expand(3, 3, 3)
    images, inputs, K2 = augment(x, K, torch.Generator().manual_seed(1), color_p=0.0, flip_p=0.0)
    assert torch.equal(images, x) and torch.equal(inputs, x) and torch.equal(K2, K)
    images, inputs, K2 = augment(x, K, torch.Generator().manual_seed(1), color_p=0.0, flip_p=1.0)
    assert torch.equal(images, x.flip(-1)) and torch.equal(inputs, x.flip(-1))
    assert torch.allclose(K2[:, 0, 2], torch.full((3,), 12 - 5.0))  # principal point mirrored
    images, inputs, _ = augment(x, K, torch.Generator().manual_seed(1), color_p=1.0, flip_p=0.0)
    assert torch.equal(images, x)  # the losses see the original pixels
    assert not torch.allclose(inputs, x) and inputs.min() >= 0 and inputs.max() <= 1
    # one jitter per triplet: the frames of a sample change the same way (same brightness factor)
    flat = torch.full((1, 3, 3, 4, 4), 0.5)
    _, jittered, _ = augment(flat, K[:1], torch.Generator().manual_seed(3), color_p=1.0, flip_p=0.0)
    assert torch.allclose(jittered[0, 0], jittered[0, 1]) and torch.allclose(jittered[0, 0], jittered[0, 2])


def test_plan_says_what_the_run_will_do_and_warns_of_a_gpu_recipe_on_a_cpu():
    from train.depth import eta_line, plan_lines

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    full = resolved(DepthTrainConfig())  # Monodepth2's recipe: 640x192, batch 12
    tiny = resolved(DepthTrainConfig(demo_size="tiny"))
    lines = plan_lines(full, cpu, 100, 300, 0, 2000)
    assert lines[0].startswith("depth: plan: 100 targets from 300 frames at 640x192, batch 12, steps 1..2000 on cpu")
    assert len(lines) == 2 and "GPU recipe" in lines[1] and "docs/depth.md" in lines[1]
    assert len(plan_lines(full, gpu, 100, 300, 0, 2000)) == 1  # on a GPU the recipe is what it is sized for
    assert len(plan_lines(tiny, cpu, 4, 6, 0, 24)) == 1
    assert "steps 11..24" in plan_lines(tiny, cpu, 4, 6, 10, 24)[0]  # a resumed run says where it starts
    assert eta_line(6.0, 3, 100) == "depth: 2.00 s/step over the first 3 steps: about 3.3 min for the remaining 100"


def test_checkpoint_by_wall_time(tmp_path, city, city_frames):
    """ckpt_every alone would save nothing before step 100; a wall-time interval below one step's time
    saves after every step, so a kill after step 3 keeps step 3."""
    common = dict(data_root=str(city), demo_size="tiny", max_steps=4, ckpt_every=100, image_every=0, log_every=1,
                  height=64, width=64, batch_size=2)
    timed = train(DepthTrainConfig(out=str(tmp_path / "t"), ckpt_minutes=1e-9, **common), city_frames,
                  echo=lambda s: None, kill_after=3)
    assert load_depth_checkpoint(timed)["step"] == 3
    steps_only = train(DepthTrainConfig(out=str(tmp_path / "s"), ckpt_minutes=0, **common), city_frames,
                       echo=lambda s: None, kill_after=3)
    assert not steps_only.exists()
