"""`python -m train finetune`: fine-tune on a fraction of the labels (docs/design.md#constants, "fine-tuning").

    --task semantic   SemanticFPN: the pre-training network's ResNet + FPN + semantic head, new 1x1
                      classifier over the 19 Cityscapes trainIds, per-pixel cross-entropy (ignore 255)
    --task instance   torchvision Mask R-CNN over the 8 Cityscapes instance classes, with our
                      pre-trained backbone and FPN
    --init            pretrained (the `make train` model of this DATASET/DEMO_SIZE) | scratch | a path
                      (a `make train` checkpoint, or a torchvision-format ResNet file: backbone only)

The run trains one network per (fold, repeat): --folds K cross-validates over all labelled frames
(KITTI's 200), otherwise the labelled "train" frames are the pool and "val" is scored; --repeats R
repeats with seeds seed..seed+R-1 on the same frames. Each network resumes from its own checkpoint.
Scoring is `python -m evaluate finetune-eval` (`make finetune` runs both); the folder layout is in
shared/finetune_data.py. The loop reads top to bottom: schedule table indexed by step, bf16
autocast + channels_last on CUDA, a host sync only every --log-every steps.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from shared.checkpoint import SaveClock, clear_stale_saves
from shared.config import check_config, config_hash, save_config
from shared.datasets import instance_encoding
from shared.device import pick_device
from shared.eta import Eta, gpu_recipe_warning
from shared.faults import kill_point
from shared.finetune_data import Fold, class_names, make_folds, parse_label_fraction, subrun_name, write_plan
from shared.frames import DataError
from shared.labels import IGNORE
from shared.nets.finetune_models import build_model, checkpoint_arch, init_kind, load_init
from shared.nets.semantic_fpn import normalize_images
from shared.photometric import apply_photometric
from shared.stage import UNLABELLED, frames_for, no_labels, output_dir, read_pointer, write_pointer
from train.finetune_config import (DEFAULT_ITERATIONS, OTHER_ITERATIONS, PRESETS, PRETRAIN_DATASET,  # noqa: F401
                                     TASK_DEFAULTS, FinetuneConfig)
from train.finetune_samples import FinetuneSamples, SampleSpec, collate
from train.loop import (NonFiniteLoss, RunLog, load_run_checkpoint, progress_bar, require_finite,  # noqa: F401
                        restore, save_run_checkpoint, seed_everything, set_lr, warmup_cosine)


# The options and presets live in train/finetune_config.py, which does not import torch.


def check_options(cfg: FinetuneConfig) -> None:
    """Refuse out-of-range values with one line naming the option: each field's own bounds
    (FinetuneConfig, the text `--help` shows), then what ties two options together."""
    def bad(ok: bool, option: str, msg: str) -> None:
        if not ok:
            raise click.BadParameter(msg, param_hint=f"'{option}'")

    check_config(cfg)
    try:
        parse_label_fraction(cfg.label_fraction)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--label-fraction'") from e
    bad(cfg.folds != 1, "--folds", "must be 0 (val split) or >= 2; got 1")
    bad(cfg.final_lr <= min(cfg.lr, cfg.new_lr), "--final-lr", f"must be at most min(--lr, --new-lr); got {cfg.final_lr}")
    for name in ("crop_height", "crop_width"):
        v = getattr(cfg, name)
        bad(v % 32 == 0, f"--{name.replace('_', '-')}", f"must be a multiple of 32; got {v}")
    bad(bool(cfg.init), "--init", "must be pretrained, scratch or a file path")


def semantic_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored pixels. logits [B, C, H, W], target int64 [B, H, W]
    (IGNORE = 255). In fp32: the softmax over classes loses digits in bf16. A batch of ignore pixels
    only gives 0 (not NaN), without asking the host how many pixels counted."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    return ce / (target != IGNORE).sum().clamp_min(1)


def resolve_init(cfg: FinetuneConfig) -> tuple[Path | None, str]:
    """(file or None, kind: scratch | checkpoint | torchvision)."""
    if cfg.init == "scratch":
        return None, "scratch"
    if cfg.init == "pretrained":
        src = dataclasses.replace(cfg, dataset=PRETRAIN_DATASET.get(cfg.dataset, cfg.dataset))
        path = read_pointer(src, "train", "model")
    else:
        path = Path(cfg.init)
    return path.resolve(), init_kind(path)


def initial_model(task: str, arch: str, n_classes: int, init: Path | None, seed: int) -> tuple[torch.nn.Module, set[str]]:
    """The network before its first step and the names of the parameters `init` set. Every layer is first
    drawn from `seed`, then the pre-trained part is overwritten: new layers are the same whatever the init."""
    seed_everything(seed)
    model = build_model(task, arch, n_classes)
    return model, set(load_init(model, task, arch, init) if init is not None else [])


def optimiser(model: torch.nn.Module, loaded: set[str], cfg: FinetuneConfig, total: int
              ) -> tuple[torch.optim.Optimizer, np.ndarray]:
    """SGD over two parameter groups, the pre-trained (`loaded`) at --lr and the new at --new-lr, and the
    learning rate of each group at each step [total, G] (warm-up, then cosine to --final-lr)."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n in loaded], "lr": cfg.lr, "name": "pretrained"},
              {"params": [p for n, p in named if n not in loaded], "lr": cfg.new_lr, "name": "new"}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.SGD(groups, lr=cfg.new_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    warmup = min(1000, total // 10) if cfg.warmup_steps < 0 else cfg.warmup_steps
    if warmup >= total:
        raise click.UsageError(f"--warmup-steps {warmup} must be below the run's {total} iterations")
    return opt, warmup_cosine(total, warmup, [g["lr"] for g in groups], cfg.final_lr)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, Any], lrs: np.ndarray,
               task: str, device: torch.device, autocast: Any, grad_clip: float = 0.0) -> torch.Tensor:
    """One SGD step on one batch; returns the detached loss (on the device: no host sync)."""
    set_lr(opt, lrs)
    x = apply_photometric(batch["images"].to(device, non_blocking=True),
                          batch["photometric"].to(device, non_blocking=True), 0.0)  # [B, 3, h, w] 0..1
    with autocast:
        if task == "semantic":
            x = normalize_images(x)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            loss = semantic_loss(model(x), batch["target"].to(device, non_blocking=True))
        else:  # Mask R-CNN normalises itself and returns its loss terms in training mode
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["target"]]
            loss = sum(model(list(x), targets).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:  # on the device: the norm is never read back
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach().float()


def train_network(cfg: FinetuneConfig, fold: Fold, repeat: int, run_dir: Path, init: Path | None,
                  run_key: str, budget: list[int], eta: Eta | None = None) -> bool:
    """Train (or resume) the network of (fold, repeat) in run_dir/f<k>_r<r>; False when --stop-after
    stopped it early. `budget` = [steps this invocation may still take] (0 = unlimited), shared by all.
    `eta`: the invocation's time estimate over every network's steps."""
    out = run_dir / subrun_name(fold.index, repeat)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_saves(out)
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    device = pick_device(cfg.device)
    cuda = device.type == "cuda"
    total = cfg.iterations or DEFAULT_ITERATIONS.get(cfg.dataset, OTHER_ITERATIONS)
    seed = cfg.seed + repeat

    # ---- model (new layers drawn from the seed, then the pre-trained part loaded), optimiser, schedule
    n_classes = len(class_names(cfg.task))
    model, loaded = initial_model(cfg.task, cfg.backbone, n_classes, init, seed)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    opt, lrs = optimiser(model, loaded, cfg, total)
    groups = opt.param_groups
    start = restore(load_run_checkpoint(ckpt_path, run_key, "settings, init or frames differ"), model, opt)
    if eta is not None:
        eta.done_before(min(start, total))
    name = f"fold {fold.index} repeat {repeat}"
    if start >= total:
        click.echo(f"finetune: {name}: complete ({total} steps), reusing {out}")
        return True
    click.echo(f"finetune: {name}: {'resuming at step %d/%d' % (start, total) if start else '%d steps' % total}, "
               f"{len(fold.train)} labelled frames (of {fold.pool}), seed {seed}, {len(loaded)} pre-trained "
               f"tensors, device {device}")
    spec = SampleSpec(cfg.task, (cfg.crop_height, cfg.crop_width), tuple(cfg.scale_range)[:2],  # type: ignore[arg-type]
                      cfg.image_width, cfg.colour_jitter, instance_encoding(cfg.dataset), seed)
    samples = FinetuneSamples(fold.train, spec, start * cfg.batch_size, (total - start) * cfg.batch_size)
    loader = DataLoader(samples, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                        collate_fn=collate, pin_memory=cuda, drop_last=True)
    net = torch.compile(model) if (cfg.compile and cuda and cfg.task == "semantic") else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (cuda and cfg.amp) else nullcontext()
    model.train()

    # ---- the step loop
    bar = progress_bar(total, start, cfg.progress, name)
    clock = SaveClock(cfg.checkpoint_minutes)
    loss_sum, step_log, t_log = torch.zeros((), device=device), start, time.time()
    step, stopped = start, False
    extra = {"net": {"task": cfg.task, "arch": cfg.backbone, "n_classes": n_classes},
             "init": str(init) if init else "scratch", "fold": fold.index, "repeat": repeat, "seed": seed}
    with RunLog(log_path, start) as log:
        for batch in loader:
            loss_sum += train_step(net, opt, batch, lrs[step], cfg.task, device, autocast, cfg.grad_clip)
            step += 1
            bar.update(1)
            if eta is not None:
                eta.update(1)
            kill_point()  # tests: killed between steps
            if step % cfg.log_every == 0 or step == total:
                loss = float(loss_sum) / (step - step_log)  # the one host sync per log interval
                require_finite([loss], f"in steps {step_log + 1}..{step} at lr {lrs[step - 1].max():.3g} ({out}); the "
                                       f"last checkpoint is intact. Try a lower --new-lr / --lr or --no-amp.")
                now = time.time()
                ips = (step - step_log) * cfg.batch_size / max(now - t_log, 1e-9)
                log.write({"step": step, "loss": loss, **{f"lr_{g['name']}": float(lrs[step - 1][i])
                                                          for i, g in enumerate(groups)},
                           "images_per_s": ips, "eta_s": (total - step) * cfg.batch_size / max(ips, 1e-9)})
                bar.set_postfix(loss=f"{loss:.3f}", ips=f"{ips:.1f}")
                loss_sum.zero_()
                step_log, t_log = step, now
            budget[0] -= 1
            stopped = budget[0] == 0
            if step % cfg.checkpoint_every == 0 or step == total or stopped or clock.due():
                if step != step_log:  # never save weights whose loss is not finite
                    require_finite([float(loss_sum)], f"before step {step} ({out}); the last checkpoint is intact")
                save_run_checkpoint(ckpt_path, model, opt, step, cfg, run_key, **extra)
                clock.saved()
            if stopped:
                break
    bar.close()
    return step >= total


def finetune(cfg: FinetuneConfig) -> Path:
    """Train every (fold, repeat) network of `cfg` (resuming); returns the run folder."""
    t0 = time.time()
    check_options(cfg)
    if cfg.dataset in UNLABELLED:
        raise DataError(cfg.data_root, no_labels(cfg, "fine-tuning"))
    fraction = parse_label_fraction(cfg.label_fraction)
    init, kind = resolve_init(cfg)
    if kind == "checkpoint" and checkpoint_arch(init) != cfg.backbone:  # type: ignore[arg-type]
        raise click.UsageError(f"--backbone {cfg.backbone} but --init {init} was pre-trained with "
                               f"{checkpoint_arch(init)}; pass --backbone {checkpoint_arch(init)}")  # type: ignore[arg-type]
    frames = frames_for(cfg)
    try:
        folds = make_folds(frames, cfg.task, fraction, cfg.folds, cfg.subset_seed)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    # A run is keyed by its settings, the exact initial weights and the frames it sees.
    run_key = config_hash(cfg, extra={"init": str(init), "init_kind": kind,
                                      "frames": [[f.id for f in fo.train] + [f.id for f in fo.val] for fo in folds]})
    tag = {"scratch": "scratch", "checkpoint": "pretrained", "torchvision": "torchvision"}[kind]
    run_dir = output_dir(cfg, "finetune", cfg.run or f"{cfg.task}-{tag}-{run_key}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.json", extra={"init_path": str(init) if init else None, "init_kind": kind,
                                                    "run_key": run_key})
    write_plan(run_dir, {"task": cfg.task, "classes": class_names(cfg.task), "dataset": cfg.dataset,
                         "encoding": instance_encoding(cfg.dataset), "init": tag,
                         "init_path": str(init) if init else None, "label_fraction": cfg.label_fraction,
                         "repeats": cfg.repeats, "seeds": [cfg.seed + r for r in range(cfg.repeats)],
                         "image_width": cfg.image_width, "run_key": run_key}, folds)
    steps = cfg.iterations or DEFAULT_ITERATIONS.get(cfg.dataset, OTHER_ITERATIONS)
    networks = len(folds) * cfg.repeats
    click.echo(f"finetune: plan: {cfg.task}, init {tag}{f' ({init})' if init else ''}, label fraction "
               f"{cfg.label_fraction}: {', '.join(str(len(f.train)) for f in folds)} train / "
               f"{', '.join(str(len(f.val)) for f in folds)} val frames over {len(folds)} fold(s) x {cfg.repeats} "
               f"repeat(s) = {networks} network(s) of {steps} steps, batch {cfg.batch_size}, crop "
               f"{cfg.crop_height}x{cfg.crop_width}, {cfg.backbone} on {pick_device(cfg.device).type}, into {run_dir}; "
               "the time estimate follows the first steps")
    pixels = cfg.crop_height * cfg.crop_width * cfg.batch_size
    warning = gpu_recipe_warning("finetune", pick_device(cfg.device).type, pixels,
                                 f"batch {cfg.batch_size} of {cfg.crop_height}x{cfg.crop_width} crops",
                                 "make finetune DEMO_SIZE=small (ResNet-18, batch 4 of 128x256)")
    if warning:
        click.echo(warning)
    budget = [cfg.stop_after or -1]
    eta = Eta("finetune", networks * steps, "step", click.echo)
    done = all(train_network(cfg, f, r, run_dir, init, run_key, budget, eta) for f in folds
               for r in range(cfg.repeats))
    if done:
        write_pointer(cfg, "finetune", cfg.task, run_dir)
    score = f"; score it with `python -m evaluate finetune-eval --runs {run_dir}`" if done else ""
    if done and eta.total <= 0:  # every network was finished before this run
        click.echo(f"finetune: nothing to do in {time.time() - t0:.1f} s; the {networks} finished network(s) are in "
                   f"{run_dir}{score}")
    else:
        state = f"finished {networks} network(s)" if done else "stopped (rerun to resume)"
        click.echo(f"finetune: {state} in {time.time() - t0:.1f} s; wrote checkpoints and logs into {run_dir}{score}")
    return run_dir

