"""`python -m train contrastive`: dense SwAV pre-training from a shard set
(docs/design.md#contrastive, #performance).

One step = `groups_per_step` copy-paste groups (16 images each by default) through the network;
pixel-level and region-level positive groups sampled by the loader; dense SwAV loss; SGD.
Everything the run writes lives in <out>/<dataset>[-<demo>]/train/<run>/:

    config.json       the resolved config
    checkpoint.pt     model, optimizer, step, RNG states, config, code version (atomic; resumed from)
    log.jsonl         one JSON line per logged step: loss terms, lr, images/s, ETA, positives
    backbone_<arch>.pth  the backbone in torchvision ResNet keys (loads into resnet50(), fc.* aside)

Run it again with the same config and it resumes from checkpoint.pt. Several GPUs: torchrun
--nproc-per-node G -m train contrastive ... (DistributedDataParallel; each rank streams its own
shards; Sinkhorn's totals and the loss's mean span all ranks, so G ranks step like one process on
their G batches, BatchNorm statistics aside, which stay per rank). Every rank reaches every
collective whatever its data, and the non-finite checks are all-reduced; rank 0 alone writes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click
import numpy as np
import torch
import torch.distributed as dist

from shared.checkpoint import SaveClock, clear_stale_saves
from shared.config import config_hash, save_config
from shared.device import pick_device
from shared.eta import Eta, gpu_recipe_warning
from shared.faults import kill_point
from shared.frames import DataError
from shared.nets.semantic_fpn import DenseSwAVNet, image_stats, load_backbone_weights, normalize_images
from shared.photometric import apply_photometric
from shared.stage import output_dir, portable_path, read_pointer, write_pointer
from train.contrastive_config import PRESETS, ContrastiveConfig, resolve_config  # noqa: F401  (re-exported)
from train.loop import (NonFiniteLoss, RunLog, capped_steps_note, export_backbone, load_run_checkpoint,  # noqa: F401
                        progress_bar, require_finite, restore, save_run_checkpoint, seed_everything, set_lr,
                        tune_cuda, warmup_cosine)
from train.positives import Positives
from train.shard_reader import is_remote
from train.shard_loader import (Augment, EpochPlan, ShardSet, ShardStream, check_batch, make_loader, open_shard_set,
                                plan_epoch)
from train.swav_loss import LossTerms, dense_swav_loss

# The options and presets live in train/contrastive_config.py, which does not import torch.


def setup_distributed(device_arg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); a process group only under torchrun with several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_arg)
    if device.type == "cuda" and device.index is None:  # this rank's GPU (set_device needs an index)
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


@dataclass(frozen=True)
class DeviceSetup:
    """Where this process trains and how every step runs there (`setup_device`)."""

    rank: int
    world: int
    device: torch.device
    memory_format: torch.memory_format  # of the images and the model: channels_last on CUDA
    autocast: Any  # the forward pass's context: bf16 autocast on CUDA with --amp, else a null context


def setup_device(cfg: ContrastiveConfig) -> DeviceSetup:
    """The process's place in the run (torchrun ranks) and the device settings every step runs
    under. Whatever measures the step (bench/train_throughput.py) calls this first, so it measures
    what the trainer runs."""
    rank, world, device = setup_distributed(cfg.device)
    cuda = device.type == "cuda"
    tune_cuda(device)
    return DeviceSetup(rank, world, device, torch.channels_last if cuda else torch.contiguous_format,
                       torch.autocast("cuda", dtype=torch.bfloat16) if (cuda and cfg.amp) else nullcontext())


@dataclass(frozen=True)
class StepSetup:
    """What every step uses and no step changes, built once before the loop (`step_setup`)."""

    net: torch.nn.Module  # the model as the step calls it: under DistributedDataParallel and/or torch.compile
    dev: DeviceSetup
    stats: tuple[torch.Tensor, torch.Tensor]  # normalisation mean, std [1, 3, 1, 1] on the device
    photometric_on_device: bool  # jitter + blur run on the device; False: the loader did them
    max_sigma: float  # the largest blur sigma: sets the blur kernel's size
    loss: dict[str, Any]  # dense_swav_loss's keywords (lam, temperature, epsilon, iterations, distributed)


def step_setup(model: DenseSwAVNet, cfg: ContrastiveConfig, dev: DeviceSetup, aug: Augment) -> StepSetup:
    """Wrap the model (already on the device, weights final: DDP broadcasts rank 0's) and put the
    step's constants on the device."""
    net: torch.nn.Module = model
    if dev.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.device.index] if
                                                        dev.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return StepSetup(net, dev, image_stats(dev.device), not aug.photometric_in_worker, aug.blur_sigma[1],
                     dict(lam=cfg.lam, temperature=cfg.temperature, epsilon=cfg.sinkhorn_epsilon,
                          iterations=cfg.sinkhorn_iterations, distributed=dev.world > 1))


