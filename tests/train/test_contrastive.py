"""The training loop end to end on a tiny shard set: the loss goes down, an interrupted run resumes
to the same losses, the export loads into torchvision, a non-finite loss stops the run cleanly."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision

from shared.nets.semantic_fpn import load_pretrained
from train import contrastive as C
from shared.checkpoint import load_checkpoint, save_checkpoint
from tests.fixtures.toy_shards import build_shard_set


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return build_shard_set(tmp_path_factory.mktemp("train") / "shards", n_groups=8, n_shards=2)


def _cfg(shards, out, **kw):
    base = dict(shards=str(shards), out=str(out), backbone="resnet18", num_prototypes=30, crop_height=32,
                crop_width=64, epochs=2, max_steps=6, warmup_epochs=0.25, lr=0.05, workers=0, log_every=1,
                checkpoint_every=2, progress=False, seed=3)
    base.update(kw)
    return C.ContrastiveConfig(**base)


def _losses(run_dir):
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(shard_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("full")
    return C.train(_cfg(shard_dir, out)), out


def test_loss_goes_down_and_positives_are_logged(full_run):
    run_dir, _ = full_run
    log = _losses(run_dir)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    loss = [r["loss"] for r in log]
    assert all(math.isfinite(v) for v in loss)
    assert np.mean(loss[-2:]) < np.mean(loss[:2]) - 0.02
    for r in log:
        assert r["loss"] == pytest.approx(0.5 * r["loss_pixel"] + 0.5 * r["loss_region"], rel=1e-5)
        assert r["pixel_groups"] > 0 and r["region_groups"] > 0 and r["pixel_samples"] >= 2 * r["pixel_groups"]


def test_export_loads_into_torchvision_and_checkpoint_reloads(full_run):
    run_dir, _ = full_run
    sd = torch.load(run_dir / "backbone_resnet18.pth", weights_only=True)
    ref = torchvision.models.resnet18(weights=None)
    res = ref.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == [] and sorted(res.missing_keys) == ["fc.bias", "fc.weight"]
    model, cfg = load_pretrained(run_dir / "checkpoint.pt")
    assert cfg["backbone"] == "resnet18" and model.prototypes.weight.shape == (30, 128)
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["step"] == 6 and ckpt["code_version"]
    assert (run_dir.parent / "model.current").read_text().strip() == f"{run_dir.name}/checkpoint.pt"


def test_interrupted_run_resumes_to_the_same_losses(full_run, shard_dir, tmp_path):
    """Stop after 2 steps, run 1 more, then lose that step as a kill would (restore the step-2
    checkpoint) and run to the end: every logged loss equals the uninterrupted run's."""
    run_full, _ = full_run
    cfg = _cfg(shard_dir, tmp_path)
    run_dir = C.train(C.ContrastiveConfig(**{**cfg.__dict__, "stop_after": 2}))
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 2
    assert not (run_dir / "backbone_resnet18.pth").exists()
    saved = (run_dir / "checkpoint.pt").read_bytes()
    C.train(C.ContrastiveConfig(**{**cfg.__dict__, "stop_after": 1}))
    assert [r["step"] for r in _losses(run_dir)] == [1, 2, 3]
    (run_dir / "checkpoint.pt").write_bytes(saved)  # the kill: step 3 never reached a checkpoint
    stale = run_dir / ".checkpoint.pt.4242.tmp"  # and its save, midway, left this
    stale.write_bytes(b"half")
    C.train(cfg)
    assert not stale.exists()
    got, want = _losses(run_dir), _losses(run_full)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want):
        for k in ("loss", "loss_pixel", "loss_region", "lr", "pixel_samples", "region_groups"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
    m1, _ = load_pretrained(run_dir / "checkpoint.pt")
    m2, _ = load_pretrained(run_full / "checkpoint.pt")
    for (k, p), q in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-5), k


