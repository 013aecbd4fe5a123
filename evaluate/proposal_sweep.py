"""`python -m evaluate proposals-sweep`: the region-proposal benchmark (issue 17).

Every proposal method runs over a sweep of its own region-count knob, so methods are compared at
matched numbers of regions per frame (a curve each, not one point), under several depth conditions:

  (a) synthetic-exact  the benchmark's synthetic city with its exact depth
  (b) synthetic-model  the same frames with the project's learnt depth (--synthetic-model CKPT; optional)
  (c) synthetic-weak   the same frames with exact depth degraded like an off-the-shelf network's
                       (evaluate.weak_depth: compressed range, blur, smooth multiplicative noise)
  (d) <dataset>        DATASET's labelled frames with --depth (e.g. the Cityscapes samples with the shipped
                       disparity), when DATASET is not synthetic; and with --real-model CKPT beside it

Methods and knobs: `depth` (the paper's; T_e), `depth-rgb` (merge_k), `slic` (n_segments), `felzenszwalb`
(scale), each through the same region filter; `gt` (the ground-truth components through the filter) is one
point, the ceiling. Scores are those of `evaluate proposals` (GT-query and bilateral mIoU, purity, coverage).
One SLIC per frame serves the paper's method at every T_e, one (finer, see
DepthRgbParams.superpixel_factor) depth-rgb at every merge_k.

The synthetic city is rendered for the benchmark (one frame per street, --synthetic-frames streets,
--synthetic-seed, at --size or 384x768; DEMO_SIZE shrinks it) through the `preprocess synth` command,
unless --synthetic-root names a rendered one. Writes, under <out>/<dataset>[-<demo>]/reports/proposals-sweep-<hash>/:
sweep.json (every point), sweep.md (a table per condition, and each method read off at the region
counts of depth-rgb's points, interpolated in log count), sweep.png (GT-query mIoU against regions per
frame, a panel per condition) and config.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from evaluate.proposals import MethodSummary, frame_scores, labelled_frames, read_labelled
from evaluate.weak_depth import WeakDepth, degrade_depth
from shared.config import build_config, config_hash, config_options, field, save_config
from shared.executor import watch_driver
from shared.frames import DataError, Frame
from shared.imageio import write_png
from shared.regions.config import (RegionsConfig, depth_rgb_params, grouping_params, parse_size, working_size)
from shared.regions.depth_rgb import DepthRgbParams, depth_rgb_regions, depth_rgb_superpixels
from shared.regions.depth_source import DepthSource, DepthSpec, parse_depth_spec
from shared.regions.grouping import (GroupingParams, depth_regions, felzenszwalb_regions, filter_regions, gt_regions,
                                     instance_components, slic_superpixels)
from shared.datasets import build_index
from shared.stage import output_dir, run_stage

METHODS = ("depth", "depth-rgb", "slic", "felzenszwalb")
KNOB = {"depth": "T_e", "depth-rgb": "merge_k", "slic": "n_segments", "felzenszwalb": "scale", "gt": "-"}
SYNTH_SIZE = {"": (384, 768), "small": (192, 384), "tiny": (96, 192)}


@dataclass
class SweepConfig(RegionsConfig):
    """The proposal benchmark (grouping knobs as `preprocess regions`; the swept knob of each method is
    taken from its sweep list instead)."""

    min_gt_pixels: int = field(50, "drop ground-truth components smaller than this (pixels at the working size)", bounds="[0, inf)")
    synthetic_frames: int = field(12, "frames of the benchmark's synthetic city (one per street; 0 = no synthetic "
                                      "conditions)", bounds="[0, inf)")
    synthetic_seed: int = field(1, "seed of the benchmark's city (the demo city is seed 0: tune there, measure here)", bounds="[0, inf)")
    synthetic_root: str = field("", "a rendered synthetic city to use instead (its first --synthetic-frames frames)")
    synthetic_model: str = field("", "depth checkpoint trained on the synthetic city: adds condition (b)")
    real_model: str = field("", "depth checkpoint for DATASET's frames: adds a learnt-depth condition beside --depth")
    weak_seed: int = field(0, "seed of the depth degradation of condition (c) (each frame mixes in its id)", bounds="[0, inf)")
    sweep_t_e: tuple[float, ...] = field((0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8), "depth (the paper's): T_e values", bounds="[0, 1]")
    # 1000: with precise depth the mean-W merge stops at W 0.91 there, the coarse end of the paper's T_e sweep
    # 0.5: the fine end as far as Felzenszwalb's sweep reaches (about 300 regions per Cityscapes frame)
    sweep_merge_k: tuple[float, ...] = field((0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 300.0, 1000.0),
                                             "depth-rgb: merge_k values", bounds="(0, inf)")
    sweep_slic: tuple[int, ...] = field((25, 50, 100, 200, 400, 800), "slic: n_segments values", bounds="[1, inf)")
    sweep_felz: tuple[float, ...] = field((30.0, 60.0, 100.0, 200.0, 300.0, 600.0, 1000.0, 3000.0),
                                          "felzenszwalb: scale values", bounds="(0, inf)")
    methods: tuple[str, ...] = field(METHODS, "methods to sweep (gt is always added as the ceiling)")


@dataclass(frozen=True)
class Condition:
    key: str  # "synthetic-exact", ...
    title: str  # what the plot and the table say
    dataset: str
    root: str
    spec: DepthSpec
    weak: WeakDepth | None = None


# ---------------------------------------------------------------------------------------------
# one frame (a worker task)


def frame_depth(frame: Frame, size: tuple[int, int], rgb: np.ndarray, source: DepthSource, weak: WeakDepth | None,
                weak_seed: int) -> np.ndarray:
    """The condition's depth of a frame: the source's, degraded with a seed from `weak_seed` and the frame id."""
    depth = source.load(frame, size, rgb)
    if weak is None:
        return depth
    return degrade_depth(depth, seed=(weak_seed * 1_000_003 + zlib.crc32(frame.id.encode())) % 2 ** 32, weak=weak)


def sweep_frame(frame: Frame, size: tuple[int, int], cond: Condition, cfg: SweepConfig, params: GroupingParams,
                rgb_params: DepthRgbParams) -> dict[str, Any]:
    """Every method at every knob value on one frame -> {"scores": {(method, knob): FrameScores}} or
    {"skipped": reason}."""
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(k, "1")  # workers share the machine
    try:
        rgb, inst, lab = read_labelled(frame, size)
        depth = frame_depth(frame, size, rgb, DepthSource(cond.spec, cfg.max_invalid_depth), cond.weak, cfg.weak_seed)
    except DataError as e:
        return {"frame": frame.id, "skipped": {"frame": frame.id, "path": e.path, "problem": e.problem}}
    gt = instance_components(inst, cfg.min_gt_pixels)
    K = frame.K(size[1], size[0])
    mh, mw = params.min_height, params.min_width
    scores: dict[tuple[str, float], Any] = {}
    sp = slic_superpixels(rgb, params.n_segments, params.compactness, params.sigma) if "depth" in cfg.methods else None
    sp_rgb = depth_rgb_superpixels(rgb, params, rgb_params) if "depth-rgb" in cfg.methods else None
    for method in cfg.methods:
        for v in knob_values(cfg, method):
            if method == "depth":
                reg = depth_regions(rgb, depth, K, dataclasses.replace(params, t_e=float(v)), superpixels=sp).regions
            elif method == "depth-rgb":
                reg = depth_rgb_regions(rgb, depth, K, params, dataclasses.replace(rgb_params, merge_k=float(v)),
                                        superpixels=sp_rgb).regions
            elif method == "slic":
                reg = filter_regions(slic_superpixels(rgb, int(v), params.compactness, params.sigma), mh, mw)
            else:
                reg = felzenszwalb_regions(rgb, float(v), cfg.felz_sigma, cfg.felz_min_size, mh, mw)
            scores[(method, float(v))] = frame_scores(gt, reg, lab)
    scores[("gt", 0.0)] = frame_scores(gt, gt_regions(inst, mh, mw), lab)
    return {"frame": frame.id, "scores": scores}


def knob_values(cfg: SweepConfig, method: str) -> tuple[float, ...]:
    return {"depth": cfg.sweep_t_e, "depth-rgb": cfg.sweep_merge_k, "slic": cfg.sweep_slic,
            "felzenszwalb": cfg.sweep_felz}[method]


# ---------------------------------------------------------------------------------------------
# curves and matched counts (pure)


def interpolate_at(points: list[tuple[float, float]], count: float) -> float | None:
    """points [(regions per frame, value)] of one method's sweep -> its value at `count`, linear in log
    count between the two nearest points; None outside the swept range (never extrapolated). Points
    with the same count are averaged."""
    if count <= 0 or not points:
        return None
    by_n: dict[float, list[float]] = {}
    for n, v in points:
        if n > 0:
            by_n.setdefault(float(n), []).append(float(v))
    ns = np.array(sorted(by_n))
    if ns.size == 0 or not ns[0] <= count <= ns[-1]:
        return None
    vs = np.array([np.mean(by_n[n]) for n in ns])
    return float(np.interp(np.log(count), np.log(ns), vs))


def matched_rows(rows: list[dict[str, Any]], reference: str = "depth-rgb",
                 metrics: tuple[str, ...] = ("gt_query_miou", "purity")) -> list[dict[str, Any]]:
    """For each point of `reference`, every other method's metrics read off its own curve at the same
    regions per frame: [{"regions": n, "<method>": {metric: value or None}}]. Knob values that give the
    same count (the fine end, where nothing merges any more) are one row, so they are not counted twice."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    out: list[dict[str, Any]] = []
    for ref in sorted(by_method.get(reference, []), key=lambda r: r["regions_per_frame"]):
        n = ref["regions_per_frame"]
        if out and abs(n - out[-1]["regions"]) < 0.05:
            continue
        row: dict[str, Any] = {"regions": n, "knob": ref["knob"]}
        for m, pts in by_method.items():
            if m == "gt":
                continue
            row[m] = {k: (ref[k] if m == reference else
                          interpolate_at([(p["regions_per_frame"], p[k]) for p in pts], n)) for k in metrics}
        out.append(row)
    return out


