"""Several ranks on the CPU (gloo): Sinkhorn over split batches equals Sinkhorn over the whole batch;
two ranks train exactly like one process on both ranks' batches; and no rank's data can make the
others wait forever (a rank without positives, a non-finite loss on one rank).

Every two-rank run is joined with a deadline: a rank blocked in a collective fails the test instead
of hanging it. The ranks' process group also times out (well before the deadline), so a hang shows
up as an error in the collective that waited.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shared.checkpoint import load_checkpoint
from shared.frames import DataError
from shared.nets.semantic_fpn import DenseSwAVNet
from train import contrastive as C
from train.positives import PositiveGroups, Positives
from train.shard_loader import ShardStream, open_shard_set, plan_epoch
from train.sinkhorn import sinkhorn
from tests.fixtures.toy_shards import build_shard_set
from tests.train.test_sync_free import no_host_reads

DEADLINE_S = 300  # a two-rank run takes ~10-20 s on a loaded 2-core machine
COLLECTIVE_TIMEOUT_S = 120
STEPS = 3


def _init(rank: int, world: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def _spawn(fn, args: tuple, nprocs: int = 2) -> None:
    """mp.spawn with a deadline: a rank still running at the deadline is killed and the test fails."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            alive = [r for r, p in enumerate(ctx.processes) if p.is_alive()]
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"rank(s) {alive} still running after {DEADLINE_S} s: blocked in a collective")


def _sinkhorn_rank(rank: int, world: int, store: str, scores: torch.Tensor, out: str) -> None:
    _init(rank, world, store)
    part = scores.chunk(world)[rank]
    torch.save(sinkhorn(part, 0.05, 3, distributed=True), f"{out}.{rank}")
    dist.destroy_process_group()


def test_distributed_sinkhorn_equals_one_big_batch(tmp_path):
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(90, 12), dim=1)
    scores[:45] += 0.3  # the ranks see different distributions: their shares must still add up
    _spawn(_sinkhorn_rank, (2, str(tmp_path / "store"), scores, str(tmp_path / "q")))
    q = torch.cat([torch.load(tmp_path / f"q.{r}") for r in range(2)])
    assert torch.allclose(q, sinkhorn(scores, 0.05, 3), atol=1e-6)
    assert not torch.allclose(torch.cat([sinkhorn(p, 0.05, 3) for p in scores.chunk(2)]), q, atol=1e-3)


def test_shards_are_split_by_rank_and_worker_without_overlap(tmp_path):
    """Every (rank, worker) reads its own shards, together all of them, and all ranks take the
    same number of steps (a rank with more steps would wait in a collective for the others)."""
    ss = open_shard_set(build_shard_set(tmp_path / "s", n_groups=12, n_shards=12))
    for epoch in range(3):
        plans = [plan_epoch(ss, epoch, 5, 1, workers=3, rank=r, world=2) for r in range(2)]
        files = [f for p in plans for w in p.worker_shards for f in w]
        assert sorted(files) == sorted(str(Path(ss.root) / name) for name, _ in ss.shards)
        assert all(len(w) == 2 for p in plans for w in p.worker_shards)
        assert plans[0].steps == plans[1].steps == 6


# ---------------------------------------------------------------------------------------------
# the trainer on two ranks
#
# Two shards of one group each: in every epoch rank r reads the shard the epoch's shuffle puts at
# position r, and one process with groups_per_step=2 reads both, in that order. Augmentation is
# seeded per sample and a huge feature budget samples every usable location (no random draw), so
# the one process sees exactly the two ranks' batches side by side. BatchNorm is frozen (running
# statistics) in both: under DDP its batch statistics are per rank by design, which no loss
# normalisation can make equal to one process's.


def _cfg(shards: Path, out: Path, **kw) -> C.ContrastiveConfig:
    base = dict(shards=str(shards), out=str(out), backbone="resnet18", num_prototypes=20, crop_height=32,
                crop_width=64, epochs=STEPS, max_steps=STEPS, warmup_epochs=1.0, lr=0.5, workers=0,
                shuffle_buffer=0, features_per_step=10**9, log_every=1, checkpoint_every=1, progress=False,
                device="cpu", seed=4)
    base.update(kw)
    return C.ContrastiveConfig(**base)


