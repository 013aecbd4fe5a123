"""Monocular depth metrics (the Eigen / Monodepth2 protocol) and `python -m evaluate depth`.

Per image: predicted depth is resized to the ground truth's size (through its inverse, which the
network predicts), pixels with ground truth in (min_depth, max_depth] are kept (optionally inside
the Garg crop for KITTI), the prediction is median-scaled (monocular depth has no scale), clipped
to [min_depth, max_depth], and abs rel, sq rel, RMSE, RMSE log and the delta < 1.25^k accuracies are
computed. A dataset's figures are the means over images.

The command evaluates a trained checkpoint against every frame that has ground-truth depth (the
synthetic city's exact depth, KITTI's projected LiDAR) and, in the same run, the trivial baseline:
the mean ground-truth depth map of the training frames, median-scaled the same way, so a number
can be read as "better than knowing only the average street layout" or not.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from shared.atomic import write_text
from shared.config import build_config, config_hash, config_options, field, save_config
from shared.frames import DataError, Frame
from shared.imageio import read_depth_map, resize_nearest
from shared.reuse import done_key, file_stamp, frames_stamp, mark_done, reuse
from shared.stage import StageConfig, frames_for, output_dir, read_pointer

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
# Garg et al.'s crop of the KITTI Eigen split, as fractions of (height, width).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """gt, pred: positive depths of the same valid pixels [N] -> the seven metrics."""
    gt = gt.astype(np.float64)
    pred = pred.astype(np.float64)
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def resize_depth(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth map [h,w] -> [H,W] bilinearly in inverse depth (what the network predicts)."""
    if pred.shape == tuple(size):
        return pred
    import torch
    import torch.nn.functional as F

    disp = torch.from_numpy(1.0 / np.maximum(pred.astype(np.float32), 1e-6))[None, None]
    disp = F.interpolate(disp, size, mode="bilinear", align_corners=False)
    return (1.0 / disp[0, 0]).numpy()


def eval_mask(gt: np.ndarray, min_depth: float, max_depth: float, garg_crop: bool) -> np.ndarray:
    mask = (gt > min_depth) & (gt <= max_depth) & np.isfinite(gt)
    if garg_crop:
        H, W = gt.shape
        crop = np.zeros_like(mask)
        crop[int(GARG_CROP[0] * H):int(GARG_CROP[1] * H), int(GARG_CROP[2] * W):int(GARG_CROP[3] * W)] = True
        mask &= crop
    return mask


def evaluate_depth(gt: np.ndarray, pred: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0,
                   garg_crop: bool = False, median_scaling: bool = True) -> tuple[dict[str, float], float] | None:
    """One image: gt [H,W] metres (0 = no measurement), pred [h,w] depth (any scale).

    Returns (metrics, median scale ratio gt/pred) or None when the image has no valid pixel.
    """
    if gt.ndim != 2 or pred.ndim != 2:
        raise ValueError(f"expected 2-D depth maps, got gt {gt.shape} and pred {pred.shape}")
    pred = resize_depth(pred, gt.shape)
    mask = eval_mask(gt, min_depth, max_depth, garg_crop)
    if not mask.any():
        return None
    g, p = gt[mask], pred[mask].astype(np.float64)
    ratio = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = np.clip(p * ratio, min_depth, max_depth)
    return depth_errors(g, p), ratio


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS} if rows else {}


def read_gt_depth(path: str | os.PathLike) -> np.ndarray:
    """Ground-truth depth in metres: .npy float (synthetic city) or .npz with velodyne_depth (KITTI).
    PNG is refused: its units (e.g. KITTI's depth * 256) are not known here."""
    p = Path(path)
    if p.suffix not in (".npy", ".npz"):
        raise DataError(p, "ground-truth depth must be .npy or .npz (metres)")
    return read_depth_map(p)


def mean_depth_map(paths: list[str], size: tuple[int, int]) -> np.ndarray:
    """The trivial baseline: per-pixel mean of the valid ground truth [H,W] (resized); pixels never
    measured (sparse LiDAR) take the overall median."""
    total = np.zeros(size, np.float64)
    count = np.zeros(size, np.float64)
    for p in paths:
        gt = resize_nearest(read_gt_depth(p), size)
        valid = (gt > 0) & np.isfinite(gt)
        total[valid] += gt[valid]
        count[valid] += 1
    if not count.any():
        raise DataError(paths[0] if paths else "frame index", "no valid ground-truth depth to average")
    out = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    out[count == 0] = np.median(out[count > 0])
    return out.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# `python -m evaluate depth`


@dataclass
class DepthEvalConfig(StageConfig):
    checkpoint: str = field("", "depth checkpoint (default: the current `make depth` model of this DATASET/DEMO_SIZE)")
    split: str = field("auto", "frames to evaluate: a split name, 'all', or auto = val when it has ground truth, else all")
    min_depth: float = field(1e-3, "ignore ground truth at or below this depth (metres)", bounds="[0, inf)")
    max_depth: float = field(80.0, "cap: ignore ground truth beyond this depth, clip predictions to it (metres)",
                             bounds="(0, inf)")
    garg_crop: str = field("auto", "Garg crop (KITTI protocol): auto = on for kitti", choices=["auto", "on", "off"])
    median_scaling: bool = field(True, "scale each prediction by median(gt) / median(pred)")
    device: str = field("cpu", "inference device", choices=["cpu", "cuda"], hash=False)
    force: bool = field(False, "evaluate again even when the config, the checkpoint and the frames did not change",
                        hash=False, rerun=False)


