"""Depth network benchmark: steps to the baseline, quality after a fixed budget, training and inference throughput.

    .venv/bin/python bench/depth_train_speed.py                       # all parts, CPU
    .venv/bin/python bench/depth_train_speed.py --parts reach         # paper vs cpu recipe: steps to beat the baseline
    .venv/bin/python bench/depth_train_speed.py --parts speed         # throughput only
    .venv/bin/python bench/depth_train_speed.py --device cuda         # GPU throughput (bf16, channels_last)

Parts:
  reach    for each recipe (--recipes, default the paper's and the cpu one; `cpu+smoothness=1e-4+automask=false`
           is the cpu recipe with those trainer fields changed) and seed (--seeds): train on
           the demo city (--reach-city, default tiny) at its DEMO_SIZE preset's size and batch, one torch
           thread, and every --reach-every steps score the held-out val frames (abs rel, median-scaled,
           cap 80 m); print the first step, and the training CPU-seconds up to it (evaluation not
           counted), at which the learnt depth beats the mean training depth map, or "not reached
           within N steps" (--reach-cap).
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


def steps_to_baseline(root: Path, frames, cfg: DepthTrainConfig, cap: int, every: int) -> dict:
    """Train `cfg` on the city at `root` for up to `cap` steps (the schedule of a `cap`-step run),
    scoring its val frames every `every` steps; stops at the first score below the mean-depth
    baseline. -> {"step" (None: not reached), "cpu_s" (training only), "abs_rel", "baseline"}."""
    import torch.nn.functional as F

    from evaluate.depth_metrics import evaluate_depth, mean_depth_map, read_gt_depth, resize_nearest
    from shared.frames import by_id
    from shared.imageio import read_rgb
    from shared.nets.depth_net import disp_to_depth
    from train.depth import TripletBatches, build_frame_cache, lr_at, training_triplets

    cfg = resolved(cfg)
    triplets, _ = training_triplets(frames, "train")
    index = by_id(frames)
    used = sorted({i for t in triplets for i in t})
    row_of = {fid: r for r, fid in enumerate(used)}
    cache = build_frame_cache([index[i] for i in used], cfg.height, cfg.width, Path(cfg.out) / "cache", 1)
    rows = np.array([[row_of[t], row_of[p], row_of[n]] for p, t, n in triplets])  # [N,3]: t, t-1, t+1
    K = torch.tensor(np.stack([index[t].K(cfg.width, cfg.height) for _, t, _ in triplets]), dtype=torch.float32)
    cams = camera_tensors(K, cfg.width)
    val = [f for f in frames if f.split == "val" and f.depth]
    gts = [read_gt_depth(f.depth) for f in val]
    base = mean_depth_map([f.depth for f in frames if f.split == "train" and f.depth], gts[0].shape)
    baseline = float(np.mean([evaluate_depth(g, resize_nearest(base, g.shape))[0]["abs_rel"] for g in gts]))
    x = torch.stack([torch.from_numpy(np.array(read_rgb(f.image))).permute(2, 0, 1) for f in val]).float() / 255
    x = F.interpolate(x, (cfg.height, cfg.width), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    torch.manual_seed(cfg.seed)
    model = DepthModel(None, cfg.pose_translation_scale, cfg.pose_forward_init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run = step_setup(model, cfg, torch.device("cpu"))
    batches = TripletBatches(cache, rows, cfg.batch_size, cfg.seed)
    cpu, rel = 0.0, float("nan")
    for step in range(1, cap + 1):
        t0 = time.process_time()
        batch, targets = batches(step - 1)
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, cap, cfg)
        model.train()
        train_step(model, batch, cams[targets], step - 1, opt, run)
        cpu += time.process_time() - t0
        if step % every == 0 or step == cap:
            model.eval()
            with torch.no_grad():
                depth = disp_to_depth(model.disparities(x)[0], cfg.min_depth, cfg.max_depth)[:, 0].numpy()
            rel = float(np.mean([evaluate_depth(g, d)[0]["abs_rel"] for g, d in zip(gts, depth)]))
            if rel < baseline:
                return {"step": step, "cpu_s": cpu, "abs_rel": rel, "baseline": baseline}
    return {"step": None, "cpu_s": cpu, "abs_rel": rel, "baseline": baseline}


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


def recipe_variant(spec: str) -> tuple[str, dict]:
    """'cpu+smoothness=1e-4+automask=false' -> ('cpu', {'smoothness': 0.0001, 'automask': False}): a named
    recipe with trainer fields changed, each value converted to its field's type."""
    import dataclasses

    name, *changes = spec.split("+")
    types = {f.name: type(f.default) for f in dataclasses.fields(DepthTrainConfig)}
    out = {}
    for change in changes:
        key, _, text = change.partition("=")
        if key not in types:
            raise SystemExit(f"--recipes {spec!r}: DepthTrainConfig has no field {key!r}")
        out[key] = text.lower() in ("1", "true", "yes") if types[key] is bool else types[key](text)
    return name, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="reach,quality,speed,infer")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="", help="work folder (default: a temporary one)")
    ap.add_argument("--recipes", default="paper,cpu", help="reach: recipes to compare")
    ap.add_argument("--seeds", default="0,1,2", help="reach: seeds")
    ap.add_argument("--reach-city", default="tiny", help="reach: synthetic city preset (and DEMO_SIZE of the sizes)")
    ap.add_argument("--reach-cap", type=int, default=200, help="reach: give up after this many steps")
    ap.add_argument("--reach-every", type=int, default=10, help="reach: steps between evaluations")
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
    ckpt = None

    if "reach" in parts:
        import os

        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # CPU-seconds of one thread: comparable on a shared machine
        root = work / f"city-{a.reach_city}"
        reach_frames = city(root, a.reach_city)
        recipes, seeds = a.recipes.split(","), [int(s) for s in a.seeds.split(",")]
        size = resolved(DepthTrainConfig(demo_size=a.reach_city))
        print(f"steps to beat the mean-depth baseline on the {a.reach_city} city's val frames, {size.width}x"
              f"{size.height} batch {size.batch_size}, one torch thread, evaluated every {a.reach_every} steps, "
              f"load {os.getloadavg()[0]:.2f}:")
        print(f"  {'seed':>4s}" + "".join(f"  {r + ': steps':>16s}{'CPU-s':>8s}" for r in recipes))
        found: dict[str, list] = {r: [] for r in recipes}
        for seed in seeds:
            line = f"  {seed:4d}"
            for r in recipes:
                recipe, changes = recipe_variant(r)
                cfg = DepthTrainConfig(out=str(work / "reach" / f"{r}-{seed}"), data_root=str(root), demo_size=a.reach_city,
                                       recipe=recipe, seed=seed, device="cpu", **changes)
                res = steps_to_baseline(root, reach_frames, cfg, a.reach_cap, a.reach_every)
                found[r].append(res)
                steps = str(res["step"]) if res["step"] else f">{a.reach_cap}"
                line += f"  {steps:>16s}{res['cpu_s']:8.0f}"
            print(line, flush=True)
        for r in recipes:
            missed = [s for s, res in zip(seeds, found[r]) if res["step"] is None]
            if missed:
                at_cap = ", ".join(f"{res['abs_rel']:.3f}" for res in found[r] if res["step"] is None)
                print(f"  {r}: seed(s) {missed} not reached within {a.reach_cap} steps (abs rel at the cap "
                      f"{at_cap}, baseline {found[r][0]['baseline']:.3f})")
        torch.set_num_threads(n_threads)

    frames = city(work / f"city-{a.city}", a.city) if parts & {"quality", "speed", "infer"} else None

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
