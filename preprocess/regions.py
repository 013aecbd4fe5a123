"""`python -m preprocess regions`: coherent depth regions for every frame -> the region store.

Per frame: read the image at the working size, get its depth (`--depth`, see preprocess.depth_source),
make region proposals (`--proposals depth | felzenszwalb | gt`, see preprocess.grouping), and store
depth (float16) + region ids (uint16, 0 = none) in HDF5 chunks (shared.region_store).

Frames are processed in chunks, one joblib task per chunk, single-threaded workers. A chunk file is
written under a temporary name and renamed, and the manifest lists it only afterwards, so a killed
run resumes with the unfinished chunks and a finished run is a no-op. Output folder:

    <out>/<dataset>[-<demo>]/regions/<proposals>-<config hash>/   manifest.json, config.json, chunk_*.h5
    <out>/<dataset>[-<demo>]/regions/<proposals>.current          pointer read by the shards stage

Working size: --size, else Cityscapes / folder 384x768, KITTI 384x1280, synthetic its native size.
DEMO_SIZE tiny | small shrinks the working size of real datasets (to 1/4 or 1/2 of the height)
and, at any demo size, scales the paper-valued SLIC n_segments and region filter with the image:
superpixels no smaller than 3x3 pixels, filter boxes in proportion to the height (docs/design.md#constants values
stay the default at full size).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from preprocess.depth_source import DepthSource, DepthSpec, parse_depth_spec
from preprocess.grouping import GroupingParams, depth_regions, felzenszwalb_regions, gt_regions
from shared.config import build_config, config_hash, config_options, field, save_config, to_dict
from shared.frames import DataError, Frame
from shared.imageio import read_label, read_rgb
from shared.region_store import (RegionRecord, chunk_is_finished, chunk_name, read_manifest,
                                 write_chunk, write_manifest)
from shared.stage import StageConfig, frames_for, output_dir, write_pointer

PROPOSALS = ["depth", "felzenszwalb", "gt"]
BACKENDS = ["loky", "multiprocessing", "threading", "dask", "ray"]
DEFAULT_SIZE = {"cityscapes": (384, 768), "kitti": (384, 1280), "folder": (384, 768)}
PAPER = GroupingParams()
PAPER_HEIGHT = 384


@dataclass
class RegionsConfig(StageConfig):
    """Coherent depth regions -> region store (docs/design.md#region-grouping)."""

    proposals: str = field("depth", "region proposals: depth (the paper's), felzenszwalb (appearance only), "
                                    "gt (ground-truth instance components, the upper bound)", choices=PROPOSALS)
    depth: str = field("", "depth source: gt | files:DIR | model:CKPT (empty = gt for synthetic, required otherwise)")
    depth_kind: str = field("depth", "files: the maps hold depth or disparity", choices=["depth", "disparity"])
    depth_scale: float = field(1.0, "files: value = raw / scale (e.g. 256 for KITTI 16-bit PNG)")
    max_invalid_depth: float = field(0.0, "fraction of NaN/inf/non-positive depth pixels tolerated (filled from "
                                          "the nearest valid pixel); above it the frame is bad")
    device: str = field("cpu", "model depth: torch device", hash=False)
    size: str = field("", "working size HEIGHTxWIDTH (empty = per dataset: cityscapes/folder 384x768, "
                          "kitti 384x1280, synthetic native)")
    n_segments: int = field(PAPER.n_segments, "SLIC superpixels (scaled down at demo sizes)")
    compactness: float = field(PAPER.compactness, "SLIC compactness")
    sigma: float = field(PAPER.sigma, "SLIC Gaussian smoothing")
    w_ocln: float = field(PAPER.w_ocln, "weight of the occlusion term D_ocln in W")
    w_sup: float = field(PAPER.w_sup, "weight of the support term D_sup in W")
    bias: float = field(PAPER.bias, "bias inside W = sigmoid(w_ocln D_ocln + w_sup D_sup + bias)")
    t_e: float = field(PAPER.t_e, "a community whose every outgoing edge W exceeds this is final")
    min_height: int = field(PAPER.min_height, "region filter: min bounding-box height, px (scaled at demo sizes)")
    min_width: int = field(PAPER.min_width, "region filter: min bounding-box width, px (scaled at demo sizes)")
    seed: int = field(PAPER.seed, "InfoMap seed")
    trials: int = field(PAPER.trials, "InfoMap trials per level")
    felz_scale: float = field(300.0, "felzenszwalb proposals: scale")
    felz_sigma: float = field(0.8, "felzenszwalb proposals: sigma")
    felz_min_size: int = field(50, "felzenszwalb proposals: min component size, px")
    max_frames: int = field(0, "process only the first N frames of the index (0 = all)")
    chunk_size: int = field(8, "frames per HDF5 chunk (one parallel task each)")
    workers: int = field(os.cpu_count() or 1, "parallel worker processes", hash=False)
    backend: str = field("loky", "joblib backend (dask / ray need their packages)", choices=BACKENDS, hash=False)
    strict: bool = field(False, "stop before writing anything if any frame is bad (default: skip and report it)",
                         hash=False)


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"--size {text!r} is not HEIGHTxWIDTH, e.g. 384x768") from None
    if h < 8 or w < 8:
        raise click.BadParameter(f"--size {text!r} is too small")
    return h, w


