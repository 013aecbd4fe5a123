"""`python -m preprocess regions`: coherent depth regions for every frame -> the region store.

Per frame: read the image at the working size, get its depth (`--depth`, see shared.regions.depth_source),
make region proposals (`--proposals depth | felzenszwalb | gt`, see shared.regions.grouping), and store
depth (float16) + region ids (uint16, 0 = none) in HDF5 chunks (shared.region_store).

Frames are processed in chunks, one joblib task per chunk, single-threaded workers. A chunk file is
written under a temporary name and renamed, and the manifest lists it only afterwards, so a killed
run resumes with the unfinished chunks and a finished run is a no-op. Output folder:

    <out>/<dataset>[-<demo>]/regions/<proposals>-<config hash>/   manifest.json, config.json, chunk_*.h5
    <out>/<dataset>[-<demo>]/regions/<proposals>.current          pointer read by the shards stage

Working size: --size, else Cityscapes / folder 384x768, KITTI 384x1280, synthetic its native size.
DEMO_SIZE tiny | small shrinks the working size of real datasets (to 1/4 or 1/2 of the height)
and, at any demo size, scales the SLIC n_segments and region filter the user did not set with the image:
superpixels no smaller than 3x3 pixels, filter boxes in proportion to the height (docs/design.md#constants values
stay the default at full size).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any, Collection

import click
import numpy as np
from tqdm import tqdm

from shared.atomic import refresh_only, remove_stale_temporaries
from shared.config import build_config, config_hash, config_options, save_config, to_dict
from shared.regions.config import RegionsConfig, depth_spec, grouping_params, working_size
from shared.regions.depth_source import DepthSource, DepthSpec
from shared.regions.grouping import GroupingParams, depth_regions, felzenszwalb_regions, gt_regions
from shared.faults import kill_point
from shared.frames import DataError, Frame, odd_sized
from shared.imageio import read_label, read_rgb
from shared.presets import explicit_options
from shared.region_store import (RegionRecord, chunk_is_finished, chunk_name, read_manifest,
                                 write_chunk, write_manifest)
from shared.stage import frames_for, output_dir, write_pointer

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
                  strict: bool, odd: dict[str, str] | None = None) -> dict[str, Any]:
    """Compute and write one chunk; returns its manifest entry plus skipped frames and timings.
    odd: frame id -> problem for frames of another size than their sequence (skipped, not stretched)."""
    _single_thread()
    source = DepthSource(spec, max_invalid)
    records, skipped, timings = [], [], []
    for f in frames:
        try:
            if odd and f.id in odd:
                raise DataError(f.image, odd[f.id])
            rec, t = frame_regions(f, size, source, proposals, params, felz)
        except DataError as e:
            if strict:
                raise
            skipped.append({"frame": f.id, "path": e.path, "problem": e.problem})
            continue
        records.append(rec)
        timings.append(t)
        kill_point()  # tests: killed between frames of a chunk
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
                proposals: str, odd: dict[str, str] | None = None) -> list[dict[str, str]]:
    _single_thread()
    odd = odd or {}
    return [{"frame": f.id, "path": f.image, "problem": odd[f.id]} if f.id in odd else p for f in frames
            if f.id in odd or (p := check_frame(f, size, spec, max_invalid, proposals))]


# ---------------------------------------------------------------------------------------------
# the stage


def _parallel(cfg: RegionsConfig, n_tasks: int):
    from joblib import Parallel, parallel_config

    n_jobs = max(1, min(cfg.workers, n_tasks))
    ctx = parallel_config(backend=cfg.backend, inner_max_num_threads=1) if cfg.backend == "loky" \
        else parallel_config(backend=cfg.backend)
    return ctx, Parallel(n_jobs=n_jobs, return_as="generator_unordered")


def run_regions(cfg: RegionsConfig, echo=click.echo, explicit: Collection[str] = ()) -> Path:
    """Run the stage; returns the store folder (also recorded as regions/<proposals>.current).
    explicit: the options the user typed (demo-size scaling leaves them alone)."""
    from joblib import delayed

    t_start = time.perf_counter()
    frames = frames_for(cfg, strict=cfg.strict)
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    odd = odd_sized(frames)
    size = working_size(cfg, frames)
    params = grouping_params(cfg, size, explicit)
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
    if not any(chunks[name]["frames"] for name in done):
        done = set()  # a store in which every frame was skipped is not complete: try its frames again
    for name in set(chunks) - done:
        del chunks[name]
    pending = [name for name in plan if name not in done]

    def finish(note: str) -> Path:
        manifest["skipped"] = sorted((s for e in chunks.values() for s in e.get("skipped", [])),
                                     key=lambda s: s["frame"])
        with refresh_only(echo) if not pending else contextlib.nullcontext():
            write_manifest(store, manifest)
        if not any(e["frames"] for e in chunks.values()):  # produced nothing: an error, and no pointer to it
            problems = "\n".join(f"  {s['path']}: {s['problem']}" for s in manifest["skipped"][:10])
            raise DataError(store, f"every frame was skipped ({len(manifest['skipped'])}), nothing stored:\n"
                                   f"{problems}\nfix these inputs and rerun")
        with refresh_only(echo) if not pending else contextlib.nullcontext():
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
                                                             cfg.proposals, odd) for n in pending) for p in ps]
        if problems:
            lines = "\n".join(f"  {p['path']}: {p['problem']}" for p in sorted(problems, key=lambda p: p["frame"]))
            raise DataError(problems[0]["path"], f"--strict: {len(problems)} bad frame(s), nothing written:\n{lines}")

    echo(f"regions: {len(todo)} frames in {len(pending)} chunks ({len(done)} chunks already done) at "
         f"{size[0]}x{size[1]}, proposals={cfg.proposals}, depth={spec.kind}{':' + spec.arg if spec.arg else ''}, "
         f"n_segments={params.n_segments}, workers={cfg.workers}")
    remove_stale_temporaries(store)  # what killed writers left
    write_manifest(store, manifest)
    all_t: list[dict[str, float]] = []
    n_regions: list[int] = []
    ctx, par = _parallel(cfg, len(pending))
    with ctx, tqdm(total=len(todo), unit="frame", desc="regions") as bar:
        tasks = (delayed(process_chunk)(str(store), name, plan[name], size, spec, cfg.max_invalid_depth,
                                        cfg.proposals, params, felz, cfg.strict,
                                        {f.id: odd[f.id] for f in plan[name] if f.id in odd}) for name in pending)
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
        run_regions(cfg, explicit=explicit_options())
    except DataError as e:
        raise click.ClickException(str(e)) from e
