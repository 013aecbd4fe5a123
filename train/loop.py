"""The scaffolding every trainer (depth, contrastive, PiCIE, fine-tuning) runs its steps in, written once:
seeding, the warm-up + cosine schedule, the non-finite check, checkpoint save and resume, the JSON-lines
log and the progress bar. A trainer file keeps what is its own: model, data, loss and step.

Resuming repeats the steps an uninterrupted run takes: the checkpoint holds the model, optimiser,
gradient scaler (where a trainer has one), every RNG state and the step; each trainer's sampler is a
function of (seed, step), so the step is also the sampler's position."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from shared.checkpoint import code_version, load_checkpoint, rng_state, save_checkpoint, set_rng_state, trim_log
from shared.config import to_dict
from shared.frames import DataError


class NonFiniteLoss(RuntimeError):
    """A loss that is NaN or infinite: the run stops before any checkpoint stores its weights."""


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (every device) from one seed: the model's initial draw."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tune_cuda(device: torch.device) -> None:
    """On CUDA: cuDNN picks the fastest kernels once (a run's input size is fixed) and matmuls use TF32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def warmup_cosine(total: int, warmup: int, peaks: Iterable[float], final: float) -> np.ndarray:
    """Learning rate of each parameter group at each step [total, G]: linear from peak/(warmup+1) up to
    (not reaching) the peak over `warmup` steps, then cosine from the peak down to `final` at the last step.

    Any run of two steps or more gets at least one warm-up step (and keeps one cosine step): the first
    updates of a freshly drawn head are the ones that diverge at the full rate, and a short test or demo
    run should take the same path as a long one, only shorter."""
    peaks = list(peaks)
    warmup = min(max(warmup, 1), total - 1) if total >= 2 else 0
    out = np.zeros((total, len(peaks)))
    t = np.arange(total - warmup) / max(total - warmup - 1, 1)  # 0 .. 1 over the cosine part
    for g, peak in enumerate(peaks):
        out[:warmup, g] = peak * np.arange(1, warmup + 1) / (warmup + 1)
        out[warmup:, g] = final + 0.5 * (peak - final) * (1 + np.cos(np.pi * t))
    return out


def capped_steps_note(max_steps: int, epochs: int, epoch_steps: int) -> str:
    """Why a run takes fewer steps than --max-steps asked for ('' when it does not): --epochs hold fewer.
    Said on the run's first line, with its folder, so a rerun with other settings (a new run folder)
    is never a surprise."""
    if 0 < epoch_steps < max_steps:
        return (f" (not --max-steps {max_steps}: {epochs} epoch(s) of this data hold {epoch_steps} steps; "
                f"raise --epochs for more)")
    return ""


def set_lr(opt: torch.optim.Optimizer, lrs: np.ndarray | float) -> None:
    """Each parameter group's rate from one row of `warmup_cosine` (or one rate for all)."""
    row = np.broadcast_to(np.asarray(lrs, dtype=float), (len(opt.param_groups),))
    for g, lr in zip(opt.param_groups, row):
        g["lr"] = float(lr)


def require_finite(values: Iterable[float], what: str) -> None:
    """Raise NonFiniteLoss naming `what` (the steps, the lr, the last good checkpoint, the cure) when any
    value is NaN or infinite."""
    values = list(values)
    if not all(math.isfinite(v) for v in values):
        raise NonFiniteLoss(f"non-finite loss {values[0]} {what}")


def save_run_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, cfg: Any,
                        run_key: str, scaler: Any = None, **extra: Any) -> None:
    """The checkpoint a run resumes from: model, optimiser, scaler, step, RNG states, config, the run's key
    and the code version, plus the trainer's own `extra` entries; written atomically."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "rng": rng_state(),
             "config": to_dict(cfg), "config_hash": run_key, **extra, "code_version": code_version()}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    save_checkpoint(state, path)


def load_run_checkpoint(path: Path, run_key: str, why: str | Callable[[dict[str, Any]], str] = "settings or data differ"
                        ) -> dict[str, Any] | None:
    """The checkpoint of this run (None: a fresh start); one of another run is an error that names it and
    `why` the keys differ (a text, or a function of the other run's checkpoint)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt is not None and ckpt.get("config_hash") != run_key:
        why = why(ckpt) if callable(why) else why
        raise DataError(path, f"belongs to config {ckpt.get('config_hash')}, not {run_key} ({why}); "
                              f"pass another --run name to start a new run")
    return ckpt


def restore(ckpt: dict[str, Any] | None, model: torch.nn.Module, opt: torch.optim.Optimizer,
            scaler: Any = None) -> int:
    """Load a checkpoint's model, optimiser, scaler and RNG states; returns the step to resume at (0: none)."""
    if ckpt is None:
        return 0
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"])


class RunLog:
    """The run's log.jsonl, one JSON line per logged step. Opening it drops the lines after the step the
    run resumes at (they are about to be redone) and a torn last line (a write the kill cut short), so
    every step is logged once and every line parses (shared/checkpoint.trim_log). `enabled` False
    (ranks other than 0) writes nothing."""

    def __init__(self, path: Path, resume_step: int, enabled: bool = True):
        self.path, self.fh = path, None
        if enabled:
            trim_log(path, resume_step)
            self.fh = open(path, "a")

    def write(self, rec: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(rec) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, start: int, enabled: bool, desc: str | None = None) -> Any:
    """tqdm over the run's steps, or nothing: when progress is off, and when no step is left (a finished
    run reused), where tqdm would print a full bar when opened and the same bar again when closed."""
    if not enabled or start >= total:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def export_backbone(model: torch.nn.Module, path: Path) -> Path:
    """The backbone in torchvision ResNet keys (loads into torchvision's resnet, fc.* aside), atomic and
    the same bytes for the same weights."""
    from shared.nets.semantic_fpn import backbone_state_dict_torchvision

    return save_checkpoint(backbone_state_dict_torchvision(model), path)