def train_step(model: DenseSwAVNet, batch: dict[str, Any], positives: Positives, opt: torch.optim.Optimizer,
               setup: StepSetup) -> LossTerms:
    """One optimiser step on one loader batch (train/shard_loader.py collate_groups); returns the
    loss terms, still on the device. Nothing here waits for the device: the loop reads the losses
    back once per log line."""
    images = batch["images"].to(setup.dev.device, non_blocking=True)  # [B, 3, H, W] uint8
    if setup.photometric_on_device:  # colour jitter + blur, each image with its own parameters
        params = batch["photometric"].to(setup.dev.device, non_blocking=True)  # [B, 5]
        images = apply_photometric(images, params, setup.max_sigma)  # [B, 3, H, W] float 0..1
    x = normalize_images(images, setup.stats).contiguous(memory_format=setup.dev.memory_format)  # [B, 3, H, W]
    with setup.dev.autocast:
        z = setup.net(x)  # [B, D, h, w], unit norm
    # The loss in fp32: scores / tau feed a softmax over 1000 prototypes, and bf16 keeps ~3 digits.
    feats = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # [B*h*w, D], index order b, y, x
    if feats.shape[0] != positives.locations:
        raise RuntimeError(f"network output {tuple(z.shape)} does not match the loader's feature grid "
                           f"({positives.locations} locations): is the output stride still 4?")
    terms = dense_swav_loss(feats, model.prototypes.weight.float(), *positives.pixel, *positives.region, **setup.loss)
    opt.zero_grad(set_to_none=True)
    # Several ranks: each term is this rank's share of the global batch's loss (the shares add up
    # to it) and DDP averages the ranks' gradients, so the world size turns the average into the sum.
    (terms.total * setup.dev.world if setup.dev.world > 1 else terms.total).backward()
    opt.step()
    model.normalize_prototypes()
    return terms