def frame_points(scored: list[dict[tuple[str, float], Any]]) -> list[dict[str, list[tuple[float, float, float, float]]]]:
    """Per frame, each method's sweep as [(knob, regions, GT-query mIoU, purity)]: the frame's own curves."""
    out = []
    for sc in scored:
        per: dict[str, list[tuple[float, float, float, float]]] = {}
        for (method, knob), f in sc.items():
            s = MethodSummary([f]).summary()  # the report's own formulas, on one frame
            per.setdefault(method, []).append((float(knob), s["regions_per_frame"], s["gt_query_miou"], s["purity"]))
        out.append(per)
    return out


def paired_spread(frames: list[dict[str, list[tuple[float, float, float, float]]]], knob: float, other: str,
                  reference: str = "depth-rgb") -> dict[str, float | None]:
    """The frame-to-frame spread of reference - other at one reference knob: on each frame, the reference's
    value minus the other method's read off that frame's own curve at the same number of regions; the
    sample std of those differences over frames (None below two frames with both values), per metric."""
    diffs: dict[str, list[float]] = {"gt_query_miou": [], "purity": []}
    for per in frames:
        ref = [p for p in per.get(reference, []) if p[0] == knob]
        if not ref or other not in per:
            continue
        _, n, gq, pur = ref[0]
        for i, metric, value in ((2, "gt_query_miou", gq), (3, "purity", pur)):
            o = interpolate_at([(p[1], p[i]) for p in per[other]], n)
            if o is not None:
                diffs[metric].append(value - o)
    return {m: (float(np.std(d, ddof=1)) if len(d) >= 2 else None) for m, d in diffs.items()}


