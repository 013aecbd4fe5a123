"""`python -m evaluate proposals`: how well region proposals match ground-truth objects
(the paper's supplementary Table 5), with baselines computed in the same run.

Ground-truth masks are the 4-connected components of each instanceIds id (void labelIds 0-6
dropped, components under --min-gt-pixels dropped). Pixels with a void label are outside the
evaluation everywhere (they count in neither masks nor regions).

  GT query mIoU   each GT mask takes its best-overlapping region; mean over all masks of all frames
  bilateral mIoU  one-to-one Hungarian matching on IoU per frame; matched pairs score their IoU,
                  unmatched masks and regions score 0: sum of matched IoU / max(#masks, #regions),
                  pooled over frames (sums over sums)
  purity          share of each region's pixels in its majority labelId, pixel-weighted
  coverage        share of evaluated pixels inside some region (the region filter drops the rest)
  regions/frame, median region size (pixels at the working resolution)

Methods: `depth` (the paper's regions; needs a depth source), `slic` (SLIC superpixels alone, as
many as the depth method gives regions), `felzenszwalb` (scikit-image, its scale searched per frame
to give about as many regions), `gt` (the ground-truth instance components through the same region
filter: what a perfect proposal method scores after filtering). All methods go through the same
region filter. Without a depth source the baselines are matched to --baseline-regions instead.

Writes <out>/<dataset>[-<demo>]/reports/proposals-<hash>/report.{json,md} and overlay PNGs.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field as dc_field

import click
import numpy as np
from tqdm import tqdm

from shared.regions.depth_source import DepthSource, parse_depth_spec
from shared.regions.grouping import (boundary_weight_map, depth_regions, felzenszwalb_regions, filter_regions,
                                 gt_regions, instance_components, slic_superpixels)
from shared.regions.config import RegionsConfig, grouping_params, working_size
from shared.config import build_config, config_hash, config_options, field, save_config
from shared.frames import DataError
from shared.imageio import read_label, read_rgb, write_png
from shared.stage import frames_for, output_dir

METHODS = ("depth", "slic", "felzenszwalb", "gt")


# ---------------------------------------------------------------------------------------------
# metrics (pure)


@dataclass
class FrameScores:
    best_iou: np.ndarray  # [G] best IoU of each GT mask
    matched_iou_sum: float  # Hungarian
    n_gt: int
    n_regions: int
    majority_pixels: int  # purity numerator
    region_pixels: int  # purity denominator (evaluated pixels inside regions)
    eval_pixels: int  # evaluated (non-void) pixels
    region_sizes: np.ndarray  # [R] pixels per region (all pixels)


def iou_matrix(gt: np.ndarray, regions: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """gt [H, W] int (0..G-1, -1 = not a mask), regions [H, W] int (1..R, 0 = none), valid [H, W] bool
    (evaluated pixels) -> IoU [G, R]."""
    g_n = int(gt.max()) + 1 if gt.size and gt.max() >= 0 else 0
    r_n = int(regions.max()) if regions.size else 0
    if g_n == 0 or r_n == 0:
        return np.zeros((g_n, r_n))
    g = gt[valid].astype(np.int64)
    r = regions[valid].astype(np.int64)
    g_size = np.bincount(g[g >= 0], minlength=g_n).astype(np.float64)
    r_size = np.bincount(r[r > 0] - 1, minlength=r_n).astype(np.float64)
    both = (g >= 0) & (r > 0)
    inter = np.bincount(g[both] * r_n + (r[both] - 1), minlength=g_n * r_n).reshape(g_n, r_n).astype(np.float64)
    union = g_size[:, None] + r_size[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def frame_scores(gt: np.ndarray, regions: np.ndarray, label_ids: np.ndarray) -> FrameScores:
    """gt masks [H, W] (0..G-1, -1 none), regions [H, W] (1..R, 0 none), labelIds [H, W] (void < 7)."""
    from scipy.optimize import linear_sum_assignment  # not at the top: --help stays light

    valid = label_ids >= 7
    iou = iou_matrix(gt, regions, valid)
    g_n, r_n = iou.shape
    best = iou.max(axis=1) if r_n else np.zeros(g_n)
    matched = 0.0
    if g_n and r_n:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        matched = float(iou[rows, cols].sum())
    r = regions[valid].astype(np.int64)
    lab = label_ids[valid].astype(np.int64)
    inside = r > 0
    majority = 0
    if inside.any():
        counts = np.bincount((r[inside] - 1) * 256 + np.clip(lab[inside], 0, 255), minlength=max(r_n, 1) * 256)
        majority = int(counts.reshape(-1, 256).max(axis=1).sum())
    sizes = np.bincount(regions.ravel().astype(np.int64), minlength=r_n + 1)[1:]
    return FrameScores(best, matched, g_n, int(regions.max()) if regions.size else 0, majority,
                       int(inside.sum()), int(valid.sum()), sizes[sizes > 0])


@dataclass
class MethodSummary:
    frames: list[FrameScores] = dc_field(default_factory=list)

    def summary(self) -> dict[str, float]:
        fs = self.frames
        best = np.concatenate([f.best_iou for f in fs]) if fs else np.zeros(0)
        sizes = np.concatenate([f.region_sizes for f in fs]) if fs else np.zeros(0)
        denom = sum(max(f.n_gt, f.n_regions) for f in fs)
        return {
            "gt_query_miou": 100 * float(best.mean()) if best.size else 0.0,
            "bilateral_miou": 100 * sum(f.matched_iou_sum for f in fs) / denom if denom else 0.0,
            "purity": 100 * sum(f.majority_pixels for f in fs) / max(sum(f.region_pixels for f in fs), 1),
            "coverage": 100 * sum(f.region_pixels for f in fs) / max(sum(f.eval_pixels for f in fs), 1),
            "regions_per_frame": float(np.mean([f.n_regions for f in fs])) if fs else 0.0,
            "median_region_px": float(np.median(sizes)) if sizes.size else 0.0,
            "gt_masks": int(best.size),
            "frames": len(fs),
        }


# ---------------------------------------------------------------------------------------------
# baselines at a similar number of regions


def slic_matched(rgb: np.ndarray, target: int, compactness: float, sigma: float, min_h: int, min_w: int,
                 steps: int = 2) -> np.ndarray:
    """SLIC superpixels alone (filtered); n_segments rescaled until the count is within 10% of `target`
    (SLIC returns fewer segments than asked for on most images)."""
    n_seg = max(int(target), 1)
    reg = filter_regions(slic_superpixels(rgb, n_seg, compactness, sigma), min_h, min_w)
    for _ in range(steps):
        n = max(int(reg.max()), 1)
        if abs(n - target) <= 0.1 * target:
            break
        n_seg = max(int(round(n_seg * target / n)), 1)
        reg = filter_regions(slic_superpixels(rgb, n_seg, compactness, sigma), min_h, min_w)
    return reg


def felzenszwalb_matched(rgb: np.ndarray, target: int, sigma: float, min_size: int, min_h: int, min_w: int,
                         steps: int = 8) -> tuple[np.ndarray, float]:
    """Felzenszwalb with its scale bisected (log space) so the filtered region count is near `target`."""
    lo, hi = np.log(1.0), np.log(20000.0)
    best, best_scale, best_err = None, 0.0, None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        reg = felzenszwalb_regions(rgb, float(np.exp(mid)), sigma, min_size, min_h, min_w)
        n = int(reg.max())
        err = abs(n - target)
        if best_err is None or err < best_err:
            best, best_scale, best_err = reg, float(np.exp(mid)), err
        if n > target:  # larger scale -> fewer, larger segments
            lo = mid
        else:
            hi = mid
    return best, best_scale


# ---------------------------------------------------------------------------------------------
# overlays


def _palette(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 255, size=(n + 1, 3), dtype=np.uint8)
    pal[0] = 0
    return pal


def region_overlay(rgb: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Regions tinted over the image, boundaries in white, filtered pixels darkened."""
    from skimage.segmentation import find_boundaries  # not at the top: --help stays light

    pal = _palette(int(regions.max()) + 1)
    out = (0.55 * rgb + 0.45 * pal[regions]).astype(np.uint8)
    out[regions == 0] = (0.35 * rgb[regions == 0]).astype(np.uint8)
    out[find_boundaries(regions, mode="inner")] = 255
    return out