def make_augment(cfg: ContrastiveConfig, ss: ShardSet, device: torch.device) -> Augment:
    """The loader's augmentation: the crop from the config or the shard size, colour jitter and blur
    on the training device (auto: when it is CUDA) or in the loader workers."""
    crop_h = cfg.crop_height or (ss.height // 32) * 32
    crop_w = cfg.crop_width or (ss.width // 32) * 32
    if crop_h % 32 or crop_w % 32 or crop_h <= 0 or crop_w <= 0:
        raise click.UsageError(f"crop {crop_h}x{crop_w}: height and width must be positive multiples of 32")
    on_device = cfg.photometric == "device" or (cfg.photometric == "auto" and device.type == "cuda")
    return Augment(crop_h, crop_w, scale=tuple(cfg.crop_scale), pixel_cell=cfg.pixel_cell,  # type: ignore[arg-type]
                   photometric_in_worker=not on_device)


def resolve_shards(cfg: ContrastiveConfig) -> str | Path:
    if cfg.shards != "auto":
        return cfg.shards  # a folder, an http(s) URL or a pipe: command (train/shard_reader.py)
    return read_pointer(cfg, "shards", cfg.proposals)


class LogWindow:
    """The steps since the last log line: their loss terms summed on the device, their positive
    counts (from shapes) on the host; read back once per log line. `distributed`: the ranks' sums
    are added up at each read (one all-reduce), so every rank logs the global batch's loss and
    every rank sees a non-finite loss on any rank: they all stop at the same step, with one message."""

    def __init__(self, device: torch.device, step: int, distributed: bool = False):
        self.sums = torch.zeros(3, device=device)  # loss, pixel, region (this rank's shares when distributed)
        self.counts = np.zeros(4)  # pixel samples, pixel groups, region samples, region groups
        self.since, self.t0 = step, time.time()
        self.distributed = distributed

    def add(self, terms: LossTerms, positives: Positives) -> None:
        self.sums += torch.stack([terms.total.detach(), terms.pixel.detach(), terms.region.detach()])
        self.counts += positives.counts()

    def close(self, step: int, epoch: int, lr: float, total: int, images_per_step: int, last_good: int
              ) -> dict[str, Any]:
        """The log record of the steps since the last line (one host sync), and a new window.
        A non-finite mean stops the run before any checkpoint can store its weights."""
        n = step - self.since
        if self.distributed:  # the shares summed: the global loss; the counts summed: the global batch's
            both = torch.cat([self.sums.double(), torch.from_numpy(self.counts).to(self.sums.device)])
            dist.all_reduce(both)
            values = (both / n).tolist()  # the one host sync per log interval
            mean, c = values[:3], np.asarray(values[3:])
        else:
            mean = (self.sums / n).tolist()  # the one host sync per log interval
            c = self.counts / n
        require_finite(mean, f"(pixel {mean[1]}, region {mean[2]}) in steps {self.since + 1}..{step} at lr {lr:.3g}; "
                             f"the last checkpoint (step {last_good}) is intact. Try a lower --lr, --no-amp, or check "
                             f"the shard set.")
        now = time.time()
        ips = n * images_per_step / max(now - self.t0, 1e-9)
        rec = {"step": step, "epoch": epoch, "loss": mean[0], "loss_pixel": mean[1], "loss_region": mean[2],
               "lr": lr, "images_per_s": ips, "eta_s": (total - step) * images_per_step / max(ips, 1e-9),
               "pixel_samples": c[0], "pixel_groups": c[1], "region_samples": c[2], "region_groups": c[3]}
        self.sums.zero_()
        self.counts[:] = 0
        self.since, self.t0 = step, now
        return rec

    def check_finite(self, step: int, last_good: int) -> None:
        """Before a checkpoint between log lines (a host sync at the checkpoint interval): never
        checkpoint weights whose loss was not checked. Distributed, the ranks' flags are summed
        first, so a non-finite loss on one rank stops every rank here."""
        if step == self.since:
            return
        if self.distributed:
            bad = (~torch.isfinite(self.sums)).any().float()
            dist.all_reduce(bad)
            stop = bool(bad > 0)
        else:
            stop = not torch.isfinite(self.sums).all()
        require_finite([float("nan") if stop else 0.0], f"in steps {self.since + 1}..{step}; the last checkpoint "
                                                       f"(step {last_good}) is intact. Try a lower --lr or --no-amp.")


def _batches(plans: list[EpochPlan], epoch_starts: np.ndarray, start: int, cfg: ContrastiveConfig, aug: Augment,
             rank: int, pin_memory: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(epoch, batch) of every step from `start` on, across epochs: the first epoch's stream resumes
    at the step it was left at."""
    first = int(np.searchsorted(epoch_starts, start, side="right") - 1)
    for epoch in range(first, len(plans)):
        stream = ShardStream(plans[epoch], max(0, start - int(epoch_starts[epoch])), cfg.seed, cfg.groups_per_step,
                             aug, cfg.features_per_step, cfg.lam, cfg.shuffle_buffer, rank)
        for batch in make_loader(stream, cfg.workers, pin_memory=pin_memory):
            yield epoch, check_batch(batch)  # a damaged shard stops the run here, named


@dataclass(frozen=True)
class RunPlan:
    """The run's data and length, known before any step: the shard set, every epoch's plan, the schedule."""

    cfg: ContrastiveConfig  # as run (a demo run's --workers capped at the shard count)
    ss: ShardSet
    aug: Augment
    plans: list[EpochPlan]
    epoch_starts: np.ndarray  # int [epochs + 1]: the first step of each epoch, then the steps of all epochs
    total: int
    warmup: int
    lrs: np.ndarray  # [total]
    images_per_step: int


def plan_run(cfg: ContrastiveConfig, dev: DeviceSetup) -> RunPlan:
    """The shard set and every epoch's plan, so the schedule knows the run's length."""
    ss = open_shard_set(resolve_shards(cfg))
    aug = make_augment(cfg, ss, dev.device)
    if cfg.demo_size and cfg.workers > len(ss.shards) // dev.world:
        # demo shard sets are a shard or two; a full run gets the clear error of plan_epoch instead
        click.echo(f"contrastive: demo run: --workers {cfg.workers} -> {len(ss.shards) // dev.world} "
                   f"(one worker per shard at most)")
        cfg = dataclasses.replace(cfg, workers=len(ss.shards) // dev.world)
    plans = [plan_epoch(ss, e, cfg.seed, cfg.groups_per_step, cfg.workers, dev.rank, dev.world) for e in range(cfg.epochs)]
    epoch_starts = np.cumsum([0] + [p.steps for p in plans])  # [epochs + 1]
    total = int(epoch_starts[-1]) if cfg.max_steps <= 0 else min(cfg.max_steps, int(epoch_starts[-1]))
    if total <= 0:
        raise DataError(ss.root, f"{ss.n_groups} groups in {len(ss.shards)} shards make no step of "
                                 f"{cfg.groups_per_step} group(s) per worker; use fewer --workers or more groups")
    per_epoch = epoch_starts[-1] / cfg.epochs
    warmup = min(int(round(cfg.warmup_epochs * per_epoch)), total // 2)
    lrs = warmup_cosine(total, warmup, [cfg.lr], cfg.final_lr)[:, 0]  # [total]
    return RunPlan(cfg, ss, aug, plans, epoch_starts, total, warmup, lrs,
                   cfg.groups_per_step * ss.images_per_group * dev.world)


def _announce(plan: RunPlan, dev: DeviceSetup, run_dir: Path, start: int) -> None:
    """Rank 0: save the resolved config and say what this invocation will do, and where."""
    cfg, ss, total, ips = plan.cfg, plan.ss, plan.total, plan.images_per_step
    crop_h, crop_w = plan.aug.height, plan.aug.width
    save_config(cfg, run_dir / "config.json", extra={
        "shards": ss.root if is_remote(ss.root) else portable_path(ss.root, run_dir, cfg.out),
        "shards_config_hash": ss.config_hash, "shards_digest": ss.digest, "total_steps": total,
        "warmup_steps": plan.warmup, "crop": [crop_h, crop_w],
        "seed_free_hash": config_hash(dataclasses.replace(cfg, seed=0), extra={"shards_digest": ss.digest})})
    where = (f"complete ({total} steps), reusing {run_dir}" if start >= total else
             f"resuming {run_dir} at step {start}/{total}" if start else
             f"starting, {total} steps{capped_steps_note(cfg.max_steps, cfg.epochs, int(plan.epoch_starts[-1]))}, "
             f"new run {run_dir}")
    click.echo(f"contrastive: {where}; {len(ss.shards)} shards x {ss.images_per_group}-image groups from {ss.root}; "
               f"{cfg.backbone}, K={cfg.num_prototypes}, crop {crop_h}x{crop_w}, {ips} images/step, "
               f"device {dev.device}" + (f" x {dev.world} ranks" if dev.world > 1 else "")
               + ("; the time estimate follows the first steps" if start < total else ""))
    warning = gpu_recipe_warning("contrastive", dev.device.type, crop_h * crop_w * ips,
                                 f"{cfg.backbone}, {ips} crops of {crop_h}x{crop_w} per step",
                                 "make train DEMO_SIZE=small (ResNet-18, 16 crops of 96x192) or TRAIN_ARGS="
                                 "\"--backbone resnet18 --crop-height 96 --crop-width 192\"")
    if warning and start < total:
        click.echo(warning)
    first = plan.plans[0]
    if first.groups_used < first.groups_available:
        click.echo(f"  note: an epoch uses {first.groups_used}/{first.groups_available} groups of this "
                   f"rank's shards: an epoch ends when the worker with the fewest groups runs out (shards of "
                   f"equal size and a worker count dividing {len(ss.shards)} use them all)")


def _finish(cfg: ContrastiveConfig, model: DenseSwAVNet, run_dir: Path, start: int, step: int, total: int,
            t_start: float) -> None:
    """Rank 0: the backbone export and the pointer of a finished run, and the last line."""
    wrote = [run_dir / "checkpoint.pt", run_dir / "log.jsonl", run_dir / "config.json"]
    if step >= total:
        export = run_dir / f"backbone_{cfg.backbone}.pth"
        if start < total or not export.is_file():  # a run that was already finished has its export
            export_backbone(model, export)
        wrote.append(export)
        write_pointer(cfg, "train", "model", run_dir / "checkpoint.pt")
    names = ", ".join(p.name for p in wrote)
    if start >= total:
        click.echo(f"contrastive: nothing to do in {time.time() - t_start:.1f} s; the finished run is {names} in {run_dir}")
    else:
        state = "finished" if step >= total else f"stopped at step {step}/{total} (rerun to resume)"
        click.echo(f"contrastive: {state} in {time.time() - t_start:.1f} s; wrote {names} into {run_dir}")


def train(cfg: ContrastiveConfig) -> Path:
    """Train (or resume) the run of `cfg` (presets already resolved: resolve_config); returns the run folder."""
    t_start = time.time()
    dev = setup_device(cfg)
    main_rank, device = dev.rank == 0, dev.device
    plan = plan_run(cfg, dev)
    cfg, ss, total, lrs = plan.cfg, plan.ss, plan.total, plan.lrs

    # ---- run folder, model, optimiser, resume
    # The run is keyed by its settings and by the shard set it reads, down to the checksums the
    # manifest lists (the loader verifies every shard against them): other shards = a new run.
    run_key = config_hash(cfg, extra={"shards": ss.config_hash, "shards_digest": ss.digest})
    run_dir = output_dir(cfg, "train", cfg.run or run_key)
    ckpt_path = run_dir / "checkpoint.pt"
    if main_rank:
        clear_stale_saves(run_dir)
    seed_everything(cfg.seed)
    model = DenseSwAVNet(cfg.backbone, num_prototypes=cfg.num_prototypes)
    if cfg.init_weights:
        load_backbone_weights(model, cfg.init_weights)
    model.to(device, memory_format=dev.memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=float(lrs[0]), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start = restore(load_run_checkpoint(ckpt_path, run_key, lambda other: _why_keys_differ(other, ss)), model, opt)
    _same_start_on_all_ranks(start, dev, ckpt_path)
    if main_rank:
        _announce(plan, dev, run_dir, start)
    setup = step_setup(model, cfg, dev, plan.aug)
    tb = _tensorboard(run_dir) if (cfg.tensorboard and main_rank) else None

    # ---- the step loop: lr from the schedule, one step, a log line every log_every steps (the one
    # read back from the device), a checkpoint every checkpoint_every
    stop = total if cfg.stop_after <= 0 else min(total, start + cfg.stop_after)
    bar = progress_bar(total, start, cfg.progress and main_rank)
    log = RunLog(run_dir / "log.jsonl", start, enabled=main_rank)
    window = LogWindow(device, start, distributed=dev.world > 1)
    batches = _batches(plan.plans, plan.epoch_starts, start, cfg, plan.aug, dev.rank, pin_memory=device.type == "cuda")
    eta = Eta("contrastive", stop - start, "step", click.echo if main_rank else lambda line: None)
    step = last_good = start
    clock = SaveClock(cfg.checkpoint_minutes, enabled=dev.world == 1)
    try:
        for step, (epoch, batch) in zip(range(start + 1, stop + 1), batches):  # step: steps done after this one
            set_lr(opt, lrs[step - 1])
            positives = Positives.from_batch(batch, device)
            terms = train_step(model, batch, positives, opt, setup)
            window.add(terms, positives)
            bar.update(1)
            eta.update(1)
            kill_point()  # tests: killed between steps
            if step % cfg.log_every == 0 or step == total:
                rec = window.close(step, epoch, float(lrs[step - 1]), total, plan.images_per_step, last_good)
                if main_rank:
                    _write_log(rec, log, bar, tb)
            if step % cfg.checkpoint_every == 0 or step == stop or clock.due():
                window.check_finite(step, last_good)
                if main_rank:
                    _checkpoint(ckpt_path, model, opt, step, cfg, run_key, ss.digest)
                clock.saved()
                last_good = step
                _barrier(dev.world)
    finally:
        batches.close()  # ends the loader's worker processes
        bar.close()
        log.close()
        if tb is not None:
            tb.close()
    if main_rank:
        _finish(cfg, model, run_dir, start, step, total, t_start)
    if dev.world > 1:
        dist.destroy_process_group()
    return run_dir


def _checkpoint(path: Path, model: DenseSwAVNet, opt: torch.optim.Optimizer, step: int, cfg: ContrastiveConfig,
                run_key: str, shards_digest: str = "") -> None:
    save_run_checkpoint(path, model, opt, step, cfg, run_key, shards_digest=shards_digest, net_args=model.net_args)


def _why_keys_differ(ckpt: dict[str, Any], ss: ShardSet) -> str:
    """Why a checkpoint belongs to another run: the shard set's digest when that differs."""
    if ckpt.get("shards_digest") != ss.digest:
        return f"it was trained on shard set digest {ckpt.get('shards_digest', '(not recorded)')} and {ss.root} now lists {ss.digest}"
    return "settings or shard set differ"


def _write_log(rec: dict[str, Any], log: RunLog, bar: Any, tb: Any) -> None:
    log.write(rec)
    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}", ips=f"{rec['images_per_s']:.1f}")
    if tb is not None:
        for k in ("loss", "loss_pixel", "loss_region", "lr", "images_per_s"):
            tb.add_scalar(k, rec[k], rec["step"])


def _same_start_on_all_ranks(start: int, dev: DeviceSetup, ckpt_path: Path) -> None:
    """Every rank must resume from one step: ranks that disagree would run different numbers of
    steps, and the ones with more would wait forever for the others (a run folder on a disk that
    not every node sees). All ranks compare, so all stop with the same error."""
    if dev.world == 1:
        return
    steps = [torch.zeros((), dtype=torch.int64, device=dev.device) for _ in range(dev.world)]
    dist.all_gather(steps, torch.full((), start, dtype=torch.int64, device=dev.device))
    found = [int(s) for s in steps]
    if len(set(found)) > 1:
        raise DataError(ckpt_path, f"ranks 0..{dev.world - 1} would resume from steps {found}: the run folder "
                                   f"must be on a filesystem that every rank reads (rank 0 alone writes it)")


def _barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise click.UsageError("--tensorboard needs the tensorboard package (pip install tensorboard)") from e
    return SummaryWriter(str(run_dir / "tb"))
