"""`python -m evaluate finetune-eval`: score fine-tuning runs (train/finetune.py) on their val frames.

Every network of a run (fold k, repeat r) is scored on its fold's val frames at the labels' own
resolution: the image goes in at the run's working size (padded to a multiple of 32), the logits or
masks are resized to the label size.

    semantic   confusion matrix over the 19 trainIds (ignore 255) -> pixel accuracy, per-class IoU,
               mIoU over the classes present in the val labels (evaluate.segmentation_metrics)
    instance   COCO mask and box AP / AP50 over the 8 instance classes (evaluate.instance_ap)

Writes f<k>_r<r>/metrics.json per network (redone when the checkpoint is newer), and per run
report.json (every number; mean and sample std over folds x repeats), report.md and report.html
(confusion matrix, per-class IoU, prediction overlays). With several runs (`--runs A,B,...`, what
`make finetune-compare` passes) it also writes one comparison table under finetune/compare-<hash>/.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from evaluate.instance_ap import ImageInstances, instance_ap
from evaluate.report_html import markdown_page
from evaluate.plots import iou_bars
from evaluate.report_pictures import (LABEL_ID_COLOURS, class_palette, colourise, confusion_picture,
                                      panel)
from evaluate.segmentation_metrics import confusion_matrix, scores
from evaluate.verdict import label_count, verdict
from shared.atomic import write_json, write_text
from shared.checkpoint import load_checkpoint
from shared.config import save_config
from shared.device import pick_device
from shared.finetune_data import instance_target, read_plan, semantic_target, subrun_name, working_size
from shared.frames import DataError, Frame
from shared.imageio import read_rgb, write_png
from shared.labels import INSTANCE_CLASSES, TRAIN_NAMES
from shared.nets.finetune_models import build_model
from shared.nets.semantic_fpn import normalize_images
from shared.stage import output_dir, read_pointer
from evaluate.finetune_config import FinetuneEvalConfig

HEADLINE = {"semantic": ("miou", "pixel_accuracy"), "instance": ("mask_AP", "mask_AP50", "box_AP", "box_AP50")}


# The options live in evaluate/finetune_config.py, which does not import torch.


def _input(frame: Frame, image_width: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """(float 0..1 [1, 3, H32, W32] zero-padded to multiples of 32, the uint8 image [h, w, 3])."""
    img = read_rgb(frame.image, working_size(frame, image_width))
    x = torch.tensor(img).permute(2, 0, 1)[None].to(device).float() / 255.0
    h, w = img.shape[:2]
    return F.pad(x, (0, -w % 32, 0, -h % 32)), img


@torch.no_grad()
def predict_semantic(model: torch.nn.Module, frame: Frame, image_width: int, device: torch.device
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(trainId prediction uint8 [H, W] at the label size, the input image)."""
    x, img = _input(frame, image_width, device)
    logits = model(normalize_images(x))[..., :img.shape[0], :img.shape[1]]  # [1, C, h, w]
    logits = F.interpolate(logits.float(), size=(frame.height, frame.width), mode="bilinear", align_corners=False)
    return logits[0].argmax(0).to(torch.uint8).cpu().numpy(), img


@torch.no_grad()
def predict_instances(model: torch.nn.Module, frame: Frame, image_width: int, device: torch.device
                      ) -> tuple[ImageInstances, np.ndarray]:
    """Detections at the label size: classes, scores, masks (probability > 0.5), boxes."""
    x, img = _input(frame, image_width, device)
    out = model([x[0, :, :img.shape[0], :img.shape[1]]])[0]
    sy, sx = frame.height / img.shape[0], frame.width / img.shape[1]
    probs = out["masks"].float()  # [D, 1, h, w]
    if probs.shape[0] and (sy != 1 or sx != 1):
        probs = F.interpolate(probs, size=(frame.height, frame.width), mode="bilinear", align_corners=False)
    masks = (probs[:, 0] > 0.5).cpu().numpy() if probs.shape[0] else np.zeros((0, frame.height, frame.width), bool)
    boxes = out["boxes"].float().cpu().numpy() * np.array([sx, sy, sx, sy], np.float32)
    return ImageInstances(out["labels"].cpu().numpy(), masks, out["scores"].float().cpu().numpy(), boxes), img


