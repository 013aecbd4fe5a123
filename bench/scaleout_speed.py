"""What the regions and shards stages cost per frame and per group, and what each engine adds
(README "Scaling out": how many cores a dataset needs).

    .venv/bin/python bench/scaleout_speed.py [--city tiny|small] [--backends loky,dask,ray] [--workers 2]

Renders the built-in synthetic city of that size (cached under the temp folder), then:
  1. one core: regions (one loky worker, in this process) -> s/frame; shards -> s/group.
  2. per backend with --workers local workers (a LocalCluster / local Ray runtime started by the
     stage itself): engine start-up alone, then regions and shards wall time, each output checked
     byte for byte against the one-core run.
Prints `uptime` first: on a shared machine, figures vary with the load.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocess import regions as R  # noqa: E402
from preprocess.shards import PRESETS, ShardsConfig, run_shards  # noqa: E402
from preprocess.synth import generate_preset  # noqa: E402
from shared.executor import Executor  # noqa: E402
from shared.shard_set import read_manifest as read_shard_manifest  # noqa: E402


def outputs(store: Path, shards: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("chunk_*.h5")) + sorted(shards.glob("shard-*.tar"))}


CPU: dict[str, float] = {}  # CPU seconds of this process in the last run (all of it when one worker runs in-process)


def run(city: Path, out: Path, size: str, **engine) -> tuple[float, float, Path, Path, int, int]:
    """(regions s, shards s, store, shard folder, frames, groups) of one run into a fresh `out`."""
    shutil.rmtree(out, ignore_errors=True)
    c0 = time.process_time()
    t0 = time.perf_counter()
    store = R.run_regions(R.RegionsConfig(dataset="synthetic", data_root=str(city), out=str(out), demo_size=size,
                                          chunk_size=4, **engine), echo=lambda s: None)
    t1 = time.perf_counter()
    c1 = time.process_time()
    shards = run_shards(ShardsConfig(dataset="synthetic", data_root=str(city), out=str(out), demo_size=size,
                                     **PRESETS.get(size, {}), **engine), echo=lambda s: None)
    t2 = time.perf_counter()
    CPU.update(regions=c1 - c0, shards=time.process_time() - c1)
    frames = sum(len(e["frames"]) for e in json.loads((store / "manifest.json").read_text())["chunks"].values())
    groups = int(read_shard_manifest(shards)["n_groups"])
    return t1 - t0, t2 - t1, store, shards, frames, groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", default="small", choices=["tiny", "small"])
    ap.add_argument("--backends", default="loky,dask,ray")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    tmp = Path(tempfile.gettempdir()) / "cpcdr-bench-scaleout"
    city = tmp / f"city-{args.city}"
    generate_preset(city, args.city)

    t_reg, t_sh, store, shards, frames, groups = run(city, tmp / "one-core", args.city, workers=1)
    ref = outputs(store, shards)
    print(f"one core ({args.city} city, {frames} frames, {groups} groups of "
          f"{2 * PRESETS.get(args.city, {}).get('group_size', 8)} images):")
    print(f"  first:  regions {t_reg / frames:.3f} s/frame, shards {t_sh / groups:.3f} s/group wall "
          f"(includes loading numba's cached kernels)")
    t_reg, t_sh, *_ = run(city, tmp / "one-core-again", args.city, workers=1)
    print(f"  again:  regions {t_reg / frames:.3f} s/frame, shards {t_sh / groups:.3f} s/group wall; "
          f"CPU time {CPU['regions'] / frames:.3f} s/frame, {CPU['shards'] / groups:.3f} s/group")

    print(f"{args.workers} local workers per backend (wall time; each run starts its engine):")
    print("  backend  start-up s  regions s  shards s  same bytes")
    for b in args.backends.split(","):
        t0 = time.perf_counter()
        with Executor(b, "", args.workers):
            pass
        start = time.perf_counter() - t0
        t_reg, t_sh, store, shards, *_ = run(city, tmp / f"engine-{b}", args.city, workers=args.workers, backend=b)
        print(f"  {b:7s}  {start:10.1f}  {t_reg:9.1f}  {t_sh:8.1f}  {outputs(store, shards) == ref}")


if __name__ == "__main__":
    main()