def test_non_finite_loss_aborts_without_a_checkpoint(shard_dir, tmp_path, monkeypatch):
    real = C.dense_swav_loss

    def poisoned(*a, **kw):
        t = real(*a, **kw)
        return type(t)(t.total * float("nan"), t.pixel, t.region)

    monkeypatch.setattr(C, "dense_swav_loss", poisoned)
    with pytest.raises(C.NonFiniteLoss, match="non-finite loss"):
        C.train(_cfg(shard_dir, tmp_path, max_steps=2))
    assert not list(tmp_path.rglob("checkpoint.pt"))


def test_checkpoint_for_another_config_is_refused(full_run, shard_dir):
    run_dir, out = full_run
    cfg = _cfg(shard_dir, out, lr=0.2, run=run_dir.name)
    with pytest.raises(Exception, match="belongs to config"):
        C.train(cfg)


def test_atomic_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, p)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1
    assert [x.name for x in tmp_path.iterdir()] == ["c.pt"]


def test_photometric_on_device_path_trains_like_the_worker_path(full_run, shard_dir, tmp_path):
    run_full, _ = full_run
    run_dir = C.train(_cfg(shard_dir, tmp_path, photometric="device", max_steps=6, stop_after=2))
    a, b = _losses(run_dir), _losses(run_full)[:2]
    for x, y in zip(a, b):  # same data and parameters; only uint8 rounding of the jittered images differs
        assert x["loss"] == pytest.approx(y["loss"], abs=2e-2)
        assert x["pixel_samples"] == y["pixel_samples"]


def test_tensorboard_is_optional(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        import click
        with pytest.raises(click.UsageError, match="tensorboard package"):
            C._tensorboard(tmp_path)
    else:
        C._tensorboard(tmp_path).close()
        assert (tmp_path / "tb").is_dir()


def test_a_run_is_never_reused_against_another_shard_set_content(tmp_path):
    """The run records the digest of the shard set's listed checksums: a set with the same config
    but other shard bytes (rebuilt, or differently repaired) trains a new run, and a run named with
    --run refuses it, saying so; a finished run on the same set is reused."""
    import hashlib
    from tests.fixtures.toy_shards import build_shard_set

    root = build_shard_set(tmp_path / "set", n_groups=4, n_shards=2)
    first = C.train(_cfg(root, tmp_path / "out", max_steps=2, run=""))
    named = C.train(_cfg(root, tmp_path / "out", max_steps=2, run="mine"))
    assert load_checkpoint(named / "checkpoint.pt")["shards_digest"] == C.open_shard_set(root).digest
    assert json.loads((first / "config.json").read_text())["shards_digest"] == C.open_shard_set(root).digest
    assert C.train(_cfg(root, tmp_path / "out", max_steps=2, run="")) == first  # same set: reused

    # shard 1 rewritten with other groups, the manifest listing its new checksum (config hash unchanged)
    other = build_shard_set(tmp_path / "other", n_groups=4, n_shards=2, seed=1)
    data = (other / "shard-000001.tar").read_bytes()
    (root / "shard-000001.tar").write_bytes(data)
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][1].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(m))

    assert C.train(_cfg(root, tmp_path / "out", max_steps=2, run="")) != first  # a new run
    with pytest.raises(C.DataError, match="trained on shard set digest"):
        C.train(_cfg(root, tmp_path / "out", max_steps=2, run="mine"))


def test_runs_that_differ_only_in_seed_share_their_seed_free_hash(full_run, shard_dir, tmp_path):
    """`make eval` finds the seeds of one experiment by this record (evaluate.unsupervised.seed_siblings)."""
    _, out = full_run

    def record(**kw):
        run_dir = C.train(_cfg(shard_dir, tmp_path, stop_after=1, **kw))  # the record is written at the start
        return json.loads((run_dir / "config.json").read_text())["seed_free_hash"]

    first = json.loads(next((out).rglob("config.json")).read_text())["seed_free_hash"]
    assert record(seed=4) == first
    assert record(seed=4, lam=0.25) != first


