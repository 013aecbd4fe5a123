"""Fine-tuning throughput: the full training step (loader, colour jitter, forward, loss, backward, SGD)
beside the same network's forward + backward on random tensors already on the device, in one run.
The ratio says how much of the model's own speed the pipeline keeps (target >= 85 % on GPU).

    .venv/bin/python bench/finetune_speed.py                      # CPU, demo size (resnet18, 4 x 128x256)
    .venv/bin/python bench/finetune_speed.py --device cuda --backbone resnet50 --batch 16 --crop 512,1024 --workers 8

Data: the synthetic city of --demo-size (rendered on first use) under <out>/synthetic/.
Prints images/s of both and their ratio; nothing is written except the synthetic city.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared.finetune_data import class_names  # noqa: E402
from shared.stage import StageConfig, frames_for  # noqa: E402
from train.finetune import initial_model, semantic_loss, train_step  # noqa: E402
from train.finetune_samples import FinetuneSamples, SampleSpec, collate  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    ap.add_argument("--task", default="semantic", choices=["semantic", "instance"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", default="128,256", help="height,width")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and method")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (full step, model only)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--demo-size", default="small", choices=["tiny", "small", ""])
    ap.add_argument("--out", default="runs")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    crop = tuple(int(v) for v in args.crop.split(","))
    frames = [f for f in frames_for(StageConfig(dataset="synthetic", out=args.out, demo_size=args.demo_size))
              if f.split == "train"]
    model, _ = initial_model(args.task, args.backbone, len(class_names(args.task)), None, 0)
    model.to(device).train()
    if cuda:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    lrs = torch.full((1,), 1e-3).numpy()
    x = torch.randn(args.batch, 3, *crop, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 19, (args.batch, *crop), device=device)

    def model_only_step() -> torch.Tensor:  # the same network on random tensors already on the device
        with autocast:
            loss = semantic_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    # Rounds alternate the two, so a change of machine load hits both alike; medians are reported.
    spec = SampleSpec(args.task, crop, (0.5, 2.0), 0, 0.4, "cityscapes", 0)  # type: ignore[arg-type]
    n_batches = args.warmup + args.rounds * args.steps
    batches = iter(DataLoader(FinetuneSamples(frames, spec, 0, n_batches * args.batch), batch_size=args.batch,
                              num_workers=args.workers, collate_fn=collate, pin_memory=cuda, drop_last=True))
    for _ in range(args.warmup):
        train_step(net, opt, next(batches), lrs, args.task, device, autocast)
        if args.task == "semantic":
            model_only_step()
    full, model_only = [], []
    for _ in range(args.rounds):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = train_step(net, opt, next(batches), lrs, args.task, device, autocast)
        float(loss)
        _sync(device)
        full.append(args.steps * args.batch / (time.perf_counter() - t0))
        if args.task != "semantic":
            continue
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = model_only_step()
        float(loss)
        _sync(device)
        model_only.append(args.steps * args.batch / (time.perf_counter() - t0))
    if args.task != "semantic":
        print(f"full step: {statistics.median(full):.2f} images/s ({args.task}; the model-only figure is for "
              f"--task semantic)")
        return
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.backbone} {args.task}, batch {args.batch} x {crop[0]}x{crop[1]}, {name}, {args.workers} workers")
    f, m = statistics.median(full), statistics.median(model_only)
    print(f"  full fine-tuning step: {f:8.2f} images/s (median of {args.rounds} rounds of {args.steps} steps)")
    print(f"  model fwd+bwd only:    {m:8.2f} images/s")
    print(f"  ratio:                 {100 * f / m:8.1f} %")


if __name__ == "__main__":
    main()
