"""Depth network benchmark: quality after a fixed budget, training and inference throughput.

    .venv/bin/python bench/depth_train_speed.py                       # all parts, CPU
    .venv/bin/python bench/depth_train_speed.py --parts speed         # throughput only
    .venv/bin/python bench/depth_train_speed.py --device cuda         # GPU throughput (bf16, channels_last)

Parts:
  quality  train on the synthetic city (preset --city, training frames) for --steps steps and
           evaluate on its held-out val sequence against the exact depth: abs rel and delta<1.25 of
           the model next to the trivial baseline (mean training depth map, median-scaled), same run.
  speed    training images/s at 640x192 batch 12: the step alone (forward, losses, backward, Adam;
           batch already on the device) and end to end through the trainer (cache, prefetch,
           augmentation) on the synthetic city.
  infer    inference images/s of one CPU worker (torch threads = 1) at 384x768 (Cityscapes working
           size); on CUDA, batched images/s.
Timings on a shared machine are noisy: run on an idle one for figures you compare.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.nets.depth_net import DepthModel  # noqa: E402
from train.depth import DepthTrainConfig, camera_tensors, resolved, step_setup, train, train_step  # noqa: E402


def city(root: Path, preset: str):
    from preprocess.synth import city_is_complete, generate_preset
    from shared.datasets.synthetic import read_synthetic

    if not city_is_complete(root):
        generate_preset(root, preset)
    return read_synthetic(root)


def step_throughput(device: torch.device, height: int, width: int, batch: int, steps: int, bf16: bool,
                    channels_last: bool, compile: bool) -> float:
    """Images/s of the trainer's own step (`train.depth.train_step`, set up by its `step_setup`) on
    random frames already on the device."""
    cfg = resolved(DepthTrainConfig(height=height, width=width, batch_size=batch, bf16=bf16,
                                    channels_last=channels_last, compile=compile))
    torch.manual_seed(0)
    model = DepthModel().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    run = step_setup(model, cfg, device)
    cuda = device.type == "cuda"
    frames = torch.randint(0, 256, (batch, 3, height, width, 3), dtype=torch.uint8, device=device)
    K = torch.tensor([[0.58 * width, 0, 0.5 * width], [0, 1.92 * height, 0.5 * height], [0, 0, 1.0]])
    cams = camera_tensors(K.expand(batch, 3, 3), width).to(device)
    count = iter(range(10**9))

    def one():
        train_step(model, frames, cams, next(count), opt, run)

    for _ in range(2 if not compile else 4):  # warm-up (oneDNN primitives, cuDNN autotune, compile)
        one()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def end_to_end_throughput(frames, out: Path, device: str, height: int, width: int, batch: int, steps: int,
                          compile: bool) -> float:
    cfg = DepthTrainConfig(out=str(out), data_root="unused", max_steps=steps, height=height, width=width,
                           batch_size=batch, device=device, image_every=0, ckpt_every=10 ** 9, log_every=max(1, steps // 2),
                           compile=compile)
    t0 = time.perf_counter()
    ckpt = train(cfg, frames, echo=lambda s: None)
    log = [json.loads(line) for line in (ckpt.parent / "log.jsonl").read_text().splitlines()]
    print(f"  (trainer wall time incl. frame cache and model build: {time.perf_counter() - t0:.1f} s)")
    return log[-1]["images_per_s"]


def inference_throughput(ckpt: Path, device: str, n: int, batch: int) -> float:
    from shared.nets.depth_predictor import DepthPredictor

    p = DepthPredictor(ckpt, device)
    rgb = np.random.default_rng(0).integers(0, 256, (batch, 384, 768, 3), dtype=np.uint8)
    p.predict_batch(rgb[:1])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        p.predict_batch(rgb)
    if device == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="quality,speed,infer")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--city", default="small", help="synthetic city preset for quality / end to end")
    ap.add_argument("--steps", type=int, default=300, help="quality: training steps")
    ap.add_argument("--height", type=int, default=96, help="quality: training height")
    ap.add_argument("--width", type=int, default=320, help="quality: training width")
    ap.add_argument("--batch", type=int, default=6, help="quality: batch size")
    ap.add_argument("--lr", type=float, default=1e-4, help="quality: learning rate (paper 1e-4)")
    ap.add_argument("--speed-steps", type=int, default=3, help="speed: timed steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0 = torch default)")
    ap.add_argument("--compile", action="store_true", help="CUDA: torch.compile the networks")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    dev = torch.device(a.device)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA device is available")
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="depth-bench-"))
    print(f"device {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else f'{torch.get_num_threads()} torch threads'}), work folder {work}")
    frames = city(work / f"city-{a.city}", a.city)
    ckpt = None

    if "quality" in parts:
        from evaluate.depth_metrics import DepthEvalConfig, run_depth_eval

        cfg = DepthTrainConfig(out=str(work / "runs"), data_root=str(work / f"city-{a.city}"), max_steps=a.steps,
                               height=a.height, width=a.width, batch_size=a.batch, lr=a.lr, device=a.device,
                               image_every=0, ckpt_every=100, log_every=25)
        t0 = time.perf_counter()
        ckpt = train(cfg, frames, echo=print)
        train_s = time.perf_counter() - t0
        rep = run_depth_eval(DepthEvalConfig(out=str(work / "runs"), device=a.device), frames, ckpt)
        m, b = rep["model"], rep["baseline"]
        print(f"quality after {a.steps} steps of {a.batch} at {a.width}x{a.height} ({train_s:.0f} s), "
              f"{rep['frames']} val frames of the synthetic city ({a.city}), exact depth, cap 80 m, median-scaled:")
        print(f"  {'':28s}{'abs_rel':>9s}{'sq_rel':>9s}{'rmse':>9s}{'d<1.25':>9s}")
        print(f"  {'model':28s}{m['abs_rel']:9.4f}{m['sq_rel']:9.4f}{m['rmse']:9.3f}{m['a1']:9.4f}")
        print(f"  {'baseline (mean train depth)':28s}{b['abs_rel']:9.4f}{b['sq_rel']:9.4f}{b['rmse']:9.3f}{b['a1']:9.4f}")
        print(f"  abs rel model / baseline = {m['abs_rel'] / b['abs_rel']:.3f}; d<1.25 model - baseline = {m['a1'] - b['a1']:+.4f}")

    if "speed" in parts:
        print("training throughput at 640x192, batch 12:")
        cuda = a.device == "cuda"
        step = step_throughput(dev, 192, 640, 12, a.speed_steps, bf16=cuda, channels_last=cuda, compile=a.compile and cuda)
        print(f"  step only ({'bf16 + channels_last' if cuda else 'fp32'}{' + compile' if a.compile and cuda else ''}): {step:.2f} images/s")
        if cuda:
            fp32 = step_throughput(dev, 192, 640, 12, a.speed_steps, bf16=False, channels_last=False, compile=False)
            print(f"  step only (fp32, contiguous): {fp32:.2f} images/s; ratio bf16+channels_last / fp32 = {step / fp32:.2f}")
        # the second half of the steps is timed (the first half carries warm-up and autotuning)
        e2e_steps = 60 if cuda else 2 * max(2, a.speed_steps)
        e2e = end_to_end_throughput(frames, work / "e2e", a.device, 192, 640, 12, e2e_steps, a.compile and cuda)
        print(f"  end to end through the trainer: {e2e:.2f} images/s (ratio to step only {e2e / step:.2f})")

    if "infer" in parts:
        from shared.nets.depth_predictor import DepthPredictor

        # The paper's network resolution (640x192), whatever the quality part trained at.
        ckpt = train(DepthTrainConfig(out=str(work / "runs-infer"), data_root="unused", max_steps=1, batch_size=1,
                                      image_every=0, device=a.device), frames, echo=lambda s: None)
        net = DepthPredictor(ckpt, "cpu")
        if a.device == "cpu":
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            ips = inference_throughput(ckpt, "cpu", 4, 1)
            torch.set_num_threads(n)
            print(f"inference 384x768 -> network {net.width}x{net.height} -> 384x768, one CPU worker "
                  f"(torch threads 1): {ips:.2f} images/s")
        else:
            ips = inference_throughput(ckpt, "cuda", 10, 16)
            print(f"inference 384x768 -> network {net.width}x{net.height}, CUDA batch 16 (bf16): {ips:.1f} images/s")

if __name__ == "__main__":
    main()
