"""Is the trainer input-bound? End-to-end training images/s vs the model step alone, in one run.

    .venv/bin/python bench/train_throughput.py                    # GPU: 384x768, 16 images/step
    .venv/bin/python bench/train_throughput.py --compile --workers 12
    .venv/bin/python bench/train_throughput.py --shards runs/kitti/shards/depth-<hash>
    .venv/bin/python bench/train_throughput.py --loader-only --height 384 --width 768 --images 16 --workers 2

1. ceiling: the trainer's own step (`train.contrastive.train_step`: photometric on the device
   where the trainer puts it, forward, loss, backward, SGD) on random images that are already on
   the device (the positive indices come from one real batch), nothing else.
2. end to end: `train.contrastive.train` streaming a shard set (a toy set written at the requested
   size unless --shards is given): decoding, augmentation and sampling in DataLoader workers,
   host-to-device copies, logging and all.
Both use one config, and the device is set up by the trainer's `setup_device` (cuDNN autotuning,
TF32) and `step_setup` (channels_last, bf16, compile) before either is measured, so the ratio
compares like with like. Both run warm-up steps first (cuDNN autotuning, torch.compile) that are
not timed. Prints images/s, the ratio end-to-end / ceiling (the target is at least 0.85) and peak
GPU memory of each. Without a GPU it runs at a tiny size on the CPU to show that it works and says
so: CPU figures say nothing about GPU throughput.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.nets.semantic_fpn import DenseSwAVNet  # noqa: E402
from train.contrastive import (ContrastiveConfig, make_augment, setup_device, step_setup, train,  # noqa: E402
                               train_step)
from train.positives import Positives  # noqa: E402
from train.shard_loader import Augment, ShardStream, make_loader, open_shard_set, plan_epoch  # noqa: E402
from tests.fixtures.toy_shards import build_shard_set  # noqa: E402


def ceiling(cfg: ContrastiveConfig, aug: Augment, batch: dict, warmup: int, steps: int) -> tuple[float, float]:
    """(images/s, peak GB) of the trainer's step on device-resident random images, set up as
    `train` sets it up."""
    dev = setup_device(cfg)
    device, cuda = dev.device, dev.device.type == "cuda"
    torch.manual_seed(0)
    model = DenseSwAVNet(cfg.backbone, num_prototypes=cfg.num_prototypes).to(device, memory_format=dev.memory_format)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    setup = step_setup(model, cfg, dev, aug)
    images = torch.randint(0, 256, tuple(batch["images"].shape), dtype=torch.uint8, device=device)
    on_device = {**batch, "images": images, "photometric": batch["photometric"].to(device)}
    positives = Positives.from_batch(batch, device)

    for _ in range(warmup):
        train_step(model, on_device, positives, opt, setup)
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, on_device, positives, opt, setup)
    if cuda:
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return steps * images.shape[0] / dt, peak


def loader_only(root: Path, workers: int, warmup: int, steps: int, photometric_in_worker: bool) -> float:
    """images/s of the data path alone (decode, augment, sample; no model): the most it can feed."""
    ss = open_shard_set(root)
    plan = plan_epoch(ss, 0, 0, 1, workers)
    aug = Augment((ss.height // 32) * 32, (ss.width // 32) * 32, photometric_in_worker=photometric_in_worker)
    it = iter(make_loader(ShardStream(plan, 0, 0, 1, aug, 288000, 0.5, shuffle_buffer=4), workers, False))
    n = 0
    for _ in range(min(warmup, plan.steps - 1)):
        next(it)
    t0 = time.perf_counter()
    for b in it:
        n += b["images"].shape[0]
        if n >= steps * ss.images_per_group:
            break
    return n / (time.perf_counter() - t0)


@click.command()
@click.option("--device", default="auto", show_default=True)
@click.option("--height", type=int, default=0, help="image height (0: 384 on GPU, 64 on CPU)")
@click.option("--width", type=int, default=0, help="image width (0: 768 on GPU, 128 on CPU)")
@click.option("--images", type=int, default=0, help="images per step = one group (0: 16 on GPU, 4 on CPU)")
@click.option("--backbone", default="", help="resnet50 | resnet18 (default: resnet50 on GPU, resnet18 on CPU)")
@click.option("--prototypes", type=int, default=1000, show_default=True)
@click.option("--warmup", type=int, default=0, help="untimed steps (0: 20 on GPU, 2 on CPU)")
@click.option("--steps", type=int, default=0, help="timed steps (0: 60 on GPU, 4 on CPU)")
@click.option("--workers", type=int, default=8, show_default=True, help="DataLoader workers (CPU: 1)")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile both runs")
@click.option("--shards", default="", help="a real shard set to stream (default: a toy set at this size)")
@click.option("--loader-only", "loader_only_", is_flag=True, help="measure the data path alone (no model): what the CPUs can feed")
def main(device, height, width, images, backbone, prototypes, warmup, steps, workers, compile_, shards,
         loader_only_) -> None:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    cuda = dev.type == "cuda"
    height = height or (384 if cuda else 64)
    width = width or (768 if cuda else 128)
    images = images or (16 if cuda else 4)
    backbone = backbone or ("resnet50" if cuda else "resnet18")
    warmup = warmup or (20 if cuda else 2)
    steps = steps or (60 if cuda else 4)
    workers = workers if (cuda or loader_only_) else 1
    name = torch.cuda.get_device_name(dev) if cuda else "CPU"
    print(f"device: {name}; {backbone}, K={prototypes}, {images} images/step at {height}x{width}, "
          f"{warmup} warm-up + {steps} timed steps, compile={compile_}, workers={workers}")
    if not cuda:
        print("NOTE: no GPU here: tiny CPU run to show the benchmark works; the GPU was NOT measured.")

    with tempfile.TemporaryDirectory() as tmp:
        if shards:
            root = Path(shards)
        else:
            t0 = time.perf_counter()
            n_shards = 2 * max(workers, 1)
            n_groups = n_shards * (-(-(warmup + steps) // n_shards) + 1)  # enough for one epoch of the run
            root = build_shard_set(Path(tmp) / "shards", n_groups=n_groups, n_shards=n_shards, m=images // 2,
                                   h=height, w=width)
            print(f"toy shard set: {n_groups} groups in {n_shards} shards written in {time.perf_counter() - t0:.1f} s")
        if loader_only_:
            for in_worker in (False, True):
                ips = loader_only(root, workers, warmup, steps, in_worker)
                where = "in the workers" if in_worker else "left to the GPU"
                print(f"loader alone, {workers} workers, jitter + blur {where}: {ips:.1f} images/s "
                      f"({ips / max(workers, 1):.1f} per worker)")
            return
        # log_every = warmup: the first log line closes the warm-up, the later ones are the timed steps
        cfg = ContrastiveConfig(shards=str(root), out=str(Path(tmp) / "runs"), backbone=backbone,
                                num_prototypes=prototypes, epochs=1000, max_steps=warmup + steps, workers=workers,
                                compile=compile_, device=str(dev), log_every=warmup, checkpoint_every=10**9,
                                progress=False)
        setup_device(cfg)  # cuDNN autotuning and TF32 on before either figure is measured, as in `train`
        ss = open_shard_set(root)
        plan = plan_epoch(ss, 0, 0, 1, 0)
        aug = make_augment(cfg, ss, dev)
        one = next(iter(ShardStream(plan, 0, 0, 1, aug, cfg.features_per_step, cfg.lam, shuffle_buffer=1)))
        ceil_ips, ceil_peak = ceiling(cfg, aug, one, warmup, steps)

        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        run_dir = train(cfg)
        e2e_peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
        log = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
        timed = [r for r in log if r["step"] > warmup]
        secs = sum((r["step"] - p["step"]) * one["images"].shape[0] / r["images_per_s"] for p, r in zip(log, log[1:])
                   if r["step"] > warmup)
        e2e_ips = sum(r["step"] - p["step"] for p, r in zip(log, log[1:]) if r["step"] > warmup) * \
            one["images"].shape[0] / max(secs, 1e-9) if timed else float("nan")

    print()
    print(f"{'':28s}{'images/s':>10s}{'peak GB':>10s}")
    print(f"{'ceiling (the step alone)':28s}{ceil_ips:10.1f}{ceil_peak:10.2f}")
    print(f"{'end to end (from shards)':28s}{e2e_ips:10.1f}{e2e_peak:10.2f}")
    print(f"ratio end-to-end / ceiling: {e2e_ips / ceil_ips:.2f}  (target >= 0.85 on a GPU)  [{name}]")


if __name__ == "__main__":
    main()