def matched_gain(matched: list[dict[str, Any]], method: str, other: str, metric: str) -> tuple[float, int] | None:
    """Mean of method - other over the matched points where both have a value, and how many there were."""
    diffs = [r[method][metric] - r[other][metric] for r in matched
             if method in r and other in r and r[method][metric] is not None and r[other][metric] is not None]
    return (float(np.mean(diffs)), len(diffs)) if diffs else None


# ---------------------------------------------------------------------------------------------
# conditions


def ensure_bench_city(cfg: SweepConfig, size: tuple[int, int], echo=click.echo) -> Path:
    """The benchmark's synthetic city, rendered through the `preprocess synth` command when missing."""
    if cfg.synthetic_root:
        return Path(cfg.synthetic_root)
    root = Path(cfg.out) / "synthetic" / f"city-sweep-s{cfg.synthetic_seed}-n{cfg.synthetic_frames}-{size[0]}x{size[1]}"
    from shared.datasets.synthetic import city_is_complete

    if city_is_complete(root):
        return root
    t0 = time.perf_counter()
    run_stage("preprocess", "synth", ["--dataset", "synthetic", "--data-root", str(root.resolve()),
                                      "--sequences", str(cfg.synthetic_frames), "--frames", "1",
                                      "--size", f"{size[0]}x{size[1]}", "--seed", str(cfg.synthetic_seed),
                                      "--workers", str(max(1, cfg.workers))], root)
    if not city_is_complete(root):
        raise DataError(root, "rendering the benchmark city left it incomplete")
    echo(f"proposals-sweep: rendered the benchmark city into {root} in {time.perf_counter() - t0:.1f} s")
    return root


