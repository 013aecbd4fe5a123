"""`python -m train contrastive`: dense SwAV pre-training from a shard set (DESIGN §5, §6).

One step = `groups_per_step` copy-paste groups (16 images each by default) through the network;
pixel-level and region-level positive groups sampled by the loader; dense SwAV loss; SGD.
Everything the run writes lives in <out>/<dataset>[-<demo>]/train/<run>/:

    config.json       the resolved config
    checkpoint.pt     model, optimizer, step, RNG states, config, code version (atomic; resumed from)
    log.jsonl         one JSON line per logged step: loss terms, lr, images/s, ETA, positives
    backbone_<arch>.pth  the backbone in torchvision ResNet keys (loads into resnet50(), fc.* aside)

Run it again with the same config and it resumes from checkpoint.pt. Several GPUs: torchrun
--nproc-per-node G -m train contrastive ... (DistributedDataParallel; each rank streams its own
shards; Sinkhorn's totals span all ranks).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.distributed as dist

from shared.config import build_config, config_hash, config_options, field, save_config, to_dict
from shared.frames import DataError
from shared.nets.semantic_fpn import (DenseSwAVNet, backbone_state_dict_torchvision, load_backbone_weights,
                                      normalize_images)
from shared.stage import StageConfig, output_dir, read_pointer, write_pointer
from shared.checkpoint import code_version, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from train.photometric import apply_photometric
from train.shard_loader import Augment, ShardStream, make_loader, open_shard_set, plan_epoch
from train.swav_loss import dense_swav_loss


@dataclass
class ContrastiveConfig(StageConfig):
    shards: str = field("auto", "shard set folder, http(s) URL or 'pipe:CMD {name}'; auto = the one `make shards` "
                                "recorded for DATASET/DEMO_SIZE")
    proposals: str = field("depth", "region proposals whose shard set `--shards auto` picks")
    run: str = field("", "run folder name under train/ (empty: the config hash)", hash=False)
    backbone: str = field("resnet50", "ResNet of the network (resnet18: tests and demos only)",
                          choices=["resnet50", "resnet18"])
    init_weights: str = field("", "torchvision-format ResNet checkpoint for the backbone (empty: random init)")
    num_prototypes: int = field(1000, "K, the number of prototypes")
    temperature: float = field(0.1, "tau of softmax(z.c / tau)")
    sinkhorn_epsilon: float = field(0.05, "Sinkhorn-Knopp entropy weight")
    sinkhorn_iterations: int = field(3, "Sinkhorn-Knopp iterations")
    lam: float = field(0.5, "lambda: L = lambda L_pixel + (1 - lambda) L_region")
    features_per_step: int = field(288000, "features sampled per step at 384x768 x 16 images (scaled with size)")
    pixel_cell: int = field(4, "source-frame cell (pixels) that a pixel-level positive must share")
    groups_per_step: int = field(1, "copy-paste groups per step (one group = 2M = 16 images)")
    crop_height: int = field(0, "training crop height (0: the shard height, rounded down to a multiple of 32)")
    crop_width: int = field(0, "training crop width (0: the shard width, rounded down to a multiple of 32)")
    crop_scale: tuple[float, ...] = field((0.5, 1.0), "random resized crop: min,max share of the image area")
    photometric: str = field("auto", "where colour jitter + blur run: auto (GPU when training on CUDA, else the "
                                     "loader workers) | device | worker", choices=["auto", "device", "worker"],
                             hash=False)
    epochs: int = field(20, "passes over the shard set")
    max_steps: int = field(0, "stop the schedule after this many steps (0: epochs decide)")
    lr: float = field(0.1, "peak learning rate (after warm-up)")
    final_lr: float = field(1e-5, "learning rate at the end of the cosine decay")
    warmup_epochs: float = field(2.0, "linear warm-up length in epochs")
    momentum: float = field(0.9, "SGD momentum")
    weight_decay: float = field(1e-4, "SGD weight decay")
    seed: int = field(0, "seed of initialisation, shuffling, augmentation and sampling")
    workers: int = field(4, "DataLoader worker processes per GPU (0: load in the main process)", hash=False)
    shuffle_buffer: int = field(64, "groups held in each worker's shuffle buffer", hash=False)
    device: str = field("auto", "auto | cpu | cuda | cuda:N", hash=False)
    amp: bool = field(True, "bf16 autocast on CUDA", hash=False)
    compile: bool = field(False, "torch.compile the network (CUDA; first steps are slow)", hash=False)
    checkpoint_every: int = field(500, "steps between checkpoints", hash=False)
    log_every: int = field(10, "steps between log lines (and non-finite checks)", hash=False)
    stop_after: int = field(0, "stop after this many steps in this invocation, checkpointed (0: run to the end)",
                            hash=False)
    tensorboard: bool = field(False, "also write TensorBoard scalars (needs the tensorboard package)", hash=False)
    progress: bool = field(True, "show a progress bar", hash=False)


# DEMO_SIZE presets: fields still at their default take these values.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(backbone="resnet18", epochs=2, max_steps=6, warmup_epochs=0.5, checkpoint_every=3, log_every=1,
                 num_prototypes=100, workers=1),
    "small": dict(backbone="resnet18", epochs=4, max_steps=12, warmup_epochs=0.5, checkpoint_every=6, log_every=2,
                  num_prototypes=300, workers=2),
}


def apply_preset(cfg: ContrastiveConfig) -> ContrastiveConfig:
    defaults = ContrastiveConfig()
    changes = {k: v for k, v in PRESETS.get(cfg.demo_size, {}).items() if getattr(cfg, k) == getattr(defaults, k)}
    return dataclasses.replace(cfg, **changes)


def lr_schedule(total: int, warmup: int, peak: float, final: float) -> np.ndarray:
    """Per-step learning rate [total]: linear 0 -> peak over `warmup` steps, cosine peak -> final after."""
    warm = np.linspace(peak / max(warmup, 1), peak, warmup)
    t = np.arange(total - warmup) / max(total - warmup - 1, 1)
    cos = final + 0.5 * (peak - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warm, cos])[:total]


def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); a process group only under torchrun with several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_arg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def resolve_shards(cfg: ContrastiveConfig) -> str | Path:
    if cfg.shards != "auto":
        return cfg.shards  # a folder, an http(s) URL or a pipe: command (train/shard_reader.py)
    return read_pointer(cfg, "shards", cfg.proposals)


class NonFiniteLoss(RuntimeError):
    pass


def train(cfg: ContrastiveConfig) -> Path:
    """Train (or resume) the run of `cfg`; returns the run folder."""
    t_start = time.time()
    cfg = apply_preset(cfg)
    rank, world, device = setup_distributed(cfg.device)
    main_rank = rank == 0
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data: the shard set and every epoch's plan, so the schedule knows the run's length
    ss = open_shard_set(resolve_shards(cfg))
    crop_h = cfg.crop_height or (ss.height // 32) * 32
    crop_w = cfg.crop_width or (ss.width // 32) * 32
    if crop_h % 32 or crop_w % 32 or crop_h <= 0 or crop_w <= 0:
        raise click.UsageError(f"crop {crop_h}x{crop_w}: height and width must be positive multiples of 32")
    if cfg.demo_size and cfg.workers > len(ss.shards) // world:
        # demo shard sets are a shard or two; a full run gets the clear error of plan_epoch instead
        click.echo(f"contrastive: demo run: --workers {cfg.workers} -> {len(ss.shards) // world} "
                   f"(one worker per shard at most)")
        cfg = dataclasses.replace(cfg, workers=len(ss.shards) // world)
    on_device = cfg.photometric == "device" or (cfg.photometric == "auto" and cuda)
    aug = Augment(crop_h, crop_w, scale=tuple(cfg.crop_scale), pixel_cell=cfg.pixel_cell,  # type: ignore[arg-type]
                  photometric_in_worker=not on_device)
    plans = [plan_epoch(ss, e, cfg.seed, cfg.groups_per_step, cfg.workers, rank, world) for e in range(cfg.epochs)]
    epoch_starts = np.cumsum([0] + [p.steps for p in plans])  # [epochs + 1]
    total = int(epoch_starts[-1]) if cfg.max_steps <= 0 else min(cfg.max_steps, int(epoch_starts[-1]))
    if total <= 0:
        raise DataError(ss.root, f"{ss.n_groups} groups in {len(ss.shards)} shards make no step of "
                                 f"{cfg.groups_per_step} group(s) per worker; use fewer --workers or more groups")
    per_epoch = epoch_starts[-1] / cfg.epochs
    warmup = min(int(round(cfg.warmup_epochs * per_epoch)), total // 2)
    lrs = lr_schedule(total, warmup, cfg.lr, cfg.final_lr)  # [total]
    images_per_step = cfg.groups_per_step * ss.images_per_group * world

    # ---- run folder, model, optimiser, resume
    # The run is keyed by its settings and by the shard set it reads: new shards = a new run.
    run_key = config_hash(cfg, extra={"shards": ss.config_hash})
    run_dir = output_dir(cfg, "train", cfg.run or run_key)
    ckpt_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = DenseSwAVNet(cfg.backbone, num_prototypes=cfg.num_prototypes)
    if cfg.init_weights:
        load_backbone_weights(model, cfg.init_weights)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=float(lrs[0]), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start = 0
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    if ckpt is not None:
        if ckpt["config_hash"] != run_key:
            raise DataError(ckpt_path, f"belongs to config {ckpt['config_hash']}, not {run_key} (settings or shard set "
                                       f"differ); "
                                       f"pass another --run name to start a new run")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
    if main_rank:
        save_config(cfg, run_dir / "config.json", extra={"shards": str(ss.root), "shards_config_hash": ss.config_hash,
                                                       "total_steps": total, "warmup_steps": warmup,
                                                       "crop": [crop_h, crop_w]})
        _trim_log(log_path, start)
        where = (f"complete ({total} steps), reusing {run_dir}" if start >= total else
                 f"resuming at step {start}/{total}" if start else f"starting, {total} steps")
        click.echo(f"contrastive: {where}; {len(ss.shards)} shards x {ss.images_per_group}-image groups from {ss.root}; "
                   f"{cfg.backbone}, K={cfg.num_prototypes}, crop {crop_h}x{crop_w}, {images_per_step} images/step, "
                   f"device {device}" + (f" x {world} ranks" if world > 1 else ""))
        if plans[0].groups_used < plans[0].groups_available:
            click.echo(f"  note: an epoch uses {plans[0].groups_used}/{plans[0].groups_available} groups of this "
                       f"rank's shards: an epoch ends when the worker with the fewest groups runs out (shards of "
                       f"equal size and a worker count dividing {len(ss.shards)} use them all)")
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (cuda and cfg.amp) else nullcontext()
    tb = _tensorboard(run_dir) if (cfg.tensorboard and main_rank) else None

    # ---- the step loop
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, disable=not (cfg.progress and main_rank), unit="step", dynamic_ncols=True)
    log = open(log_path, "a") if main_rank else None
    step, stopped = start, False
    t_log, step_log = time.time(), start
    sums = torch.zeros(3, device=device)  # loss, pixel, region summed since the last log line
    counts = np.zeros(4)  # pixel samples, pixel groups, region samples, region groups
    last_good = start
    try:
        epoch = int(np.searchsorted(epoch_starts, start, side="right") - 1)
        while step < total:
            stream = ShardStream(plans[epoch], step - int(epoch_starts[epoch]), cfg.seed, cfg.groups_per_step, aug,
                                 cfg.features_per_step, cfg.lam, cfg.shuffle_buffer, rank)
            for batch in make_loader(stream, cfg.workers, pin_memory=cuda):
                for g in opt.param_groups:
                    g["lr"] = float(lrs[step])
                images = batch["images"].to(device, non_blocking=True)  # [B, 3, H, W] uint8
                if on_device:  # colour jitter + blur, each image with its own parameters
                    images = apply_photometric(images, batch["photometric"].to(device, non_blocking=True),
                                               aug.blur_sigma[1])  # [B, 3, H, W] float 0..1
                x = normalize_images(images)  # [B, 3, H, W] float
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
                    z = net(x)  # [B, D, h, w], unit norm
                # The loss in fp32: scores / tau feed a softmax over 1000 prototypes, and bf16 keeps ~3 digits.
                feats = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [B*h*w, D], index order b, y, x
                if feats.shape[0] != batch["locations"]:
                    raise RuntimeError(f"network output {tuple(z.shape)} does not match the loader's feature grid "
                                       f"({batch['locations']} locations): is the output stride still 4?")
                terms = dense_swav_loss(
                    feats, model.prototypes.weight.float(),
                    batch["pixel_index"].to(device, non_blocking=True), batch["pixel_group"].to(device, non_blocking=True),
                    batch["pixel_groups"],
                    batch["region_index"].to(device, non_blocking=True), batch["region_group"].to(device, non_blocking=True),
                    batch["region_groups"],
                    lam=cfg.lam, temperature=cfg.temperature, epsilon=cfg.sinkhorn_epsilon,
                    iterations=cfg.sinkhorn_iterations, distributed=world > 1)
                opt.zero_grad(set_to_none=True)
                terms.total.backward()
                opt.step()
                model.normalize_prototypes()
                sums += torch.stack([terms.total.detach(), terms.pixel.detach(), terms.region.detach()])
                counts += [batch["pixel_index"].numel(), batch["pixel_groups"],
                           batch["region_index"].numel(), batch["region_groups"]]
                step += 1
                bar.update(1)

                if step % cfg.log_every == 0 or step == total:
                    n = step - step_log
                    mean = (sums / n).tolist()  # the one host sync per log interval
                    if not all(math.isfinite(v) for v in mean):
                        raise NonFiniteLoss(
                            f"non-finite loss {mean[0]} (pixel {mean[1]}, region {mean[2]}) in steps {step_log + 1}..{step} "
                            f"at lr {lrs[step - 1]:.3g}; the last checkpoint (step {last_good}) is intact. "
                            f"Try a lower --lr, --no-amp, or check the shard set.")
                    now = time.time()
                    ips = n * images_per_step / max(now - t_log, 1e-9)
                    rec = {"step": step, "epoch": epoch, "loss": mean[0], "loss_pixel": mean[1], "loss_region": mean[2],
                           "lr": float(lrs[step - 1]), "images_per_s": ips,
                           "eta_s": (total - step) * images_per_step / max(ips, 1e-9),
                           "pixel_samples": counts[0] / n, "pixel_groups": counts[1] / n,
                           "region_samples": counts[2] / n, "region_groups": counts[3] / n}
                    if main_rank:
                        log.write(json.dumps(rec) + "\n")  # type: ignore[union-attr]
                        log.flush()  # type: ignore[union-attr]
                        bar.set_postfix(loss=f"{mean[0]:.3f}", lr=f"{rec['lr']:.3g}", ips=f"{ips:.1f}")
                        if tb is not None:
                            for k in ("loss", "loss_pixel", "loss_region", "lr", "images_per_s"):
                                tb.add_scalar(k, rec[k], step)
                    sums.zero_()
                    counts[:] = 0
                    t_log, step_log = now, step

                stopped = cfg.stop_after > 0 and step - start >= cfg.stop_after
                if step % cfg.checkpoint_every == 0 or step == total or stopped:
                    if step != step_log:  # never checkpoint weights whose loss was not checked
                        if not torch.isfinite(sums).all():
                            raise NonFiniteLoss(f"non-finite loss before step {step}; the last checkpoint "
                                                f"(step {last_good}) is intact. Try a lower --lr or --no-amp.")
                    if main_rank:
                        _checkpoint(ckpt_path, model, opt, step, cfg, run_key)
                    last_good = step
                    _barrier(world)
                if step >= total or stopped:
                    break
            if stopped:
                break
            epoch += 1
    finally:
        bar.close()
        if log is not None:
            log.close()
        if tb is not None:
            tb.close()

    if main_rank:
        wrote = [ckpt_path, log_path, run_dir / "config.json"]
        if step >= total:
            export = run_dir / f"backbone_{cfg.backbone}.pth"
            tmp = export.with_name(export.name + ".tmp")
            torch.save(backbone_state_dict_torchvision(model), tmp)
            os.replace(tmp, export)
            wrote.append(export)
            write_pointer(cfg, "train", "model", ckpt_path)
        state = "finished" if step >= total else f"stopped at step {step}/{total} (rerun to resume)"
        click.echo(f"contrastive: {state} in {time.time() - t_start:.1f} s; wrote:")
        for p in wrote:
            click.echo(f"  {p}")
    if world > 1:
        dist.destroy_process_group()
    return run_dir


def _checkpoint(path: Path, model: DenseSwAVNet, opt: torch.optim.Optimizer, step: int, cfg: ContrastiveConfig,
                run_key: str) -> None:
    save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "rng": rng_state(), "config": to_dict(cfg), "config_hash": run_key,
                     "net_args": model.net_args, "code_version": code_version()}, path)


def _trim_log(path: Path, start: int) -> None:
    """Drop log lines of steps after the checkpoint we resume from: they are about to be redone."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise click.UsageError("--tensorboard needs the tensorboard package (pip install tensorboard)") from e
    return SummaryWriter(str(run_dir / "tb"))


@click.command("contrastive")
@config_options(ContrastiveConfig)
def contrastive(**kwargs: Any) -> None:
    """Dense SwAV pre-training from a copy-paste shard set (resumes automatically)."""
    cfg = build_config(ContrastiveConfig, kwargs)
    try:
        train(cfg)
    except (NonFiniteLoss, DataError) as e:
        raise click.ClickException(str(e)) from e