def eval_frames(frames: list[Frame], split: str) -> tuple[list[Frame], str]:
    with_gt = [f for f in frames if f.depth]
    if split == "auto":
        val = [f for f in with_gt if f.split == "val"]
        return (val, "val") if val else (with_gt, "all (no val frame has ground truth)")
    chosen = with_gt if split == "all" else [f for f in with_gt if f.split == split]
    return chosen, split


def run_depth_eval(cfg: DepthEvalConfig, frames: list[Frame], ckpt: Path) -> dict:
    """Model and mean-depth baseline over the evaluation frames -> report dict."""
    from tqdm import tqdm

    from shared.nets.depth_predictor import DepthPredictor
    from shared.imageio import read_rgb

    chosen, split_used = eval_frames(frames, cfg.split)
    if not chosen:
        raise DataError(ckpt, f"no frame of split {cfg.split!r} has ground-truth depth to evaluate against")
    crop = cfg.garg_crop == "on" or (cfg.garg_crop == "auto" and cfg.dataset == "kitti")
    train_gt = [f.depth for f in frames if f.depth and f.split == "train"] or [f.depth for f in chosen]
    size = read_gt_depth(chosen[0].depth).shape
    baseline = mean_depth_map(train_gt, size)
    predictor = DepthPredictor(ckpt, cfg.device)
    model_rows, base_rows, ratios, per_frame = [], [], [], []
    for f in tqdm(chosen, desc="depth eval", unit="img"):
        gt = read_gt_depth(f.depth)
        pred = predictor.predict(read_rgb(f.image))
        m = evaluate_depth(gt, pred, cfg.min_depth, cfg.max_depth, crop, cfg.median_scaling)
        b = evaluate_depth(gt, resize_nearest(baseline, gt.shape),
                           cfg.min_depth, cfg.max_depth, crop, cfg.median_scaling)
        if m is None or b is None:
            continue
        model_rows.append(m[0])
        base_rows.append(b[0])
        ratios.append(m[1])
        per_frame.append({"id": f.id, **m[0], "scale": m[1]})
    if not model_rows:
        raise DataError(chosen[0].depth, f"no valid ground-truth pixel in ({cfg.min_depth}, {cfg.max_depth}] m")
    return {"checkpoint": str(ckpt), "split": split_used, "frames": len(model_rows), "garg_crop": crop,
            "baseline_frames": len(train_gt), "model": mean_metrics(model_rows), "baseline": mean_metrics(base_rows),
            "scale_median": float(np.median(ratios)), "scale_std_over_median": float(np.std(ratios) / np.median(ratios)),
            "per_frame": per_frame}


def format_report(rep: dict) -> list[str]:
    head = f"{'':10s}" + "".join(f"{k:>10s}" for k in METRICS)
    lines = [f"depth eval: {rep['frames']} frames (split {rep['split']}, garg crop {'on' if rep['garg_crop'] else 'off'}), "
             f"baseline = mean ground-truth depth of {rep['baseline_frames']} training frames", head]
    for name in ("model", "baseline"):
        lines.append(f"{name:10s}" + "".join(f"{rep[name][k]:10.4f}" for k in METRICS))
    lines.append(f"median scale gt/pred {rep['scale_median']:.3f} (std/median over frames {rep['scale_std_over_median']:.3f})")
    return lines


@click.command("depth")
@config_options(DepthEvalConfig)
def depth(**kwargs) -> None:
    """Evaluate a depth checkpoint against ground-truth depth (abs rel, sq rel, RMSE, RMSE log, delta<1.25^k)."""
    cfg = build_config(DepthEvalConfig, kwargs)
    t0 = time.perf_counter()
    try:
        ckpt = Path(cfg.checkpoint) if cfg.checkpoint else read_pointer(cfg, "depth", "model")
        if not ckpt.is_file():
            raise DataError(ckpt, "depth checkpoint not found")
        frames = frames_for(cfg)
        out = output_dir(cfg, "eval", f"depth-{config_hash(cfg, extra={'ckpt': str(ckpt.resolve())})}.json")
        # a retrained network at the same path, or changed frames, make it another evaluation
        inputs = {"checkpoint": file_stamp(ckpt), "frames": frames_stamp([f for f in frames if f.depth],
                                                                          ("image", "depth"))}
        key = done_key(cfg, inputs)
        if reuse(out.with_suffix(".done.json"), key, "depth eval", out, cfg.force, click.echo):
            return
        rep = run_depth_eval(cfg, frames, ckpt)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    write_text(out, json.dumps(rep, indent=2) + "\n")
    save_config(cfg, out.with_suffix(".config.json"))
    mark_done(out.with_suffix(".done.json"), key, "depth eval", cfg, inputs, [out, out.with_suffix(".config.json")])
    for line in format_report(rep):
        click.echo(line)
    click.echo(f"depth eval: wrote {out} in {time.perf_counter() - t0:.1f} s")
