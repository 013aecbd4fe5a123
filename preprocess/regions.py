"""`python -m preprocess regions`: coherent depth regions for every frame -> the region store.

Per frame: read the image at the working size, get its depth (`--depth`, see shared.regions.depth_source),
make region proposals (`--proposals depth | depth-rgb | felzenszwalb | gt`, see shared.regions.grouping and
shared.regions.depth_rgb), and store
depth (float16) + region ids (uint16, 0 = none) in HDF5 chunks (shared.region_store).

Frames are stored in chunks of --chunk-size; each frame is one task (single-threaded workers, on
local processes or a Dask / Ray cluster: `--backend`, `--scheduler`, shared.executor), and the driver
writes a chunk once all its frames are back, so few frames still keep every worker busy and the
bytes depend neither on the number of workers nor on the engine. A chunk file is written under a
temporary name and renamed, and the manifest lists it only afterwards, so a killed run (or a killed
worker) resumes with the unfinished chunks and a finished run is a no-op. Output folder:

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
from shared.config import build_config, config_options, save_config, to_dict
from shared.eta import Eta
from shared.executor import Executor
from shared.regions.config import (RegionsConfig, depth_rgb_params, depth_spec, grouping_params, regions_hash,
                                   working_size)
from shared.regions.depth_rgb import DepthRgbParams, depth_rgb_regions
from shared.regions.depth_source import DepthSource, DepthSpec
from shared.regions.grouping import GroupingParams, depth_regions, felzenszwalb_regions, gt_regions
from shared.faults import kill_point
from shared.frames import DataError, Frame, odd_sized
from shared.imageio import read_label, read_rgb
from shared.presets import explicit_options
from shared.region_store import (RegionRecord, chunk_is_finished, chunk_name, read_manifest,
                                 write_chunk, write_manifest)
from shared.stage import frames_for, output_dir, portable_path, write_pointer

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
                  params: GroupingParams, felz: tuple[float, float, int], rgb_params: DepthRgbParams = DepthRgbParams()
                  ) -> tuple[RegionRecord, dict[str, float]]:
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
    elif proposals == "depth-rgb":
        rr = depth_rgb_regions(rgb, depth, frame.K(size[1], size[0]), params, rgb_params)
        regions = rr.regions
        timings.update(rr.timings)
        attrs.update(n_superpixels=int(rr.superpixels.max()) + 1, depth_precision=round(rr.depth_precision, 6))
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


_SOURCES: dict[tuple[DepthSpec, float], DepthSource] = {}


def _source(spec: DepthSpec, max_invalid: float) -> DepthSource:
    """One DepthSource per worker process: a depth model is loaded once, not once per frame."""
    key = (spec, max_invalid)
    if key not in _SOURCES:
        _SOURCES[key] = DepthSource(spec, max_invalid)
    return _SOURCES[key]


def process_frame(frame: Frame, size: tuple[int, int], spec: DepthSpec, max_invalid: float, proposals: str,
                  params: GroupingParams, felz: tuple[float, float, int], strict: bool,
                  rgb_params: DepthRgbParams = DepthRgbParams(), odd: str | None = None) -> dict[str, Any]:
    """One worker task: the record of one frame, or the reason it was skipped (a DataError under --strict).
    odd: the problem of a frame of another size than its sequence (skipped, not stretched)."""
    _single_thread()
    try:
        if odd:
            raise DataError(frame.image, odd)
        rec, t = frame_regions(frame, size, _source(spec, max_invalid), proposals, params, felz, rgb_params)
    except DataError as e:
        if strict:
            raise
        return {"frame": frame.id, "skipped": {"frame": frame.id, "path": e.path, "problem": e.problem}}
    kill_point()  # tests: killed between frames
    return {"frame": frame.id, "record": rec, "timings": t}


def write_finished_chunk(store: Path, name: str, frames: list[Frame], results: dict[str, dict[str, Any]],
                         out: str | os.PathLike) -> dict[str, Any]:
    """Write a chunk whose every frame has a result; records in the chunk's frame order, so the bytes do
    not depend on which worker finished first. An image inside the output root `out` is recorded relative
    to the store, so the bytes (and the shard-set name hashed from them) do not depend on where OUT is,
    and a moved or copied tree names its own images. Returns its manifest entry."""
    records = [dataclasses.replace(r, attrs={**r.attrs, "image": portable_path(r.attrs["image"], store, out)})
               for r in (results[f.id]["record"] for f in frames if "record" in results[f.id])]
    entry = write_chunk(store / name, records)
    entry["skipped"] = [results[f.id]["skipped"] for f in frames if "skipped" in results[f.id]]
    return entry


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


def check_frame_task(frame: Frame, size: tuple[int, int], spec: DepthSpec, max_invalid: float,
                     proposals: str, odd: str | None = None) -> dict[str, str] | None:
    _single_thread()
    if odd:
        return {"frame": frame.id, "path": frame.image, "problem": odd}
    return check_frame(frame, size, spec, max_invalid, proposals)


def reads_again(frame: Frame, skip: dict[str, str], size: tuple[int, int], spec: DepthSpec, max_invalid: float,
                proposals: str, odd: str | None = None) -> bool:
    """Whether a frame a finished chunk skipped would now be stored (its file was repaired). With a depth
    model only the files are checked, so only a skip that named one of them is retried: a frame the model
    itself failed on is not recomputed on every rerun."""
    if spec.kind == "model" and skip["path"] not in (frame.image, frame.instance):
        return False
    return check_frame_task(frame, size, spec, max_invalid, proposals, odd) is None


# ---------------------------------------------------------------------------------------------
# the stage


def n_workers(cfg: RegionsConfig, n_tasks: int) -> int:
    """The workers that actually run: no more than there are tasks."""
    return max(1, min(cfg.workers, n_tasks))


def run_regions(cfg: RegionsConfig, echo=click.echo, explicit: Collection[str] = ()) -> Path:
    """Run the stage; returns the store folder (also recorded as regions/<proposals>.current).
    explicit: the options the user typed (demo-size scaling leaves them alone)."""
    t_start = time.perf_counter()
    frames = frames_for(cfg, strict=cfg.strict)
    if cfg.max_frames > 0:
        frames = frames[:cfg.max_frames]
    odd = odd_sized(frames)
    size = working_size(cfg, frames)
    params = grouping_params(cfg, size, explicit)
    spec = depth_spec(cfg)
    felz = (cfg.felz_scale, cfg.felz_sigma, cfg.felz_min_size)
    rgb_params = depth_rgb_params(cfg)
    h = regions_hash(cfg)
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
    if cfg.proposals == "depth-rgb":
        manifest["depth_rgb_params"] = dataclasses.asdict(rgb_params)
    chunks = {k: v for k, v in manifest.get("chunks", {}).items() if k in plan}
    manifest["chunks"] = chunks
    done = {name for name, fs in plan.items()
            if name in chunks and sorted(chunks[name]["frames"] + [s["frame"] for s in chunks[name].get("skipped", [])])
            == sorted(f.id for f in fs) and chunk_is_finished(store, name, manifest)}
    if not any(chunks[name]["frames"] for name in done):
        done = set()  # a store in which every frame was skipped is not complete: try its frames again
    by_id = {f.id: f for f in frames}
    repaired = {s["frame"] for name in done for s in chunks[name].get("skipped", [])
                if reads_again(by_id[s["frame"]], s, size, spec, cfg.max_invalid_depth, cfg.proposals, odd.get(s["frame"]))}
    done -= {name for name in done if repaired & {s["frame"] for s in chunks[name].get("skipped", [])}}
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

    # One task per frame, not per chunk: a store of few frames (one chunk of 8) still uses every worker.
    # The driver writes a chunk once all its frames are back, so chunk boundaries and bytes stay those
    # of --chunk-size whatever the number of workers.
    todo = [f for name in pending for f in plan[name]]
    workers = n_workers(cfg, len(todo))
    echo(f"regions: plan: {len(todo)} frames in {len(pending)} chunks ({len(done)} chunks already done) at "
         f"{size[0]}x{size[1]}, proposals={cfg.proposals}, depth={spec.kind}{':' + spec.arg if spec.arg else ''}"
         + (f" on {spec.device}" if spec.kind == "model" else "")
         + f", n_segments={params.n_segments}, {workers} worker(s), backend={cfg.backend}; the time estimate "
         "follows the first frames")
    eta = Eta("regions", len(todo), "frame", echo)
    # one engine session for both passes: a cluster starts (or is connected to) once
    with Executor(cfg.backend, cfg.scheduler, workers) as ex:
        if cfg.strict:
            checks = ex.map_unordered(check_frame_task, [(f, size, spec, cfg.max_invalid_depth, cfg.proposals,
                                                          odd.get(f.id)) for f in todo], desc="regions-check")
            problems = [p for p in checks if p]
            if problems:
                lines = "\n".join(f"  {p['path']}: {p['problem']}" for p in sorted(problems, key=lambda p: p["frame"]))
                raise DataError(problems[0]["path"], f"--strict: {len(problems)} bad frame(s), nothing written:\n{lines}")

        remove_stale_temporaries(store)  # what killed writers left
        write_manifest(store, manifest)
        all_t: list[dict[str, float]] = []
        n_regions: list[int] = []
        chunk_of = {f.id: name for name in pending for f in plan[name]}
        results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in pending}
        manifest_t = [0.0, 0.0]  # when the manifest was last written, and how long that took
        tasks = [(f, size, spec, cfg.max_invalid_depth, cfg.proposals, params, felz, cfg.strict, rgb_params,
                  odd.get(f.id)) for f in todo]
        with tqdm(total=len(todo), unit="frame", desc="regions") as bar:
            for res in ex.map_unordered(process_frame, tasks, desc="regions"):
                name = chunk_of[res["frame"]]
                results[name][res["frame"]] = res
                bar.update(1)
                eta.update(1)
                if "record" in res:
                    all_t.append(res["timings"])
                    n_regions.append(int(res["record"].attrs["n_regions"]))
                if len(results[name]) < len(plan[name]):
                    continue
                chunks[name] = write_finished_chunk(store, name, plan[name], results.pop(name), cfg.out)
                # after the rename: a listed chunk is a finished chunk. The manifest grows with the store, so
                # writing it after every chunk is quadratic (0.3 s a write at 89k frames, 11k chunks): it is
                # written once at least 20 times its own last write time has passed (a small store: every chunk)
                if time.perf_counter() - manifest_t[0] >= 20 * manifest_t[1]:
                    manifest["skipped"] = sorted((s for e in chunks.values() for s in e.get("skipped", [])),
                                                 key=lambda s: s["frame"])
                    t_write = time.perf_counter()
                    write_manifest(store, manifest)
                    manifest_t[:] = [time.perf_counter(), time.perf_counter() - t_write]
    elapsed = time.perf_counter() - t_start
    skipped = [s for e in chunks.values() for s in e.get("skipped", [])]
    lines = []
    if n_regions:
        steps = sorted({k for t in all_t for k in t})
        lines.append(f"regions: per frame: median {statistics.median(n_regions):g} regions (min {min(n_regions)}, "
                     f"max {max(n_regions)}); mean s/frame per step: "
                     + ", ".join(f"{k} {np.mean([t.get(k, 0.0) for t in all_t]):.3f}" for k in steps))
    if repaired:
        stored = {fid for e in chunks.values() for fid in e["frames"]}
        lines.append(f"regions: recovered {len(repaired & stored)} of {len(repaired)} frame(s) skipped by an "
                     "earlier run whose files now read")
    if skipped:
        lines.append(f"regions: skipped {len(skipped)} bad frame(s) (listed in manifest.json):")
        lines += [f"    {s['path']}: {s['problem']}" for s in skipped[:10]]
    # the summary comes last: what was written where, and how long it took
    lines.append(f"regions: wrote {len(n_regions)} frames into {store} in {elapsed:.1f} s "
                 f"({elapsed / max(len(todo), 1):.2f} s/frame wall, {workers} worker(s))")
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
