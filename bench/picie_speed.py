"""How fast does PiCIE train on this machine? Images/s of its training step and of its per-epoch
clustering, and the epoch throughput the two give together.

    .venv/bin/python bench/picie_speed.py                       # GPU: 384x768 frames, ResNet-50, 8 frames/step
    .venv/bin/python bench/picie_speed.py --frames 256 --batch 16
    .venv/bin/python bench/picie_speed.py --device cpu          # tiny CPU run: shows it works, says nothing of a GPU

1. step: `train.picie.train_step` (two views per frame: photometric + crop/flip, forward, PiCIE's
   loss, backward, Adam) on frames already on the device, after warm-up steps: view images/s.
2. epoch preparation: `train.picie.prepare_epoch` (mini-batch k-means over both views' sampled
   features, then every frame's labels) over --frames frames read from PNG files: frames/s.
3. epoch: view images trained per second of (training + preparation), the figure to put beside
   our trainer's end-to-end images/s (bench/train_throughput.py) at the same image size.
Prints peak GPU memory too. Our trainer feeds 16 images of the crop size per step; PiCIE's default
here feeds 8 frames x 2 views at half the frame size, as its 320-px views cut from 640-px images.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.nets.semantic_fpn import DenseSwAVNet  # noqa: E402
from train.picie import PicieConfig, Runtime, draw_epoch_views, prepare_epoch, train_step, training_frames  # noqa: E402


def write_frames(root: Path, n: int, height: int, width: int) -> None:
    """n frames of smooth random colour fields (PNG), enough structure for k-means to split."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(root / f"{i:05d}.png")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@click.command()
@click.option("--device", default="auto", help="auto | cpu | cuda")
@click.option("--height", type=int, default=0, help="frame height (0: 384 on GPU, 96 on CPU)")
@click.option("--width", type=int, default=0, help="frame width (0: 768 on GPU, 192 on CPU)")
@click.option("--backbone", default="", help="resnet50 | resnet18 (empty: resnet50 on GPU, resnet18 on CPU)")
@click.option("--batch", type=int, default=0, help="frames per step (0: 8 on GPU, 4 on CPU)")
@click.option("--frames", type=int, default=0, help="frames clustered per epoch (0: 128 on GPU, 8 on CPU)")
@click.option("--steps", type=int, default=0, help="timed steps (0: 30 on GPU, 3 on CPU)")
@click.option("--warmup", type=int, default=0, help="untimed steps first (0: 5 on GPU, 1 on CPU)")
@click.option("--workers", type=int, default=4, help="DataLoader workers of the clustering passes")
def main(device: str, height: int, width: int, backbone: str, batch: int, frames: int, steps: int, warmup: int,
         workers: int) -> None:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    gpu = dev.type == "cuda"
    height, width = height or (384 if gpu else 96), width or (768 if gpu else 192)
    backbone, batch = backbone or ("resnet50" if gpu else "resnet18"), batch or (8 if gpu else 4)
    frames, steps, warmup = frames or (128 if gpu else 8), steps or (30 if gpu else 3), warmup or (5 if gpu else 1)
    if not gpu:
        print("note: no GPU; a tiny CPU run that shows the benchmark works. CPU figures say nothing about GPU "
              "throughput.")
    with tempfile.TemporaryDirectory() as tmp:
        write_frames(Path(tmp) / "frames", frames, height, width)
        cfg = PicieConfig(dataset="folder", data_root=str(Path(tmp) / "frames"), out=str(Path(tmp) / "runs"),
                          size=f"{height}x{width}", backbone=backbone, batch_size=batch, workers=workers,
                          device=str(dev), progress=False)
        fs = training_frames(cfg)
        rt = Runtime(cfg, fs, (height, width), dev)
        torch.manual_seed(0)
        model = DenseSwAVNet(backbone, num_prototypes=cfg.num_clusters).to(dev).train()
        if gpu:
            model.to(memory_format=torch.channels_last)
            torch.cuda.reset_peak_memory_stats(dev)
        opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("prototypes")], lr=cfg.lr)
        views = draw_epoch_views(len(fs), 0, 0, cfg.crop_scale, cfg.flip)

        sync(dev)
        t0 = time.perf_counter()
        state = prepare_epoch(model, views, 0, cfg, rt, progress=False)
        sync(dev)
        t_prep = time.perf_counter() - t0

        pos, images = next(rt.batches(views.order[:batch]))
        for _ in range(warmup):
            train_step(model, opt, images, pos, views, state, rt)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            terms = train_step(model, opt, images, pos, views, state, rt)
        float(terms.total.detach())  # waits for the last step
        t_step = (time.perf_counter() - t0) / steps

    view_ips = 2 * batch / t_step
    prep_fps = len(fs) / t_prep
    # one epoch over F frames: F / batch steps plus one preparation over the same F frames
    epoch_ips = 2 / (1 / view_ips * 2 + 1 / prep_fps)
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if gpu else 'cpu'}), {backbone}, frames {height}x{width}, "
          f"views {rt.view_size[0]}x{rt.view_size[1]}, K={cfg.num_clusters}, {batch} frames = {2 * batch} view images/step")
    print(f"  train step:        {view_ips:8.1f} view images/s ({t_step * 1e3:.1f} ms/step)")
    print(f"  epoch preparation: {prep_fps:8.1f} frames/s (k-means + labels, both views, {len(fs)} frames from PNG, "
          f"{workers} workers)")
    print(f"  epoch:             {epoch_ips:8.1f} view images/s trained, preparation included")
    if gpu:
        print(f"  peak GPU memory:   {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
