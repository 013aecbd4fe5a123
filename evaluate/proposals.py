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

Methods: `depth` (the paper's regions; needs a depth source) or, with --proposals depth-rgb, `depth-rgb`
(shared.regions.depth_rgb), `slic` (SLIC superpixels alone, as many as the depth method gives regions), `felzenszwalb` (scikit-image, its scale searched per frame
to give about as many regions), `gt` (the ground-truth instance components through the same region
filter: what a perfect proposal method scores after filtering). All methods go through the same
region filter. Without a depth source the baselines are matched to --baseline-regions instead.

Frames are scored in chunks (--chunk-size), one task each, on local processes or a Dask / Ray cluster
(--workers, --backend, --scheduler: shared.executor); a task writes only its frames' overlays, the
driver the report, summed in frame order (the same report whatever ran the tasks).

Writes <out>/<dataset>[-<demo>]/reports/proposals-<hash>/report.{json,md} and overlay PNGs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from evaluate.verdict import count_mismatch
from shared.regions.depth_source import DepthSource, DepthSpec, parse_depth_spec
from shared.regions.grouping import (boundary_weight_map, depth_regions, felzenszwalb_regions, filter_regions,
                                 gt_regions, instance_components, slic_superpixels)
from shared.regions.config import (DEPTH_METHODS, RegionsConfig, depth_rgb_params, grouping_params, recorded_depth,
                                   regions_hash, working_size)
from shared.regions.depth_rgb import DepthRgbParams, depth_rgb_regions
from shared.regions.grouping import GroupingParams
from shared.config import build_config, config_options, field, save_config
from shared.eta import Eta
from shared.executor import run_tasks
from shared.frames import DataError, Frame
from shared.imageio import read_label, read_rgb, write_png
from shared.reuse import done_key, file_stamp, folder_stamp, frames_stamp, mark_done, reuse
from shared.stage import UNLABELLED, StageConfig, frames_for, no_labels, output_dir

METHODS = ("depth", "depth-rgb", "slic", "felzenszwalb", "gt")
DONE = "done.json"  # the done record (shared.reuse), written after every other file of the report


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


def paired_differences(ours: list[FrameScores], base: list[FrameScores]) -> dict[str, float | int]:
    """The frame-to-frame spread of a comparison: per frame, our GT-query mIoU (mean best IoU of its
    GT masks, x100) minus the baseline's on the same frame. {"mean", "frame_std" (sample std; 0 for
    one frame), "frames"}; frames without GT masks are left out. The methods are deterministic, so
    frames, not seeds, are what a difference has to exceed."""
    diffs = np.array([100 * (a.best_iou.mean() - b.best_iou.mean())
                      for a, b in zip(ours, base, strict=True) if a.best_iou.size])  # [F]
    return {"mean": float(diffs.mean()) if diffs.size else 0.0,
            "frame_std": float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0,
            "frames": int(diffs.size)}


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
    force: bool = field(False, "recompute the report even when the config and its inputs (frames, depth source) "
                               "did not change since it was written", hash=False, rerun=False)


def labelled_frames(cfg: StageConfig) -> list[Frame]:
    """DATASET's frames that have both labelIds and instanceIds: the ones proposals are scored on."""
    frames = [f for f in frames_for(cfg) if f.semantic and f.instance]
    if not frames:
        raise DataError(cfg.data_root or cfg.dataset, no_labels(cfg, "scoring region proposals") if cfg.dataset in UNLABELLED
                        else "no frames with labelIds and instanceIds to evaluate")
    return frames


def read_labelled(f: Frame, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame at `size` (H, W): rgb [H, W, 3] uint8, instanceIds [H, W], labelIds [H, W] int64; a
    DataError names the file that cannot be read."""
    return (read_rgb(f.image, size), read_label(f.instance, size),
            read_label(f.semantic, size).astype(np.int64))


def score_frame(f: Frame, index: int, size: tuple[int, int], source: DepthSource | None, params: GroupingParams,
                cfg: ProposalsConfig, out: Path, depth_method: str = "depth",
                rgb_params: DepthRgbParams | None = None) -> dict[str, Any]:
    """Every method's scores on one frame (and its overlays when `index` < cfg.overlays): the report's
    unit of work. {"index", "scores": {method: FrameScores}, "felz_scale"}, or {"index", "skipped"}."""
    try:
        rgb, inst, lab = read_labelled(f, size)
        depth = source.load(f, size, rgb) if source else None
    except DataError as e:
        if cfg.strict:
            raise
        return {"index": index, "skipped": {"frame": f.id, "path": e.path, "problem": e.problem}}
    gt = instance_components(inst, cfg.min_gt_pixels)
    maps: dict[str, np.ndarray] = {}
    target = cfg.baseline_regions
    dr = None
    if depth is not None:
        K = f.K(size[1], size[0])
        dr = depth_regions(rgb, depth, K, params) if depth_method == "depth" else \
            depth_rgb_regions(rgb, depth, K, params, rgb_params)
        maps[depth_method] = dr.regions
        target = max(int(dr.regions.max()), 1)
    maps["slic"] = slic_matched(rgb, target, params.compactness, params.sigma,
                                params.min_height, params.min_width)
    maps["felzenszwalb"], scale = felzenszwalb_matched(rgb, target, cfg.felz_sigma, cfg.felz_min_size,
                                                       params.min_height, params.min_width)
    maps["gt"] = gt_regions(inst, params.min_height, params.min_width)
    if index < cfg.overlays:  # this frame's own files: the driver writes the report
        for m, reg in maps.items():
            write_png(out / f"{f.id}_{m}.png", region_overlay(rgb, reg))
        if dr is not None:
            write_png(out / f"{f.id}_weights.png",
                      weight_overlay(rgb, boundary_weight_map(dr.superpixels, dr.edges, dr.weights)))
    return {"index": index, "scores": {m: frame_scores(gt, reg, lab) for m, reg in maps.items()}, "felz_scale": scale}


def score_chunk(frames: list[tuple[int, Frame]], size: tuple[int, int], spec: DepthSpec | None,
                params: GroupingParams, cfg: ProposalsConfig, out: str, depth_method: str = "depth",
                rgb_params: DepthRgbParams | None = None) -> list[dict[str, Any]]:
    """A worker task: score_frame over a chunk of (index, frame), single-threaded."""
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    source = DepthSource(spec, cfg.max_invalid_depth) if spec is not None else None
    return [score_frame(f, i, size, source, params, cfg, Path(out), depth_method, rgb_params) for i, f in frames]


def report_inputs(frames: list[Frame], spec: DepthSpec | None) -> dict[str, str]:
    """Fingerprints of everything the report reads besides its config: the frames' images and labels
    (and ground-truth depth), the depth checkpoint or the folder of depth maps."""
    fields = ("image", "semantic", "instance") + (("depth",) if spec is not None and spec.kind == "gt" else ())
    inputs = {"frames": frames_stamp(frames, fields)}
    if spec is not None and spec.kind == "model":
        inputs["depth_model"] = file_stamp(spec.arg)
    elif spec is not None and spec.kind == "files":
        inputs["depth_files"] = folder_stamp(spec.arg)
    return inputs


def same_depth_as_regions(cfg: RegionsConfig, stage: str, echo=click.echo) -> RegionsConfig:
    """Without --depth, the depth the current region store was built from (so a report describes the
    regions that are trained on), said in one line; with --depth, cfg unchanged."""
    if cfg.depth:
        return cfg
    method = cfg.proposals if cfg.proposals in DEPTH_METHODS else "depth"
    recorded = recorded_depth(cfg, method)
    if recorded is None or not recorded[0]:
        return cfg
    echo(f"{stage}: depth {recorded[0]}, the source of the region store {recorded[1]} (--depth / DEPTH= overrides)")
    return dataclasses.replace(cfg, depth=recorded[0])


def run_report(cfg: ProposalsConfig, echo=click.echo) -> dict:
    t0 = time.perf_counter()
    cfg = same_depth_as_regions(cfg, "proposals", echo)
    frames = labelled_frames(cfg)
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    size = working_size(cfg, frames)
    params = grouping_params(cfg, size)
    depth_method = cfg.proposals if cfg.proposals in DEPTH_METHODS else "depth"
    rgb_params = depth_rgb_params(cfg)
    notes = []
    spec = None
    if cfg.depth or cfg.dataset == "synthetic":  # a depth source the user named must work
        spec = parse_depth_spec(cfg.depth, cfg.dataset, cfg.depth_kind, cfg.depth_scale, cfg.device)
    else:
        notes.append(f"depth proposals not evaluated: DATASET={cfg.dataset} has no ground-truth depth and no "
                     f"--depth files:DIR | model:CKPT was given; baselines matched to {cfg.baseline_regions} regions")
    out = output_dir(cfg, "reports", f"proposals-{regions_hash(cfg)}")
    inputs = report_inputs(frames, spec)
    key = done_key(cfg, inputs)
    if reuse(out / DONE, key, "proposals", out, cfg.force, echo):
        return json.loads((out / "report.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    # chunks of frames, one task each (--backend, --scheduler); results summed in frame order, so the
    # report is the same whatever ran the tasks
    numbered = list(enumerate(frames))
    tasks = [(numbered[s:s + cfg.chunk_size], size, spec, params, cfg, str(out), depth_method, rgb_params)
             for s in range(0, len(numbered), cfg.chunk_size)]
    workers = min(cfg.workers, len(tasks))
    methods_run = ([depth_method] if spec is not None else []) + ["slic", "felzenszwalb", "gt"]
    echo(f"proposals: plan: {len(frames)} labelled frames at {size[0]}x{size[1]}, methods {', '.join(methods_run)}, "
         f"depth {(spec.kind + (':' + spec.arg if spec.arg else '')) if spec is not None else 'none'}"
         + (f" on {spec.device}" if spec is not None and spec.kind == "model" else "")
         + f", {len(tasks)} task(s) on {workers} worker(s) ({cfg.backend}); the time estimate follows the first frames")
    eta = Eta("proposals", len(frames), "frame", echo)
    per_frame: list[dict[str, Any]] = []
    with tqdm(total=len(frames), desc="proposals", unit="frame") as bar:
        for res in run_tasks(score_chunk, tasks, cfg.backend, cfg.scheduler, workers, desc="proposals"):
            per_frame.extend(res)
            bar.update(len(res))
            eta.update(len(res))
    per_frame.sort(key=lambda r: r["index"])
    methods = {m: MethodSummary() for m in METHODS}
    for r in per_frame:
        for m, sc in r.get("scores", {}).items():
            methods[m].frames.append(sc)
    felz_scales = [r["felz_scale"] for r in per_frame if "felz_scale" in r]
    skipped = [r["skipped"] for r in per_frame if "skipped" in r]
    if len(skipped) == len(frames):  # an empty table that exits 0 would read as a result
        reasons = "\n".join(f"  {s['path']}: {s['problem']}" for s in skipped)
        raise DataError(skipped[0]["path"], f"every frame was skipped ({len(skipped)}), nothing to report:\n{reasons}")
    results = {m: s.summary() for m, s in methods.items() if s.frames}
    paired = {b: paired_differences(methods[depth_method].frames, methods[b].frames)
              for b in ("slic", "felzenszwalb") if methods[depth_method].frames and methods[b].frames}
    notes += count_notes(results, depth_method)
    report = {"dataset": cfg.dataset, "size": list(size), "frames": len(frames) - len(skipped),
              "params": params.__dict__, "min_gt_pixels": cfg.min_gt_pixels, "depth_method": depth_method,
              **({"depth_rgb_params": rgb_params.__dict__} if depth_method == "depth-rgb" else {}),
              "depth": cfg.depth or ("gt" if cfg.dataset == "synthetic" else ""),
              "felzenszwalb_scale_median": statistics.median(felz_scales) if felz_scales else None,
              "results": results, "paired": paired, "notes": notes, "skipped": skipped,
              "seconds": round(time.perf_counter() - t0, 1)}
    from shared.atomic import write_text

    write_text(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    table = format_table(results) + paired_lines(paired, depth_method)
    md = [f"# Region proposals: {cfg.dataset} ({report['frames']} frames at {size[0]}x{size[1]}, "
          f"depth: {report['depth'] or 'none'})", "", *table, ""] + [f"- {n}" for n in notes]
    write_text(out / "report.md", "\n".join(md) + "\n")
    save_config(cfg, out / "config.json")
    drawn = {f.id for f in frames[:cfg.overlays]}  # this run's overlays, not those of frames an older run had
    overlays = [p for p in out.glob("*.png") if p.name.rsplit("_", 1)[0] in drawn]
    mark_done(out / DONE, key, "proposals", cfg, inputs,
              [out / "report.json", out / "report.md", out / "config.json", *overlays])
    for line in table:
        echo(line)
    for n in notes:
        echo(f"note: {n}")
    if skipped:
        echo(f"skipped {len(skipped)} bad frame(s): " + "; ".join(f"{s['path']}: {s['problem']}" for s in skipped))
    echo(f"proposals: wrote report.md, report.json and {len(overlays)} overlays into {out} in {report['seconds']} s")
    return report


def count_notes(results: dict[str, dict[str, float]], method: str) -> list[str]:
    """A note for each baseline whose region count is more than 10 % away from the method's: its scores
    are then not a comparison at equal region counts."""
    ours = results.get(method)
    if not ours:
        return []
    return [f"{b}: {results[b]['regions_per_frame']:.1f} regions per frame, more than 10 % away from {method}'s "
            f"{ours['regions_per_frame']:.1f}; its scores are not a comparison at an equal region count"
            for b in ("slic", "felzenszwalb")
            if b in results and count_mismatch(results[b]["regions_per_frame"], ours["regions_per_frame"])]


def paired_lines(paired: dict[str, dict[str, float]], method: str) -> list[str]:
    """One line per baseline: the per-frame GT-query difference and its frame-to-frame std."""
    return [f"{method} - {b}, GT-query mIoU per frame: {p['mean']:+.2f} (std over {p['frames']} frames "
            f"{p['frame_std']:.2f})" for b, p in paired.items()]


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
