"""What comes before the first frame is processed, at the size of a real dataset.

    .venv/bin/python bench/scale_index.py 1000 10000 100000 [--keep DIR]

For each N, in a temporary folder: a Cityscapes-layout tree of N frames (30-frame snippets, hard
links to one small PNG: the index reads headers, so the image's size does not matter to it) and a
video of N frames (MPEG-4 part 2 in MP4, 64x32: its container index lists every frame). Then, each in
a fresh process, timed (wall and CPU seconds) with its peak resident memory:

    index         the frame index (`preprocess index`'s work: read the layout, save index.jsonl)
    regions-plan  `preprocess regions` up to the first frame task (index, plan, store manifest)
    regions-done  `preprocess regions` on a store that holds every frame: the resume check, nothing to do
    shards-plan   `preprocess shards` up to the first shard task (store listing, source check, plan)
    shards-done   `preprocess shards` on a finished shard set: the reuse check, nothing to do

The finished store and shard set are made by the benchmark (maps of 8x16 pixels, shards of a few
bytes with their true checksums), so the checks do their real work on small files: what grows with
N is the bookkeeping, which is what this measures. A growth ratio is the time at N over the time at
N / 10 (10 = grows like N). The goal at 100k frames: each <= 20 s and 300 MB on 2 quiet cores.
The machine may be shared: the load average is printed beside the figures, and CPU seconds are the
figure to compare.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

STEPS = ["index", "regions-plan", "regions-done", "shards-plan", "shards-done"]
DATASETS = ["cityscapes", "video"]
SNIPPET = 30  # frames per Cityscapes snippet
LINKS_PER_FILE = 50_000


# ---------------------------------------------------------------------------------------------
# inputs


def make_tree(root: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(root / "frame.png")
    tree = root / "cityscapes"
    for i in range(n):
        src = root / f"frame-{i // LINKS_PER_FILE}.png"  # a file takes at most 65,000 links (ext4)
        if i % LINKS_PER_FILE == 0:
            shutil.copy(root / "frame.png", src)
        seq, frame = divmod(i, SNIPPET)
        city = "abcdefghij"[seq % 10] * 4  # Cityscapes city names are letters
        folder = tree / "leftImg8bit_sequence" / "train" / city
        if frame == 0 and seq < 10:
            folder.mkdir(parents=True, exist_ok=True)
        os.link(src, folder / f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png")
    return tree


def make_video(root: Path, n: int) -> Path:
    import av

    path = root / "drive.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.options = {"g": "30"}
        base = np.zeros((32, 64, 3), np.uint8)
        for i in range(n):
            a = base.copy()
            a[:, i % 64] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


# ---------------------------------------------------------------------------------------------
# one measured step (in its own process)


class _Stop(Exception):
    """Raised where the first frame (or shard) task would start: planning is over."""


def _regions_cfg(dataset: str, data: str, out: str):
    from shared.regions.config import RegionsConfig

    # a depth folder is named, never read: no frame is processed here
    return RegionsConfig(dataset=dataset, data_root=data, out=out, proposals="felzenszwalb", workers=1,
                         depth=f"files:{out}")


def _shards_cfg(dataset: str, data: str, out: str):
    from preprocess.shards import ShardsConfig

    return ShardsConfig(dataset=dataset, data_root=data, out=out, proposals="felzenszwalb", workers=1,
                        groups_per_shard=64)


def step(name: str, dataset: str, data: str, out: str) -> None:
    """Run one step; what it took is measured by the caller from outside (wall) and inside (CPU, peak)."""
    import click

    echo = lambda *a, **k: None  # noqa: E731
    if name == "index":
        from preprocess.index import IndexConfig
        from shared.stage import frames_for

        frames_for(IndexConfig(dataset=dataset, data_root=data, out=out), echo=echo)
    elif name.startswith("regions"):
        import preprocess.regions as regions

        class NoRun:
            def __init__(self, *a, **k): ...
            def __enter__(self): return self
            def __exit__(self, *exc): return False
            def map_unordered(self, *a, **k): raise _Stop

        regions.Executor = NoRun  # type: ignore[assignment, misc]
        try:
            regions.run_regions(_regions_cfg(dataset, data, out), echo=echo)
        except _Stop:
            assert name == "regions-plan", "the finished store had work left"
        else:
            assert name == "regions-done", "planning ran to the end without a frame task"
    else:
        import preprocess.shards as shards

        real = shards.run_tasks

        def stop_at_shards(fn, *a, **k):
            if fn is shards.write_shard:
                raise _Stop
            return real(fn, *a, **k)

        shards.run_tasks = stop_at_shards
        try:
            shards.run_shards(_shards_cfg(dataset, data, out), echo=echo)
        except _Stop:
            assert name == "shards-plan", "the finished shard set had work left"
        else:
            assert name == "shards-done"
    del click


def measure(name: str, dataset: str, data: Path, out: Path) -> dict[str, float]:
    code = (f"import sys, time, resource; sys.path.insert(0, {str(ROOT)!r}); import json; t0 = time.process_time(); "
            f"from bench.scale_index import step; step({name!r}, {dataset!r}, {str(data)!r}, {str(out)!r}); "
            "ru, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN); "
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so it would be the benchmark's own
            "hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]); "
            "print(json.dumps({'cpu': ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime, "
            "'peak_mb': hwm / 1024, 'worker_peak_mb': rc.ru_maxrss / 1024}))")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{name} {dataset} failed:\n{done.stderr[-3000:]}")
    return {"wall": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


# ---------------------------------------------------------------------------------------------
# finished outputs, made cheaply


def fill_region_store(dataset: str, data: Path, out: Path) -> None:
    """Every chunk of the store `regions` planned, written with 8x16 maps, and the pointer to it."""
    from preprocess.regions import run_regions
    from shared.region_store import RegionRecord, read_manifest, write_chunk, write_manifest
    from shared.stage import frames_for

    cfg = _regions_cfg(dataset, str(data), str(out))
    store = next((out / f"{dataset}" / "regions").glob("felzenszwalb-*"))
    manifest = read_manifest(store)
    frames = frames_for(cfg, echo=lambda *a, **k: None)
    regions = (np.arange(128, dtype=np.uint16).reshape(8, 16) // 32) + 1
    depth = np.full((8, 16), 10.0, np.float32)
    for i, s in enumerate(range(0, len(frames), cfg.chunk_size)):
        name = f"chunk_{i:05d}.h5"
        recs = [RegionRecord(f.id, depth, regions, {"image": f.image, "n_regions": 4})
                for f in frames[s:s + cfg.chunk_size]]
        manifest["chunks"][name] = {**write_chunk(store / name, recs), "skipped": []}
    write_manifest(store, manifest)
    run_regions(cfg, echo=lambda *a, **k: None)  # finds it complete: writes config and pointer


def fill_shards(dataset: str, data: Path, out: Path) -> None:
    """Every planned shard as a file of a few bytes with its true size and checksum."""
    import hashlib

    import preprocess.shards as shards

    real = shards.run_tasks

    def fake(fn, tasks, *a, **k):
        if fn is not shards.write_shard:
            yield from real(fn, tasks, *a, **k)
            return
        for t in tasks:
            out_dir, plan = Path(t[1]), t[2]
            data = plan.name.encode()
            (out_dir / plan.name).write_bytes(data)
            yield {"entry": {"name": plan.name, "epoch": plan.epoch, "first_group": plan.first_group,
                             "samples": len(plan.groups), "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}, "times": {}}

    shards.run_tasks = fake
    shards.run_shards(_shards_cfg(dataset, str(data), str(out)), echo=lambda *a, **k: None)
    shards.run_tasks = real


def run(ns: list[int], keep: Path | None) -> None:
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average at start: {' '.join(load)}; {os.cpu_count()} cores")
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    for n in ns:
        tmp = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=keep))
        try:
            t0 = time.perf_counter()
            inputs = {"cityscapes": make_tree(tmp, n), "video": make_video(tmp, n)}
            print(f"N={n}: inputs made in {time.perf_counter() - t0:.1f} s", flush=True)
            for dataset in DATASETS:
                out = tmp / f"out-{dataset}"
                for name in STEPS:
                    if name == "regions-done":
                        fill_region_store(dataset, inputs[dataset], out)
                    if name == "shards-done":
                        fill_shards(dataset, inputs[dataset], out)
                    r = rows[(dataset, name, n)] = measure(name, dataset, inputs[dataset], out)
                    prev = rows.get((dataset, name, n // 10))
                    growth = f"x{r['cpu'] / max(prev['cpu'], 1e-3):5.1f}" if prev else "      "
                    print(f"  {dataset:10s} {name:13s} N={n:>7d}  wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s  "
                          f"peak {r['peak_mb']:6.0f} MB (workers {r['worker_peak_mb']:4.0f})  cpu growth {growth}  load {open('/proc/loadavg').read().split()[0]}",
                          flush=True)
        finally:
            if keep is None:
                shutil.rmtree(tmp, ignore_errors=True)
    print("\n| dataset | step | " + " | ".join(f"N={n} cpu s / MB" for n in ns) + " | cpu growth per x10 |")
    print("|---|---|" + "---|" * len(ns) + "---|")
    for dataset in DATASETS:
        for name in STEPS:
            cells = [f"{rows[(dataset, name, n)]['cpu']:.2f} / {rows[(dataset, name, n)]['peak_mb']:.0f}" for n in ns]
            growth = [f"{rows[(dataset, name, b)]['cpu'] / max(rows[(dataset, name, a)]['cpu'], 1e-3):.1f}"
                      for a, b in zip(ns, ns[1:]) if b == 10 * a]
            print(f"| {dataset} | {name} | " + " | ".join(cells) + f" | {', '.join(growth) or '-'} |")
    print(f"load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="+", type=int, help="frame counts, e.g. 1000 10000 100000")
    p.add_argument("--keep", type=Path, default=None, help="make the inputs under this folder and keep them")
    a = p.parse_args()
    run(a.n, a.keep)


if __name__ == "__main__":
    main()
