"""Speed of copy-paste synthesis and shard encoding (docs/design.md#performance, issue 5's benchmark).

    .venv/bin/python bench/shards_speed.py [--sizes 384x768,384x1280] [--frames 8] [--groups 4] [--workers N]

Inputs: one street of the built-in synthetic city rendered at each size (exact depth), and its
coherent depth regions computed with the paper's grouping (shared.regions.grouping.depth_regions), so
the number and size of the pasted regions are realistic. Each group takes the M = 8 frames with the
paper's defaults (rounds e = [1, 2], 16 images); groups differ by seed.

Prints, per size:
  regions per frame, pastes and visible layers per group,
  synthesis images/s on one core, synthesis + encoding (JPEG q90 + PNG maps + meta.json) on one core,
  synthesis + encoding with all workers (joblib loky, one group per task) and its ratio to one core,
  encoded kB per synthesised image (what a shard costs on disk per image).
Reference points: the original code synthesised about 3 images/s per core online in its data loader;
the target here is >= 30 synthesised 384x768 images/s per core. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from preprocess.copy_paste import PasteParams, SourceFrame, synthesise  # noqa: E402
from shared.shard_schema import encode_group, group_key  # noqa: E402

_CACHE: dict[str, list[SourceFrame]] = {}


def render_frames(root: Path, size: tuple[int, int], n: int) -> list[SourceFrame]:
    """n frames of one synthetic street at `size` with their coherent depth regions."""
    from shared.regions.grouping import GroupingParams, depth_regions
    from preprocess.synth import generate
    from shared.datasets.synthetic import read_synthetic
    from shared.imageio import read_rgb

    city = root / f"city-{size[0]}x{size[1]}"
    generate(city, 1, n, size, progress=False)
    out = []
    for f in read_synthetic(city)[:n]:
        rgb = read_rgb(f.image)
        depth = np.load(f.depth).astype(np.float32)
        res = depth_regions(rgb, depth, f.K(size[1], size[0]), GroupingParams())
        out.append(SourceFrame(f.id, rgb, depth, res.regions.astype(np.uint16), f.cy * size[0]))
    return out


def save_frames(path: Path, frames: list[SourceFrame]) -> None:
    np.savez(path, ids=np.array([f.frame_id for f in frames]), image=np.stack([f.image for f in frames]),
             depth=np.stack([f.depth for f in frames]), regions=np.stack([f.regions for f in frames]),
             horizon=np.array([f.horizon for f in frames]))


def load_frames(path: str) -> list[SourceFrame]:
    if path not in _CACHE:  # once per worker process
        with np.load(path) as z:
            a = {k: z[k] for k in z.files}
        _CACHE[path] = [SourceFrame(str(a["ids"][i]), a["image"][i], a["depth"][i], a["regions"][i],
                                    float(a["horizon"][i])) for i in range(len(a["ids"]))]
    return _CACHE[path]


def synth_and_encode(path: str, seed: int) -> tuple[int, int, float]:
    """(images, encoded bytes, seconds) of one group."""
    frames = load_frames(path)
    t0 = time.perf_counter()
    syn = synthesise(frames, [seed, 0, 0], PasteParams())
    sample = encode_group(group_key(0, seed), syn.group)
    return syn.group.n_images, sum(len(v) for k, v in sample.items() if k != "__key__"), time.perf_counter() - t0


def bench_size(tmp: Path, size: tuple[int, int], n_frames: int, groups: int, workers: int) -> dict:
    from joblib import Parallel, delayed, parallel_config

    t0 = time.perf_counter()
    frames = render_frames(tmp, size, n_frames)
    prep = time.perf_counter() - t0
    path = tmp / f"frames-{size[0]}x{size[1]}.npz"
    save_frames(path, frames)
    params = PasteParams()
    synthesise(frames, [999, 0, 0], params)  # numba compile / cache load

    t_syn, t_enc, c_syn, c_enc, n_img, n_bytes, pastes, layers = 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0
    for g in range(groups):
        t1, c1 = time.perf_counter(), time.process_time()
        syn = synthesise(frames, [g, 0, 0], params)
        t2, c2 = time.perf_counter(), time.process_time()
        sample = encode_group(group_key(0, g), syn.group)
        t3, c3 = time.perf_counter(), time.process_time()
        t_syn += t2 - t1
        t_enc += t3 - t2
        c_syn += c2 - c1
        c_enc += c3 - c2
        n_img += syn.group.n_images
        n_bytes += sum(len(v) for k, v in sample.items() if k != "__key__")
        pastes += len(syn.pastes)
        layers += sum(len(m["layers"]) - 1 for m in syn.group.meta["images"])
    meta_bytes = len(sample["meta.json"])

    n_tasks = max(groups, 2 * workers)
    with parallel_config(backend="loky", inner_max_num_threads=1):
        par = Parallel(n_jobs=workers)
        par(delayed(synth_and_encode)(str(path), 1000 + w) for w in range(workers))  # start + warm the workers
        t4 = time.perf_counter()
        res = par(delayed(synth_and_encode)(str(path), 2000 + g) for g in range(n_tasks))
        wall = time.perf_counter() - t4
    return {
        "size": f"{size[0]}x{size[1]}", "prep_s": prep,
        "regions": float(np.mean([int(f.regions.max()) for f in frames])),
        "pastes": pastes / groups, "layers": layers / groups, "images": n_img / groups,
        "syn_ips": n_img / t_syn, "syn_enc_ips": n_img / (t_syn + t_enc),
        "syn_ips_cpu": n_img / c_syn, "syn_enc_ips_cpu": n_img / (c_syn + c_enc),
        "all_ips": sum(r[0] for r in res) / wall, "kb_per_image": n_bytes / n_img / 1e3,
        "meta_kb": meta_bytes / 1e3, "s_syn": t_syn / groups, "s_enc": t_enc / groups,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="384x768,384x1280")
    ap.add_argument("--frames", type=int, default=8, help="source frames (M of a group)")
    ap.add_argument("--groups", type=int, default=4, help="groups timed on one core")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            r = bench_size(Path(tmp), size, args.frames, args.groups, args.workers)  # type: ignore[arg-type]
            rows.append(r)
            print(f"{r['size']}: inputs (render + regions of {args.frames} frames) {r['prep_s']:.0f} s; "
                  f"{r['regions']:.0f} regions/frame, {r['pastes']:.0f} pastes and {r['layers']:.0f} visible "
                  f"layers per {r['images']:.0f}-image group; per group: synthesis {r['s_syn']:.2f} s, "
                  f"encoding {r['s_enc']:.2f} s (meta.json {r['meta_kb']:.0f} kB)", flush=True)
    print()
    print(f"{'size':>9} | {'synth img/s/core':>20} | {'+encode img/s/core':>20} | "
          f"{'all ' + str(args.workers) + ' workers img/s':>20} | {'ratio':>5} | {'vs 3 img/s (orig)':>17} | "
          f"{'vs 30 (target)':>14} | {'kB/image':>8}")
    for r in rows:
        print(f"{r['size']:>9} | {r['syn_ips']:8.1f} wall {r['syn_ips_cpu']:5.1f} cpu | "
              f"{r['syn_enc_ips']:8.1f} wall {r['syn_enc_ips_cpu']:5.1f} cpu | {r['all_ips']:20.1f} | "
              f"{r['all_ips'] / r['syn_enc_ips']:5.2f} | {r['syn_ips_cpu'] / 3:16.1f}x | "
              f"{r['syn_ips_cpu'] / 30:13.2f}x | {r['kb_per_image']:8.1f}")
    print("(one core = this process, by wall clock and by its CPU time, which a shared machine disturbs less;\n"
          " 'ratio' = all workers / one core (wall, with encoding); 'vs' columns use the CPU-time rate)")


if __name__ == "__main__":
    main()