def conditions(cfg: SweepConfig, echo=click.echo) -> list[tuple[Condition, list[Frame], tuple[int, int]]]:
    """(condition, labelled frames, working size) for every condition this config asks for."""
    out = []
    if cfg.synthetic_frames > 0:
        size = parse_size(cfg.size) if cfg.size else SYNTH_SIZE[cfg.demo_size]
        root = ensure_bench_city(cfg, size, echo)
        # indexed here, not through frames_for: that caches <out>/synthetic/index.jsonl, the full-size demo
        # city's index, which the shards stage reads
        frames = [f for f in build_index("synthetic", root) if f.semantic and f.instance][:cfg.synthetic_frames]
        if not frames:
            raise DataError(root, "the benchmark city has no labelled frames")
        size = (frames[0].height, frames[0].width)
        out.append((Condition("synthetic-exact", "(a) synthetic city, exact depth", "synthetic", str(root),
                              DepthSpec("gt")), frames, size))
        if cfg.synthetic_model:
            spec = parse_depth_spec(f"model:{cfg.synthetic_model}", "synthetic", device=cfg.device)
            out.append((Condition("synthetic-model", "(b) synthetic city, learnt depth", "synthetic", str(root), spec),
                        frames, size))
        out.append((Condition("synthetic-weak", "(c) synthetic city, weak depth", "synthetic", str(root),
                              DepthSpec("gt"), WeakDepth()), frames, size))
    if cfg.dataset != "synthetic":
        frames = labelled_frames(cfg)
        if cfg.max_frames > 0:
            frames = frames[:cfg.max_frames]
        size = working_size(cfg, frames)
        spec = parse_depth_spec(cfg.depth, cfg.dataset, cfg.depth_kind, cfg.depth_scale, cfg.device)
        out.append((Condition(cfg.dataset, f"(d) {cfg.dataset}, {spec.kind} depth", cfg.dataset, cfg.data_root, spec),
                    frames, size))
        if cfg.real_model:
            spec = parse_depth_spec(f"model:{cfg.real_model}", cfg.dataset, device=cfg.device)
            out.append((Condition(f"{cfg.dataset}-model", f"(d) {cfg.dataset}, learnt depth", cfg.dataset,
                                  cfg.data_root, spec), frames, size))
    return out


# ---------------------------------------------------------------------------------------------
# the benchmark