def test_the_run_says_its_plan_first_and_what_it_wrote_last(full_run, shard_dir, capsys):
    run_dir, out = full_run
    export = run_dir / "backbone_resnet18.pth"
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    capsys.readouterr()
    assert C.train(_cfg(shard_dir, out)) == run_dir  # the finished run again
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"contrastive: complete (6 steps), reusing {run_dir}; 2 shards x 4-image groups")
    assert "device cpu" in lines[0]
    assert lines[-1].startswith("contrastive: nothing to do in ") and lines[-1].endswith(f" in {run_dir}")
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before  # the export is not written again
    assert export.is_file()


def test_a_new_run_estimates_its_time_after_the_first_steps(shard_dir, tmp_path, capsys):
    run_dir = C.train(_cfg(shard_dir, tmp_path, max_steps=6))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"contrastive: starting, 6 steps, new run {run_dir};") and "crop 32x64" in lines[0]
    assert lines[0].endswith("the time estimate follows the first steps")
    assert any(line.startswith("contrastive: ") and "s/step over the first 3 steps: about" in line for line in lines)
    assert lines[-1].startswith("contrastive: finished in ") and lines[-1].endswith(
        f"wrote checkpoint.pt, log.jsonl, config.json, backbone_resnet18.pth into {run_dir}")


@pytest.mark.parametrize("minutes,expected", [(0.0, [5, 6]), (1e-9, [1, 2, 3, 4, 5, 6])])
def test_a_slow_run_also_checkpoints_by_wall_time(shard_dir, tmp_path, monkeypatch, minutes, expected):
    """checkpoint_every 5 of 6 steps: by steps only, a kill at step 4 loses 4 steps; with a wall-time
    period shorter than a step, every step is saved."""
    saved, real = [], C._checkpoint
    monkeypatch.setattr(C, "_checkpoint", lambda path, model, opt, step, *rest: saved.append(step) or
                        real(path, model, opt, step, *rest))
    C.train(_cfg(shard_dir, tmp_path, checkpoint_every=5, checkpoint_minutes=minutes))
    assert saved == expected


def test_a_gpu_sized_recipe_on_a_cpu_says_so_before_training(shard_dir, tmp_path, monkeypatch, capsys):
    import shared.eta

    monkeypatch.setattr(shared.eta, "GPU_SIZED_PIXELS_PER_STEP", 32 * 64)  # the toy step counts as GPU-sized
    C.train(_cfg(shard_dir, tmp_path, stop_after=1))
    out = capsys.readouterr().out
    assert "contrastive: warning: resnet18, 4 crops of 32x64 per step is a GPU recipe" in out
    assert "CPU recipe: make train DEMO_SIZE=small" in out


def test_a_rerun_capped_by_its_epochs_says_so_and_where_it_went(shard_dir, tmp_path, capsys):
    # --config <a finished run's config.json> --max-steps 5 on a set whose epochs hold 4 steps: the old first
    # line said "starting, 4 steps" and named no folder, so a new run folder went unnoticed
    run_dir = C.train(_cfg(shard_dir, tmp_path, epochs=1, max_steps=50))
    first = capsys.readouterr().out.strip().splitlines()[0]
    steps = len((run_dir / "log.jsonl").read_text().splitlines())
    assert steps < 50
    assert first.startswith(f"contrastive: starting, {steps} steps (not --max-steps 50: 1 epoch(s) of this data hold "
                            f"{steps} steps; raise --epochs for more), new run {run_dir};")


def test_a_finished_run_prints_no_progress_bar(full_run, shard_dir, capsys):
    # tqdm opened at the end prints the full bar, and again when closed: a reused run printed it twice
    run_dir, out = full_run
    capsys.readouterr()
    assert C.train(_cfg(shard_dir, out, progress=True)) == run_dir
    said = capsys.readouterr()
    assert "6/6" not in said.err and said.out.startswith(f"contrastive: complete (6 steps), reusing {run_dir}")