def _frozen_bn_net(*args, **kwargs) -> DenseSwAVNet:
    net = DenseSwAVNet(*args, **kwargs)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return net


_REAL: dict = {}  # in a rank process: the functions a test replaced there


def _no_positives(batch, device) -> Positives:
    p = _REAL["from_batch"](batch, device)
    return dataclasses.replace(p, pixel=PositiveGroups(p.pixel.index[:0], p.pixel.group[:0], 0),
                               region=PositiveGroups(p.region.index[:0], p.region.group[:0], 0))


def _nan_loss(*args, **kwargs):
    """A NaN total on this rank alone: NaN features would reach the other rank through Sinkhorn's
    all-reduces anyway, a NaN total only through the gradients, after this step's loss was summed."""
    t = _REAL["loss"](*args, **kwargs)
    return type(t)(t.total * float("nan"), t.pixel, t.region)


def _train_rank(rank: int, world: int, store: str, shards: str, out: str, kw: dict, scenario: str) -> None:
    """One rank of a run: rank r writes into out/rank<r> (a rank other than 0 must leave it empty);
    `scenario` alters rank 1's data or the run. Leaves weights.<rank>.pt or error.<rank>.txt in out."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    _init(rank, world, store)
    C.DenseSwAVNet = _frozen_bn_net
    if rank == 1 and scenario == "no positives":
        _REAL["from_batch"] = Positives.from_batch
        Positives.from_batch = staticmethod(_no_positives)  # type: ignore[method-assign,assignment]
    if rank == 1 and scenario == "nan loss":
        _REAL["loss"] = C.dense_swav_loss
        C.dense_swav_loss = _nan_loss
    models: list[torch.nn.Module] = []
    real_step = C.train_step

    def step(model, *args):  # the distributed step reads nothing back either (tests/train/test_sync_free.py)
        models[:] = [model]
        with no_host_reads():
            return real_step(model, *args)

    C.train_step = step
    try:
        if scenario == "no checkpoint":  # rank 0 writes a checkpoint at step 1 that rank 1 cannot see
            C.train(_cfg(Path(shards), Path(out) / f"rank{rank}", stop_after=1, **kw))
            _init(rank, world, store + ".again")
        C.train(_cfg(Path(shards), Path(out) / f"rank{rank}", **kw))
    except (C.NonFiniteLoss, DataError) as e:
        Path(out, f"error.{rank}.txt").write_text(str(e))
        dist.destroy_process_group()
        return
    torch.save(models[0].state_dict(), Path(out, f"weights.{rank}.pt"))


def _run_two_ranks(tmp_path: Path, shards: Path, scenario: str = "", **kw) -> Path:
    out = tmp_path / "two"
    out.mkdir()
    _spawn(_train_rank, (2, str(tmp_path / "store"), str(shards), str(out), kw, scenario))
    return out


def _log(out: Path) -> list[dict]:
    logs = list(out.rglob("log.jsonl"))
    assert len(logs) == 1
    return [json.loads(ln) for ln in logs[0].read_text().splitlines()]


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory) -> Path:
    return build_shard_set(tmp_path_factory.mktemp("ddp") / "shards", n_groups=2, n_shards=2)


@pytest.fixture(scope="module")
def one_process_run(two_shards, tmp_path_factory):
    """The reference: one process, both groups in every step."""
    out = tmp_path_factory.mktemp("one")
    real, threads = C.DenseSwAVNet, torch.get_num_threads()
    C.DenseSwAVNet = _frozen_bn_net
    torch.set_num_threads(1)
    try:
        run_dir = C.train(_cfg(two_shards, out, groups_per_step=2))
    finally:
        C.DenseSwAVNet = real
        torch.set_num_threads(threads)
    return run_dir


def test_two_ranks_train_like_one_process_on_the_global_batch(two_shards, one_process_run, tmp_path):
    """Loss, positive counts and weights after 3 steps equal one process's with both ranks' groups
    in each step; the ranks' weights are identical; rank 1 writes nothing."""
    out = _run_two_ranks(tmp_path, two_shards)
    assert not list((out / "rank1").rglob("*"))  # rank 1 writes nothing: no log, checkpoint, pointer, export
    got, want = _log(out / "rank0"), _log(one_process_run)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for a, b in zip(got, want):
        for k in ("pixel_samples", "pixel_groups", "region_samples", "region_groups"):
            assert a[k] == b[k], (a["step"], k)
        for k in ("loss", "loss_pixel", "loss_region", "lr"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
    # the ranks' pixel sample counts differ in every step: a mean of the ranks' means is not the global mean
    cfg = _cfg(two_shards, tmp_path)
    ss = open_shard_set(two_shards)
    aug = C.make_augment(cfg, ss, torch.device("cpu"))
    for e, rec in enumerate(got):
        per_rank = [next(iter(ShardStream(plan_epoch(ss, e, cfg.seed, 1, 0, r, 2), 0, cfg.seed, 1, aug,
                                          cfg.features_per_step, cfg.lam, 0, r))) for r in (0, 1)]
        pix, reg = ([b[f"{lv}_index"].shape[0] for b in per_rank] for lv in ("pixel", "region"))
        assert pix[0] != pix[1]
        assert (sum(pix), sum(reg)) == (rec["pixel_samples"], rec["region_samples"])

    w0, w1 = (torch.load(out / f"weights.{r}.pt") for r in (0, 1))
    ref = load_checkpoint(one_process_run / "checkpoint.pt")["model"]
    ckpt = load_checkpoint(next((out / "rank0").rglob("checkpoint.pt")))
    assert ckpt["step"] == STEPS
    init = _frozen_bn_net("resnet18", num_prototypes=20).state_dict()
    moved = 0
    for k, v in ref.items():
        assert torch.equal(w0[k], w1[k]), k  # DDP: every rank applies the same averaged gradient
        assert torch.equal(ckpt["model"][k], w0[k]), k
        assert torch.allclose(w0[k].float(), v.float(), rtol=1e-5, atol=1e-6), k
        moved += not torch.equal(v, init[k])
    assert moved > 50  # the comparison is about trained weights, not the initialisation
    assert list((out / "rank0").rglob("backbone_resnet18.pth")) and list((out / "rank0").rglob("model.current"))


def test_rank_without_positives_does_not_hang(two_shards, tmp_path):
    """Rank 1 samples no positive at all: it still joins Sinkhorn's all-reduces and DDP's gradient
    all-reduce (a zero loss on the graph), and both ranks finish with the same weights."""
    out = _run_two_ranks(tmp_path, two_shards, scenario="no positives", max_steps=2)
    log = _log(out / "rank0")
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["loss"] > 0 and r["pixel_samples"] > 0 for r in log)
    w0, w1 = (torch.load(out / f"weights.{r}.pt") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


@pytest.mark.parametrize("check", ["log line", "checkpoint"])
def test_non_finite_loss_on_one_rank_stops_every_rank_with_one_message(two_shards, tmp_path, check):
    """A NaN loss on rank 1 only: both ranks stop at step 1 with the same message, whether the
    check comes at a log line or at a checkpoint between log lines, and nothing is checkpointed."""
    kw = dict(log_every=1) if check == "log line" else dict(log_every=3)
    out = _run_two_ranks(tmp_path, two_shards, scenario="nan loss", **kw)
    msgs = [(out / f"error.{r}.txt").read_text() for r in (0, 1)]
    assert msgs[0] == msgs[1] and "non-finite loss" in msgs[0] and "steps 1..1" in msgs[0]
    assert not list(out.rglob("checkpoint.pt")) and not list(out.glob("weights.*"))


def test_ranks_that_would_resume_from_different_steps_stop_together(two_shards, tmp_path):
    """Rank 0 resumes from its step-1 checkpoint, rank 1 sees none (its run folder is elsewhere, as
    on a disk another node does not share): both stop at start-up with the same error instead of
    rank 0 waiting at the end for a step rank 1 never takes."""
    out = _run_two_ranks(tmp_path, two_shards, scenario="no checkpoint")
    msgs = [(out / f"error.{r}.txt").read_text() for r in (0, 1)]
    assert all("would resume from steps [1, 0]" in m for m in msgs)
    assert [json.loads(ln)["step"] for ln in next((out / "rank0").rglob("log.jsonl")).read_text().splitlines()] == [1]