def working_size(cfg: RegionsConfig, frames: list[Frame]) -> tuple[int, int]:
    if cfg.size:
        return parse_size(cfg.size)
    if cfg.dataset == "synthetic":
        return frames[0].height, frames[0].width
    h, w = DEFAULT_SIZE[cfg.dataset]
    div = {"": 1, "small": 2, "tiny": 4}[cfg.demo_size]
    return h // div, w // div


def grouping_params(cfg: RegionsConfig, size: tuple[int, int]) -> GroupingParams:
    """The config's constants; at a demo size, paper-valued n_segments and filter follow the image."""
    n_seg, min_h, min_w = cfg.n_segments, cfg.min_height, cfg.min_width
    if cfg.demo_size:
        h, w = size
        if n_seg == PAPER.n_segments:
            n_seg = int(min(n_seg, h * w // 9))
        ratio = min(h / PAPER_HEIGHT, 1.0)
        if min_h == PAPER.min_height:
            min_h = max(2, round(min_h * ratio))
        if min_w == PAPER.min_width:
            min_w = max(2, round(min_w * ratio))
    return GroupingParams(n_segments=n_seg, compactness=cfg.compactness, sigma=cfg.sigma, w_ocln=cfg.w_ocln,
                          w_sup=cfg.w_sup, bias=cfg.bias, t_e=cfg.t_e, min_height=min_h, min_width=min_w,
                          seed=cfg.seed, trials=cfg.trials)


def depth_spec(cfg: RegionsConfig) -> DepthSpec:
    try:
        return parse_depth_spec(cfg.depth, cfg.dataset, cfg.depth_kind, cfg.depth_scale, cfg.device)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


# ---------------------------------------------------------------------------------------------
# one frame


def frame_inputs(frame: Frame, size: tuple[int, int], source: DepthSource, proposals: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rgb uint8 [H, W, 3], depth float32 [H, W], instanceIds or None) at the working size; DataError on bad input."""
    rgb = read_rgb(frame.image, size)
    depth = source.load(frame, size, rgb)
    inst = None
    if proposals == "gt":
        if not frame.instance:
            raise DataError(frame.image, "--proposals gt needs instance labels, this frame has none")
        inst = read_label(frame.instance, size)
    return rgb, depth, inst


def frame_regions(frame: Frame, size: tuple[int, int], source: DepthSource, proposals: str,
                  params: GroupingParams, felz: tuple[float, float, int]) -> tuple[RegionRecord, dict[str, float]]:
    t0 = time.perf_counter()
    rgb, depth, inst = frame_inputs(frame, size, source, proposals)
    timings = {"load": time.perf_counter() - t0}
    attrs: dict[str, Any] = {"image": frame.image}
    if proposals == "depth":
        res = depth_regions(rgb, depth, frame.K(size[1], size[0]), params)
        regions = res.regions
        timings.update(res.timings)
        attrs.update(n_superpixels=int(res.superpixels.max()) + 1, infomap_levels=res.trace.levels,
                     guard_stops=res.trace.guard_stops)
    elif proposals == "felzenszwalb":
        t1 = time.perf_counter()
        regions = felzenszwalb_regions(rgb, felz[0], felz[1], felz[2], params.min_height, params.min_width)
        timings["felzenszwalb"] = time.perf_counter() - t1
    else:
        regions = gt_regions(inst, params.min_height, params.min_width)
    attrs["n_regions"] = int(regions.max())
    return RegionRecord(frame.id, depth, regions, attrs), timings


# ---------------------------------------------------------------------------------------------
# one chunk (a worker task)


def _single_thread() -> None:
    # workers share the machine: one thread each for BLAS / OpenMP / numba
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(k, "1")


def process_chunk(store: str, name: str, frames: list[Frame], size: tuple[int, int], spec: DepthSpec,
                  max_invalid: float, proposals: str, params: GroupingParams, felz: tuple[float, float, int],
                  strict: bool) -> dict[str, Any]:
    """Compute and write one chunk; returns its manifest entry plus skipped frames and timings."""
    _single_thread()
    source = DepthSource(spec, max_invalid)
    records, skipped, timings = [], [], []
    for f in frames:
        try:
            rec, t = frame_regions(f, size, source, proposals, params, felz)
        except DataError as e:
            if strict:
                raise
            skipped.append({"frame": f.id, "path": e.path, "problem": e.problem})
            continue
        records.append(rec)
        timings.append(t)
    entry = write_chunk(Path(store) / name, records)
    entry["skipped"] = skipped
    return {"name": name, "entry": entry, "timings": timings,
            "regions": [int(r.attrs["n_regions"]) for r in records]}


def check_frame(frame: Frame, size: tuple[int, int], spec: DepthSpec, max_invalid: float,
                proposals: str) -> dict[str, str] | None:
    """--strict pre-pass: read every input of a frame; the problem, or None."""
    try:
        if spec.kind == "model":  # the model's output is checked when it runs; here its input is
            read_rgb(frame.image, size)
            if proposals == "gt":
                if not frame.instance:
                    raise DataError(frame.image, "--proposals gt needs instance labels, this frame has none")
                read_label(frame.instance, size)
        else:
            frame_inputs(frame, size, DepthSource(spec, max_invalid), proposals)
    except DataError as e:
        return {"frame": frame.id, "path": e.path, "problem": e.problem}
    return None


def check_chunk(frames: list[Frame], size: tuple[int, int], spec: DepthSpec, max_invalid: float,
                proposals: str) -> list[dict[str, str]]:
    _single_thread()
    return [p for f in frames if (p := check_frame(f, size, spec, max_invalid, proposals))]


# ---------------------------------------------------------------------------------------------
# the stage


def _parallel(cfg: RegionsConfig, n_tasks: int):
    from joblib import Parallel, parallel_config

    n_jobs = max(1, min(cfg.workers, n_tasks))
    ctx = parallel_config(backend=cfg.backend, inner_max_num_threads=1) if cfg.backend == "loky" \
        else parallel_config(backend=cfg.backend)
    return ctx, Parallel(n_jobs=n_jobs, return_as="generator_unordered")


def run_regions(cfg: RegionsConfig, echo=click.echo) -> Path:
    """Run the stage; returns the store folder (also recorded as regions/<proposals>.current)."""
    from joblib import delayed

    t_start = time.perf_counter()
    frames = frames_for(cfg)
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    size = working_size(cfg, frames)
    params = grouping_params(cfg, size)
    spec = depth_spec(cfg)
    felz = (cfg.felz_scale, cfg.felz_sigma, cfg.felz_min_size)
    h = config_hash(cfg)
    store = output_dir(cfg, "regions", f"{cfg.proposals}-{h}")
    store.mkdir(parents=True, exist_ok=True)

    plan = {chunk_name(i): frames[s:s + cfg.chunk_size]
            for i, s in enumerate(range(0, len(frames), cfg.chunk_size))}
    try:
        manifest = read_manifest(store)
    except DataError:
        manifest = {}
    if manifest.get("config_hash") != h:
        manifest = {}
    manifest.update({
        "height": size[0], "width": size[1], "config": to_dict(cfg), "config_hash": h,
        "proposals": cfg.proposals, "depth_units": spec.units, "frames": len(frames),
        "params": dataclasses.asdict(params),
    })
    chunks = {k: v for k, v in manifest.get("chunks", {}).items() if k in plan}
    manifest["chunks"] = chunks
    done = {name for name, fs in plan.items()
            if name in chunks and sorted(chunks[name]["frames"] + [s["frame"] for s in chunks[name].get("skipped", [])])
            == sorted(f.id for f in fs) and chunk_is_finished(store, name, manifest)}
    for name in set(chunks) - done:
        del chunks[name]
    pending = [name for name in plan if name not in done]

    def finish(note: str) -> Path:
        manifest["skipped"] = sorted((s for e in chunks.values() for s in e.get("skipped", [])),
                                     key=lambda s: s["frame"])
        write_manifest(store, manifest)
        save_config(cfg, store / "config.json", extra={"params": dataclasses.asdict(params)})
        write_pointer(cfg, "regions", cfg.proposals, store)
        echo(note)
        return store

    if not pending:
        n = sum(len(e["frames"]) for e in chunks.values())
        return finish(f"regions: {store} is already complete ({n} frames, {len(manifest.get('skipped', []))} "
                      f"skipped), nothing to do")

    todo = [f for name in pending for f in plan[name]]
    if cfg.strict:
        ctx, par = _parallel(cfg, len(pending))
        with ctx:
            problems = [p for ps in par(delayed(check_chunk)(plan[n], size, spec, cfg.max_invalid_depth,
                                                             cfg.proposals) for n in pending) for p in ps]
        if problems:
            lines = "\n".join(f"  {p['path']}: {p['problem']}" for p in sorted(problems, key=lambda p: p["frame"]))
            raise DataError(problems[0]["path"], f"--strict: {len(problems)} bad frame(s), nothing written:\n{lines}")

    echo(f"regions: {len(todo)} frames in {len(pending)} chunks ({len(done)} chunks already done) at "
         f"{size[0]}x{size[1]}, proposals={cfg.proposals}, depth={spec.kind}{':' + spec.arg if spec.arg else ''}, "
         f"n_segments={params.n_segments}, workers={cfg.workers}")
    write_manifest(store, manifest)
    all_t: list[dict[str, float]] = []
    n_regions: list[int] = []
    ctx, par = _parallel(cfg, len(pending))
    with ctx, tqdm(total=len(todo), unit="frame", desc="regions") as bar:
        tasks = (delayed(process_chunk)(str(store), name, plan[name], size, spec, cfg.max_invalid_depth,
                                        cfg.proposals, params, felz, cfg.strict) for name in pending)
        for res in par(tasks):
            chunks[res["name"]] = res["entry"]
            manifest["skipped"] = sorted((s for e in chunks.values() for s in e.get("skipped", [])),
                                         key=lambda s: s["frame"])
            write_manifest(store, manifest)  # after the rename: a listed chunk is a finished chunk
            all_t.extend(res["timings"])
            n_regions.extend(res["regions"])
            bar.update(len(plan[res["name"]]))
    elapsed = time.perf_counter() - t_start
    skipped = [s for e in chunks.values() for s in e.get("skipped", [])]
    lines = [f"regions: wrote {len(n_regions)} frames into {store} in {elapsed:.1f} s "
             f"({elapsed / max(len(todo), 1):.2f} s/frame wall, {cfg.workers} workers)"]
    if n_regions:
        lines.append(f"  regions per frame: median {statistics.median(n_regions):g}, "
                     f"min {min(n_regions)}, max {max(n_regions)}")
        steps = sorted({k for t in all_t for k in t})
        lines.append("  mean s/frame per step: " + ", ".join(
            f"{k} {np.mean([t.get(k, 0.0) for t in all_t]):.3f}" for k in steps))
    if skipped:
        lines.append(f"  skipped {len(skipped)} bad frame(s) (listed in manifest.json):")
        lines += [f"    {s['path']}: {s['problem']}" for s in skipped[:10]]
    return finish("\n".join(lines))


@click.command("regions")
@config_options(RegionsConfig)
def regions(**kwargs) -> None:
    """Coherent depth regions of every frame of DATASET -> region store (HDF5 chunks + manifest).

    Resumes a killed run; a finished run for the same config is a no-op."""
    cfg = build_config(RegionsConfig, kwargs)
    try:
        run_regions(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