def run_sweep(cfg: SweepConfig, echo=click.echo) -> dict[str, Any]:
    from joblib import Parallel, delayed, parallel_config

    t0 = time.perf_counter()
    unknown = sorted(set(cfg.methods) - set(METHODS))
    if unknown:
        raise click.UsageError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    conds = conditions(cfg, echo)
    if not conds:
        raise click.UsageError("nothing to measure: --synthetic-frames 0 and DATASET=synthetic")
    rgb_params = depth_rgb_params(cfg)
    tasks, plan = [], []
    for cond, frames, size in conds:
        params = grouping_params(cfg, size)
        plan.append((cond, len(frames), size, params))
        tasks += [(cond.key, delayed(sweep_frame)(f, size, cond, cfg, params, rgb_params)) for f in frames]
    echo(f"proposals-sweep: {len(tasks)} frames over {len(conds)} conditions "
         f"({', '.join(c.key for c, _, _ in conds)}), methods {', '.join(cfg.methods)}, {cfg.workers} worker(s)")
    results: dict[str, list[dict[str, Any]]] = {c.key: [] for c, _, _ in conds}
    keys = [k for k, _ in tasks]
    with parallel_config(backend="loky", inner_max_num_threads=1, initializer=watch_driver, initargs=(os.getpid(),)):
        par = Parallel(n_jobs=max(1, min(cfg.workers, len(tasks))), return_as="generator")
        for key, res in tqdm(zip(keys, par(t for _, t in tasks)), total=len(tasks), desc="proposals-sweep",
                             unit="frame"):
            results[key].append(res)
    report: dict[str, Any] = {"conditions": [], "seconds": 0.0}
    for cond, n_frames, size, params in plan:
        res = results[cond.key]
        skipped = [r["skipped"] for r in res if "skipped" in r]
        scored = [r["scores"] for r in res if "scores" in r]
        depth = cond.spec.units if cond.weak is None else \
            f"{cond.spec.units} degraded by evaluate.weak_depth {dataclasses.asdict(cond.weak)}"
        entry: dict[str, Any] = {"key": cond.key, "title": cond.title, "size": list(size), "frames": len(scored),
                                 "depth": depth, "skipped": skipped, "rows": []}
        if scored:
            for mk in scored[0]:
                s = MethodSummary([sc[mk] for sc in scored]).summary()
                entry["rows"].append({"method": mk[0], "knob": mk[1], **s})
            entry["matched"] = matched_rows(entry["rows"])
            frames = frame_points(scored)
            for row in entry["matched"]:
                row["frame_sd"] = {m: paired_spread(frames, row["knob"], m) for m in row
                                   if m not in ("regions", "knob", "depth-rgb") and isinstance(row[m], dict)}
        report["conditions"].append(entry)
    if not any(c["frames"] for c in report["conditions"]):
        reasons = "\n".join(f"  {s['path']}: {s['problem']}" for c in report["conditions"] for s in c["skipped"])
        raise DataError(cfg.data_root or cfg.dataset, f"every frame was skipped, nothing to report:\n{reasons}")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["depth_rgb_params"] = dataclasses.asdict(rgb_params)
    out = output_dir(cfg, "reports", f"proposals-sweep-{config_hash(cfg, extra=report['depth_rgb_params'])}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    md = format_markdown(report)
    (out / "sweep.md").write_text("\n".join(md) + "\n")
    write_png(out / "sweep.png", sweep_picture(report))
    save_config(cfg, out / "config.json")
    for line in md:
        echo(line)
    echo(f"proposals-sweep: {out}/sweep.md, sweep.png in {report['seconds']} s")
    return report


# ---------------------------------------------------------------------------------------------
# table and plot


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_markdown(report: dict[str, Any]) -> list[str]:
    lines = ["# Region proposals: a sweep of region counts per method", ""]
    for c in report["conditions"]:
        lines += [f"## {c['title']}", "",
                  f"{c['frames']} frames at {c['size'][0]}x{c['size'][1]}; depth: {c['depth']}" +
                  (f"; {len(c['skipped'])} skipped" if c["skipped"] else ""), ""]
        if not c["rows"]:
            lines += ["(no frame scored)", ""]
            continue
        lines += ["| method | knob | regions/frame | GT-query mIoU | bilateral mIoU | purity | coverage |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(c["rows"], key=lambda r: (r["method"], r["regions_per_frame"])):
            knob = "-" if r["method"] == "gt" else f"{KNOB[r['method']]} {r['knob']:g}"
            lines.append(f"| {r['method']} | {knob} | {r['regions_per_frame']:.1f} | {r['gt_query_miou']:.2f} | "
                         f"{r['bilateral_miou']:.2f} | {r['purity']:.2f} | {r['coverage']:.1f} |")
        methods = [m for m in METHODS if any(r["method"] == m for r in c["rows"])]
        if c.get("matched") and "depth-rgb" in methods:
            lines += ["", "At depth-rgb's region counts (other methods read off their own sweep, linear in log "
                          "count; - = outside their range): GT-query mIoU / purity", "",
                      "| regions/frame | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
            for r in c["matched"]:
                cells = [f"{_fmt(r[m]['gt_query_miou'])} / {_fmt(r[m]['purity'])}" if m in r else "-" for m in methods]
                lines.append(f"| {r['regions']:.0f} | " + " | ".join(cells) + " |")
            for other in methods:
                if other == "depth-rgb":
                    continue
                g = matched_gain(c["matched"], "depth-rgb", other, "gt_query_miou")
                p = matched_gain(c["matched"], "depth-rgb", other, "purity")
                if g:
                    lines.append(f"- depth-rgb - {other} at matched counts ({g[1]} points): GT-query "
                                 f"{g[0]:+.2f}, purity {p[0]:+.2f}; " + below_line(c["matched"], other))
        lines.append("")
    return lines


def below_line(matched: list[dict[str, Any]], other: str) -> str:
    """Where depth-rgb is below `other`, and whether by more than the frame-to-frame spread of the difference."""
    parts = []
    for metric, name in (("gt_query_miou", "GT-query"), ("purity", "purity")):
        below = []
        for r in matched:
            a, b = r["depth-rgb"][metric], r.get(other, {}).get(metric)
            if a is None or b is None or a >= b:
                continue
            sd = r.get("frame_sd", {}).get(other, {}).get(metric)
            sig = sd is not None and b - a > sd
            below.append(f"{r['regions']:.0f}: {a - b:+.1f}" + (f" (sd {sd:.1f}{', beyond it' if sig else ''})"
                                                                 if sd is not None else ""))
        parts.append(f"{name} below at {len(below)}" + (f" [{'; '.join(below)}]" if below else ""))
    return ", ".join(parts) + " (sd: frame-to-frame std of the paired difference)"


def sweep_picture(report: dict[str, Any]) -> np.ndarray:
    """GT-query mIoU against regions per frame, one panel per condition, one line per method."""
    from evaluate.plots import Series, line_plot
    from evaluate.report_pictures import side_by_side, stack_rows

    panels = []
    for c in report["conditions"]:
        series = []
        for m in (*METHODS, "gt"):
            pts = [r for r in c["rows"] if r["method"] == m and r["regions_per_frame"] > 0]
            if pts:
                series.append(Series(m, [p["regions_per_frame"] for p in pts], [p["gt_query_miou"] for p in pts]))
        if series:
            panels.append(line_plot(f"{c['title']} ({c['frames']} frames)", series, "regions per frame (log scale)",
                                    "GT-query mIoU (%)", x_log=True, y_top=100.0, size=(5.6, 3.2)).rgb)
    rows = [side_by_side(panels[i:i + 2]) for i in range(0, len(panels), 2)]
    return stack_rows(rows)


@click.command("proposals-sweep")
@config_options(SweepConfig)
def proposals_sweep(**kwargs) -> None:
    """Region-proposal benchmark: every method over a sweep of region counts on the synthetic city (exact,
    weak and, with --synthetic-model, learnt depth) and DATASET's labelled frames; table, JSON and plot."""
    cfg = build_config(SweepConfig, kwargs)
    try:
        run_sweep(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    except ValueError as e:  # a malformed --depth
        raise click.UsageError(str(e)) from e
