"""Several ranks on the CPU (gloo): Sinkhorn over split batches equals Sinkhorn over the whole batch,
and the trainer runs under a 2-rank process group with each rank on its own shards."""
from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train.sinkhorn import sinkhorn
from tests.fixtures.toy_shards import build_shard_set


def _init(rank: int, world: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


def _sinkhorn_rank(rank: int, world: int, store: str, scores: torch.Tensor, out: str) -> None:
    _init(rank, world, store)
    part = scores.chunk(world)[rank]
    torch.save(sinkhorn(part, 0.05, 3, distributed=True), f"{out}.{rank}")
    dist.destroy_process_group()


def test_distributed_sinkhorn_equals_one_big_batch(tmp_path):
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(90, 12), dim=1)
    scores[:45] += 0.3  # the ranks see different distributions: their shares must still add up
    mp.spawn(_sinkhorn_rank, args=(2, str(tmp_path / "store"), scores, str(tmp_path / "q")), nprocs=2)
    q = torch.cat([torch.load(tmp_path / f"q.{r}") for r in range(2)])
    assert torch.allclose(q, sinkhorn(scores, 0.05, 3), atol=1e-6)
    assert not torch.allclose(torch.cat([sinkhorn(p, 0.05, 3) for p in scores.chunk(2)]), q, atol=1e-3)


def _train_rank(rank: int, world: int, store: str, shards: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    _init(rank, world, store)
    from train.contrastive import ContrastiveConfig, train

    train(ContrastiveConfig(shards=shards, out=out, backbone="resnet18", num_prototypes=20, crop_height=32,
                            crop_width=64, epochs=1, max_steps=2, workers=0, log_every=1, checkpoint_every=1,
                            progress=False, device="cpu"))


def test_two_rank_training_runs(tmp_path):
    shards = build_shard_set(tmp_path / "shards", n_groups=4, n_shards=2)
    mp.spawn(_train_rank, args=(2, str(tmp_path / "store"), str(shards), str(tmp_path / "runs")), nprocs=2)
    logs = list((tmp_path / "runs").rglob("log.jsonl"))
    assert len(logs) == 1  # rank 0 alone writes
    log = [json.loads(ln) for ln in logs[0].read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert log[0]["images_per_s"] > 0 and all(r["loss"] > 0 for r in log)
    assert (logs[0].parent / "backbone_resnet18.pth").is_file()