def weight_overlay(rgb: np.ndarray, wmap: np.ndarray) -> np.ndarray:
    """Superpixel boundaries coloured by W: green = weak (merge) .. red = strong (separate)."""
    out = (0.5 * rgb).astype(np.uint8)
    m = ~np.isnan(wmap)
    w = np.clip(wmap[m], 0, 1)
    out[m] = np.stack([255 * w, 255 * (1 - w), np.zeros_like(w)], axis=1).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class ProposalsConfig(RegionsConfig):
    """Region-proposal quality report (same grouping knobs as `preprocess regions`)."""

    min_gt_pixels: int = field(50, "drop ground-truth components smaller than this (pixels at the working size)",
                               bounds="[0, inf)")
    baseline_regions: int = field(300, "regions the baselines aim for when no depth source is available",
                                  bounds="[1, inf)")
    overlays: int = field(3, "frames to draw overlay PNGs for", bounds="[0, inf)")


def run_report(cfg: ProposalsConfig, echo=click.echo) -> dict:
    t0 = time.perf_counter()
    frames = [f for f in frames_for(cfg) if f.semantic and f.instance]
    if not frames:
        raise DataError(cfg.data_root or cfg.dataset, "no frames with labelIds and instanceIds to evaluate")
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    size = working_size(cfg, frames)
    params = grouping_params(cfg, size)
    notes = []
    source = None
    if cfg.depth or cfg.dataset == "synthetic":  # a depth source the user named must work
        source = DepthSource(parse_depth_spec(cfg.depth, cfg.dataset, cfg.depth_kind, cfg.depth_scale, cfg.device),
                             cfg.max_invalid_depth)
    else:
        notes.append(f"depth proposals not evaluated: DATASET={cfg.dataset} has no ground-truth depth and no "
                     f"--depth files:DIR | model:CKPT was given; baselines matched to {cfg.baseline_regions} regions")
    out = output_dir(cfg, "reports", f"proposals-{config_hash(cfg)}")
    out.mkdir(parents=True, exist_ok=True)
    methods = {m: MethodSummary() for m in METHODS}
    felz_scales: list[float] = []
    skipped = []
    for i, f in enumerate(tqdm(frames, desc="proposals", unit="frame")):
        try:
            rgb = read_rgb(f.image, size)
            inst = read_label(f.instance, size)
            lab = read_label(f.semantic, size).astype(np.int64)
            depth = source.load(f, size, rgb) if source else None
        except DataError as e:
            if cfg.strict:
                raise
            skipped.append({"frame": f.id, "path": e.path, "problem": e.problem})
            continue
        gt = instance_components(inst, cfg.min_gt_pixels)
        maps: dict[str, np.ndarray] = {}
        target = cfg.baseline_regions
        dr = None
        if depth is not None:
            dr = depth_regions(rgb, depth, f.K(size[1], size[0]), params)
            maps["depth"] = dr.regions
            target = max(int(dr.regions.max()), 1)
        maps["slic"] = slic_matched(rgb, target, params.compactness, params.sigma,
                                    params.min_height, params.min_width)
        maps["felzenszwalb"], scale = felzenszwalb_matched(rgb, target, cfg.felz_sigma, cfg.felz_min_size,
                                                           params.min_height, params.min_width)
        felz_scales.append(scale)
        maps["gt"] = gt_regions(inst, params.min_height, params.min_width)
        for m, reg in maps.items():
            methods[m].frames.append(frame_scores(gt, reg, lab))
        if i < cfg.overlays:
            for m, reg in maps.items():
                write_png(out / f"{f.id}_{m}.png", region_overlay(rgb, reg))
            if dr is not None:
                write_png(out / f"{f.id}_weights.png",
                          weight_overlay(rgb, boundary_weight_map(dr.superpixels, dr.edges, dr.weights)))
    results = {m: s.summary() for m, s in methods.items() if s.frames}
    report = {"dataset": cfg.dataset, "size": list(size), "frames": len(frames) - len(skipped),
              "params": params.__dict__, "min_gt_pixels": cfg.min_gt_pixels,
              "depth": cfg.depth or ("gt" if cfg.dataset == "synthetic" else ""),
              "felzenszwalb_scale_median": statistics.median(felz_scales) if felz_scales else None,
              "results": results, "notes": notes, "skipped": skipped,
              "seconds": round(time.perf_counter() - t0, 1)}
    from shared.atomic import write_text

    write_text(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    table = format_table(results)
    md = [f"# Region proposals: {cfg.dataset} ({report['frames']} frames at {size[0]}x{size[1]}, "
          f"depth: {report['depth'] or 'none'})", "", *table, ""] + [f"- {n}" for n in notes]
    write_text(out / "report.md", "\n".join(md) + "\n")
    save_config(cfg, out / "config.json")
    for line in table:
        echo(line)
    for n in notes:
        echo(f"note: {n}")
    if skipped:
        echo(f"skipped {len(skipped)} bad frame(s): " + "; ".join(f"{s['path']}: {s['problem']}" for s in skipped))
    echo(f"proposals report: {out}/report.md (+ overlays) in {report['seconds']} s")
    return report


def format_table(results: dict[str, dict[str, float]]) -> list[str]:
    head = "| method | GT-query mIoU | bilateral mIoU | purity | coverage | regions/frame | median px |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in results.items():
        rows.append(f"| {m} | {r['gt_query_miou']:.2f} | {r['bilateral_miou']:.2f} | {r['purity']:.2f} | "
                    f"{r['coverage']:.1f} | {r['regions_per_frame']:.1f} | {r['median_region_px']:.0f} |")
    return rows


@click.command("proposals")
@config_options(ProposalsConfig)
def proposals(**kwargs) -> None:
    """Region-proposal quality on the labelled frames of DATASET: GT-query / bilateral mIoU, purity,
    counts, sizes, for the depth regions and SLIC / Felzenszwalb baselines at a similar region count."""
    cfg = build_config(ProposalsConfig, kwargs)
    try:
        run_report(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    except ValueError as e:  # a malformed --depth
        raise click.UsageError(str(e)) from e