def load_network(ckpt_path: Path, device: torch.device) -> torch.nn.Module:
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is None:
        raise DataError(ckpt_path, "no checkpoint: the network was not trained (rerun `python -m train finetune`)")
    net = ckpt["net"]
    model = build_model(net["task"], net["arch"], int(net["n_classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def _blend(img: np.ndarray, colours: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32)
    out[where] = 0.45 * out[where] + 0.55 * colours[where]
    return out.astype(np.uint8)


def semantic_overlay(img: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The image with class colours blended over every pixel of a known class (at the class map's size)."""
    if img.shape[:2] != classes.shape:
        img = np.asarray(Image.fromarray(img).resize((classes.shape[1], classes.shape[0]), Image.BILINEAR))
    return _blend(img, colourise(classes, class_palette("paper")).astype(np.float32), classes < len(TRAIN_NAMES))


def instance_overlay(img: np.ndarray, inst: ImageInstances, threshold: float) -> np.ndarray:
    """Masks in their class colour (Cityscapes palette) with their boxes, detections above `threshold`."""
    h, w = inst.masks.shape[1:] if inst.masks.ndim == 3 else img.shape[:2]
    if img.shape[:2] != (h, w):
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    keep = np.ones(len(inst.classes), bool) if inst.scores is None else inst.scores >= threshold
    out = img
    boxes = []
    for c, m in zip(inst.classes[keep], inst.masks[keep]):
        colour = LABEL_ID_COLOURS[INSTANCE_CLASSES[int(c) - 1][0]].astype(np.float32)
        out = _blend(out, np.broadcast_to(colour, out.shape), m)
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes.append(((xs.min(), ys.min(), xs.max(), ys.max()), tuple(int(v) for v in colour)))
    pic = Image.fromarray(out)
    draw = ImageDraw.Draw(pic)
    for box, colour in boxes:
        draw.rectangle(box, outline=colour)
    return np.asarray(pic)


def evaluate_network(sub: Path, frames: list[Frame], task: str, encoding: str, image_width: int,
                     device: torch.device, n_pictures: int, threshold: float) -> dict[str, Any]:
    """Score one fine-tuned network on its val frames; writes sub/metrics.json (+ pictures)."""
    t0 = time.perf_counter()
    model = load_network(sub / "checkpoint.pt", device)
    res: dict[str, Any] = {"network": sub.name, "frames": len(frames), "pictures": []}
    if task == "semantic":
        conf = np.zeros((len(TRAIN_NAMES), len(TRAIN_NAMES)), np.int64)
        for i, f in enumerate(frames):
            pred, img = predict_semantic(model, f, image_width, device)
            gt = semantic_target(f)
            conf += confusion_matrix(gt, pred, len(TRAIN_NAMES), len(TRAIN_NAMES))
            if i < n_pictures:
                name = f"pred_{f.id}.png"
                write_png(sub / name, panel([("image", img), ("ground truth", semantic_overlay(img, gt)),
                                             ("prediction", semantic_overlay(img, pred))], min(f.height, 256)))
                res["pictures"].append(name)
        s = scores(conf)
        res.update(miou=s.miou, pixel_accuracy=s.pixel_accuracy, n_pixels=s.n_pixels, confusion=conf.tolist(),
                   per_class_iou={n: (None if np.isnan(v) else float(v)) for n, v in zip(TRAIN_NAMES, s.iou)})
    else:
        gts, preds = [], []
        for i, f in enumerate(frames):
            pred, img = predict_instances(model, f, image_width, device)
            classes, masks, crowd = instance_target(f, encoding)
            gts.append(ImageInstances(classes, masks, crowd=crowd))
            preds.append(pred)
            if i < n_pictures:
                name = f"pred_{f.id}.png"
                write_png(sub / name, panel([("image", img), ("ground truth", instance_overlay(img, gts[-1], 0)),
                                             (f"prediction (score >= {threshold})",
                                              instance_overlay(img, pred, threshold))], min(f.height, 256)))
                res["pictures"].append(name)
        res.update(instance_ap(gts, preds, len(INSTANCE_CLASSES)))
        res["objects"] = int(sum(len(g.classes) for g in gts))
    res["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(sub / "metrics.json", res)
    return res


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) ignoring NaN."""
    v = np.array([x for x in values if x is not None and not np.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _fmt(m: float, s: float | None = None) -> str:
    if m is None or np.isnan(m):
        return "n/a"
    return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"


def evaluate_run(run_dir: Path, device: torch.device, n_pictures: int, threshold: float) -> dict[str, Any]:
    """Score every network of a run (cached per network) and write the run's report."""
    plan = read_plan(run_dir)
    task = plan["task"]
    nets: list[dict[str, Any]] = []
    for fold in plan["folds"]:
        for r in range(plan["repeats"]):
            sub = run_dir / subrun_name(fold["fold"], r)
            ckpt, cached = sub / "checkpoint.pt", sub / "metrics.json"
            reused = cached.is_file() and ckpt.is_file() and cached.stat().st_mtime >= ckpt.stat().st_mtime
            if reused:
                res = json.loads(cached.read_text())
            else:
                res = evaluate_network(sub, fold["val"], task, plan["encoding"], plan.get("image_width", 0), device,
                                       n_pictures if not nets else 0, threshold)
            res.update(fold=fold["fold"], repeat=r, seed=plan["seeds"][r], train_frames=len(fold["train"]))
            nets.append(res)
            click.echo(f"  {run_dir.name} {sub.name}: " + ", ".join(f"{k} {_fmt(res[k])}" for k in HEADLINE[task])
                       + (f" (reused {cached.name}: the checkpoint is older)" if reused else ""))
    config = json.loads((run_dir / "config.json").read_text())["config"] if (run_dir / "config.json").is_file() else {}
    recipe = (f"lr {config.get('lr')} / new {config.get('new_lr')}, {config.get('iterations')} steps x "
              f"{config.get('batch_size')}") if config else "?"
    summary = {"run": str(run_dir), "task": task, "init": plan["init"], "init_path": plan["init_path"], "recipe": recipe,
               "label_fraction": plan["label_fraction"], "folds": len(plan["folds"]), "repeats": plan["repeats"],
               "train_frames": [len(f["train"]) for f in plan["folds"]], "pool_frames": [f.get("pool") for f in plan["folds"]],
               "val_frames": [len(f["val"]) for f in plan["folds"]],
               "networks": nets, "std": "sample standard deviation (ddof 1) over folds x repeats"}
    for k in HEADLINE[task]:
        summary[k], summary[k + "_std"] = mean_std([n[k] for n in nets])
    write_run_report(run_dir, summary)
    return summary


def write_run_report(run_dir: Path, summary: dict[str, Any]) -> None:
    task, nets = summary["task"], summary["networks"]
    lines = [f"# Fine-tuning ({task}): {run_dir.name}", "",
             f"- init: {summary['init']}" + (f" (`{summary['init_path']}`)" if summary["init_path"] else ""),
             f"- recipe: {summary['recipe']}",
             f"- labels (--label-fraction {summary['label_fraction']}): "
             + "; ".join(label_count(t, p) for t, p in zip(summary["train_frames"], summary.get("pool_frames") or
                                                          [None] * len(summary["train_frames"])))
             + f", {summary['val_frames']} val frames per fold; {summary['folds']} fold(s) x {summary['repeats']} repeat(s)",
             f"- mean ± {summary['std']}", "",
             "| network | seed | " + " | ".join(HEADLINE[task]) + " |", "| --- | --- | " + " | ".join("---" for _ in HEADLINE[task]) + " |"]
    for n in nets:
        lines.append(f"| {n['network']} | {n['seed']} | " + " | ".join(_fmt(n[k]) for k in HEADLINE[task]) + " |")
    lines.append("| **mean ± std** | | " + " | ".join(f"**{_fmt(summary[k], summary[k + '_std'])}**"
                                                   for k in HEADLINE[task]) + " |")
    lines.append("")
    if task == "semantic":
        conf = np.sum([np.array(n["confusion"]) for n in nets], axis=0)
        write_png(run_dir / "confusion.png", confusion_picture(conf, TRAIN_NAMES, title="all networks, summed"))
        s = scores(conf)
        write_png(run_dir / "iou.png", iou_bars(TRAIN_NAMES, [(summary["init"], s.iou)]).rgb)
        present = [i for i in range(len(TRAIN_NAMES)) if s.present[i]]
        lines += ["## Per-class IoU (mean over networks)", "", "| class | IoU |", "| --- | --- |"]
        for i in present:
            lines.append(f"| {TRAIN_NAMES[i]} | " + _fmt(*mean_std([n["per_class_iou"][TRAIN_NAMES[i]] for n in nets])) + " |")
        lines += ["", "mIoU averages the classes with ground truth in the val frames.", "",
                  "Confusion of all networks (rows: ground truth, normalised):", "", "![confusion](confusion.png)", "",
                  "![per-class IoU](iou.png)", ""]
    pics = [f"{nets[0]['network']}/{p}" for p in nets[0].get("pictures", [])] if nets else []
    if pics:
        lines += ["## Predictions", "", f"Network {nets[0]['network']}: image, ground truth, prediction.", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in pics] + [""]
    write_json(run_dir / "report.json", summary)
    write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    write_text(run_dir / "report.html", markdown_page(lines, run_dir, f"Fine-tuning report {run_dir.name}"))


def write_comparison(out: Path, summaries: list[dict[str, Any]]) -> list[str]:
    task = summaries[0]["task"]
    keys = HEADLINE[task]
    lines = [f"# Fine-tuning comparison ({task})", "",
             "Same frames, seeds and budget; mean ± sample std over folds x repeats.", "",
             "| init | recipe | run | label fraction | networks | " + " | ".join(keys) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for s in summaries:
        lines.append(f"| {s['init']} | {s.get('recipe', '?')} | {Path(s['run']).name} | {s['label_fraction']} | "
                     f"{len(s['networks'])} | "
                     + " | ".join(_fmt(s[k], s[k + "_std"]) for k in keys) + " |")
    base = next((s for s in summaries if s["init"] == "scratch"), None)
    if base is not None:
        k = keys[0]
        lines.append("")
        for s in summaries:
            if s is base:
                continue
            v = verdict(s[k], s[k + "_std"], base[k], base[k + "_std"])
            lines.append(f"- {Path(s['run']).name} ({s['init']}) vs {Path(base['run']).name} (scratch), {k}: {v.text} "
                         "(spread: the larger of the two stds)")
    write_json(out / "compare.json", {"runs": summaries})
    write_text(out / "compare.md", "\n".join(lines) + "\n")
    write_text(out / "compare.html", markdown_page(lines, out, "Fine-tuning comparison"))
    return lines


def evaluate_finetune(cfg: FinetuneEvalConfig) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    device = pick_device(cfg.device)
    runs = [read_pointer(cfg, "finetune", cfg.task)] if cfg.runs == "auto" else \
        [Path(r) for r in cfg.runs.split(",") if r.strip()]
    summaries = []
    for run in runs:
        click.echo(f"finetune eval: {run}")
        summaries.append(evaluate_run(run, device, cfg.pictures, cfg.score_threshold))
        click.echo(f"  report: {run / 'report.html'} | {run / 'report.md'} | {run / 'report.json'}")
    if len({s["task"] for s in summaries}) > 1:
        raise click.UsageError("--runs mixes semantic and instance runs; compare runs of one task")
    if len(summaries) > 1:
        key = hashlib.sha256(",".join(sorted(str(r.resolve()) for r in runs)).encode()).hexdigest()[:12]
        out = output_dir(cfg, "finetune", f"compare-{key}")
        lines = write_comparison(out, summaries)
        save_config(cfg, out / "config.json")
        click.echo("\n".join(ln for ln in lines if ln.startswith("|") or ln.startswith("- ")))
        click.echo(f"  comparison: {out / 'compare.md'} | {out / 'compare.html'}")
    click.echo(f"finetune eval: {len(summaries)} run(s) in {time.perf_counter() - t0:.1f} s")
    return summaries
