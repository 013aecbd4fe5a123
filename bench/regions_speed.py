"""Speed of the coherent-depth-region grouping, per step, against a naive implementation of the same
algorithm in the same run (docs/design.md#performance).

    .venv/bin/python bench/regions_speed.py [--frames 3] [--sizes 384x768,384x1280] [--workers-max N]

Frames: the built-in synthetic city rendered at each size (exact depth, street scenes), so both
implementations see realistic images and depth. For every frame:

  fast   numba SLIC core (shared.regions.slic), shared.geometry numba kernels, shifted-label adjacency,
         bincount statistics, vectorised iterative InfoMap (shared.regions.grouping.depth_regions)
  naive  the way the original code did it: scikit-image's slic, numpy meshgrid back-projection
         and np.gradient, scikit-image RAG construction, np.add.at statistics, per-superpixel and
         per-edge Python loops for normals and weights, a networkx graph handed to InfoMap and its
         {node: module} dict, per-edge Python loops to merge communities, and the region map painted
         one superpixel mask at a time (the original did that on every level; here only once, in
         the 'filter' row). Same maths, same InfoMap problem with the
         nodes and links in the same order: the regions must be identical, and the script checks it.

Each runs its own SLIC (the labels must be the same, and the script checks that too).
Then throughput of the fast path over all frames with 1 worker and with all workers (joblib loky).
Prints seconds per frame per step and the ratios. Timings on a shared machine are noisy.
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

import infomap  # noqa: E402
import numpy as np  # noqa: E402
from skimage import graph as skgraph  # noqa: E402
from skimage.segmentation import slic  # noqa: E402

from shared.regions.grouping import (GroupingParams, compact_labels, depth_regions, filter_regions,  # noqa: E402
                                 slic_superpixels)


# ---------------------------------------------------------------------------------------------
# the naive implementation


def naive_regions(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, sp: np.ndarray, p: GroupingParams):
    t = {}
    t0 = time.perf_counter()
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * depth, -(v - K[1, 2]) / K[1, 1] * depth, depth.astype(np.float64)])
    pts = pts / np.maximum(pts.reshape(3, -1).std(axis=1), 1e-12)[:, None, None]
    g_row, g_col = np.gradient(pts, axis=(1, 2))
    tan = np.stack([g_col / pts[2], g_row / pts[2]])  # [2, 3, H, W]
    t1 = time.perf_counter()
    n = int(sp.max()) + 1
    rag = skgraph.RAG(sp)
    edges = np.array(sorted((min(a, b), max(a, b)) for a, b in rag.edges), dtype=np.int64)
    flat = sp.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    centres = np.zeros((n, 3))
    np.add.at(centres, flat, pts.reshape(3, -1).T)
    centres /= counts[:, None]
    mean_t = np.zeros((n, 2, 3))
    np.add.at(mean_t, flat, tan.reshape(2, 3, -1).transpose(2, 0, 1))
    mean_t /= counts[:, None, None]
    normals = np.zeros((n, 3))
    for s in range(n):  # per-superpixel loop
        c = np.cross(mean_t[s, 0], mean_t[s, 1])
        normals[s] = c / max(np.linalg.norm(c), 1e-12)
    weights = np.zeros(len(edges))
    for i, (a, b) in enumerate(edges):  # per-edge loop
        ca, cb = centres[a], centres[b]
        d_ocln = np.linalg.norm(ca - cb) / max(ca[2] + cb[2], 1e-12)
        lo, hi = (a, b) if np.float32(ca[1]) <= np.float32(cb[1]) else (b, a)
        y = centres[lo, 1]
        d_sup = max(normals[lo, 1], 0) * max(normals[lo, 1] - normals[hi, 1], 0) * y * y if y < 0 else 0.0
        weights[i] = 1 / (1 + np.exp(-(p.w_ocln * d_ocln + p.w_sup * d_sup + p.bias)))
    weights = weights.astype(np.float32).astype(np.float64)
    t2 = time.perf_counter()
    node_region = naive_iterative_infomap(n, edges, weights, p)
    t3 = time.perf_counter()
    labels = np.full(sp.shape, -1, dtype=np.int64)
    for s in range(n):  # the original painted label maps one superpixel mask at a time
        labels[sp == s] = node_region[s]
    regions = filter_regions(labels, p.min_height, p.min_width)
    t4 = time.perf_counter()
    t.update(geometry=t1 - t0, graph=t2 - t1, infomap=t3 - t2, filter=t4 - t3)
    return regions, t


def naive_communities(m: int, e: np.ndarray, sim: np.ndarray, preferred: int, p: GroupingParams) -> np.ndarray:
    """InfoMap the way the original code fed it: a networkx graph, then the {node: module} dict."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(m))
    for (a, b), s in zip(e.tolist(), sim.tolist()):
        g.add_edge(a, b, weight=s)
    opts = infomap.Options(two_level=True, silent=True, directed=False, teleportation_probability=0.0,
                           seed=p.seed, num_trials=p.trials, preferred_number_of_modules=max(preferred, 1))
    im = infomap.Infomap(options=opts)
    im.add_networkx_graph(g)
    modules = im.run().modules()
    comm = np.array([modules[i] for i in range(m)], dtype=np.int64)
    degree = np.bincount(e.ravel(), minlength=m)
    comm[degree == 0] = comm.max() + 1 + np.arange(int((degree == 0).sum()))
    _, first, inv = np.unique(comm, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inv]


def naive_iterative_infomap(n: int, edges: np.ndarray, weights: np.ndarray, p: GroupingParams) -> np.ndarray:
    """Algorithm 1 with dictionaries and Python loops over edges (same InfoMap calls as the fast one)."""
    region = np.full(n, -1, dtype=np.int64)
    members = {i: [i] for i in range(n)}  # current node -> original nodes
    links = {(int(a), int(b)): [float(w), 1] for (a, b), w in zip(edges, weights)}  # (u, v) -> [sum, count]
    next_region, m, levels = 0, n, 0
    while True:
        if m <= 1 or levels >= p.max_levels:
            for node in range(m):
                region[members[node]] = next_region
                next_region += 1
            break
        levels += 1
        e = np.array(list(links.keys()), dtype=np.int64).reshape(-1, 2)
        sim = np.array([1.0 / (s / c) for s, c in links.values()])
        comm = naive_communities(m, e, sim, m // 2, p)
        k = int(comm.max()) + 1
        joined = [False] * k
        for (a, b), (s, c) in links.items():
            if comm[a] != comm[b] and s / c <= p.t_e:
                joined[comm[a]] = joined[comm[b]] = True
        n_keep = sum(joined)
        if n_keep >= m:
            for node in range(m):
                region[members[node]] = next_region
                next_region += 1
            break
        final_rank, new_id, r, q = {}, {}, 0, 0
        for c_ in range(k):
            if joined[c_]:
                new_id[c_] = q
                q += 1
            else:
                final_rank[c_] = r
                r += 1
        new_members: dict[int, list[int]] = {i: [] for i in range(n_keep)}
        for node in range(m):
            c_ = comm[node]
            if c_ in final_rank:
                region[members[node]] = next_region + final_rank[c_]
            else:
                new_members[new_id[c_]].extend(members[node])
        next_region += r
        if n_keep == 0:
            break
        new_links: dict[tuple[int, int], list] = {}
        for (a, b), (s, c) in links.items():
            ca, cb = comm[a], comm[b]
            if ca != cb and joined[ca] and joined[cb]:
                key = (min(new_id[ca], new_id[cb]), max(new_id[ca], new_id[cb]))
                acc = new_links.setdefault(key, [0.0, 0])
                acc[0] += s
                acc[1] += c
        links = dict(sorted(new_links.items()))
        members = new_members
        m = n_keep
    return region


# ---------------------------------------------------------------------------------------------


def frames_at(size: tuple[int, int], n: int, root: Path):
    from preprocess.synth import generate
    from shared.datasets.synthetic import read_synthetic
    from shared.imageio import read_rgb

    city = root / f"city-{size[0]}x{size[1]}"
    generate(city, 1, n, size, seed=0, progress=False)
    out = []
    for f in read_synthetic(city)[:n]:
        out.append((read_rgb(f.image), np.load(f.depth), f.K(size[1], size[0])))
    return out


_SEARCH_S = [0.0]  # seconds spent inside Infomap.run (the C++ search) since the last reset
_infomap_run = infomap.Infomap.run


def _timed_run(self, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _infomap_run(self, *args, **kwargs)
    finally:
        _SEARCH_S[0] += time.perf_counter() - t0


infomap.Infomap.run = _timed_run


def _fast_frame(rgb, depth, K, p):
    return depth_regions(rgb, depth, K, p).timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--sizes", default="384x768,384x1280")
    ap.add_argument("--workers-max", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    p = GroupingParams()
    print(f"infomap {infomap.__version__}, {os.cpu_count()} CPUs, paper constants (n_segments {p.n_segments})")
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes.split(","):
            size = tuple(int(v) for v in text.split("x"))
            frames = frames_at(size, args.frames, Path(tmp))
            depth_regions(*frames[0], GroupingParams(n_segments=200))  # numba compile / cache load
            fast_t, naive_t, same, search_t = [], [], [], []
            for rgb, depth, K in frames:
                t0 = time.perf_counter()
                sp = slic_superpixels(rgb, p.n_segments, p.compactness, p.sigma)
                t_slic = time.perf_counter() - t0
                _SEARCH_S[0] = 0.0
                res = depth_regions(rgb, depth, K, p, superpixels=sp)
                search_t.append(_SEARCH_S[0])
                res.timings["slic"] = t_slic
                fast_t.append(res.timings)
                t0 = time.perf_counter()
                sp_naive = compact_labels(slic(rgb, n_segments=p.n_segments, compactness=p.compactness,
                                               sigma=p.sigma, start_label=0, channel_axis=-1).astype(np.int32))
                t_slic_naive = time.perf_counter() - t0
                reg, nt = naive_regions(rgb, depth, K, sp_naive, p)
                nt["slic"] = t_slic_naive
                naive_t.append(nt)
                same.append(bool(np.array_equal(sp_naive, sp) and np.array_equal(reg, res.regions)))
                levels = res.trace.levels
            steps = ["geometry", "slic", "graph", "infomap", "filter"]
            print(f"\n== {size[0]}x{size[1]}: {len(frames)} frames, ~{int(res.superpixels.max()) + 1} superpixels, "
                  f"{len(res.edges)} edges, {levels} InfoMap levels, {int(res.regions.max())} regions "
                  f"(last frame); naive == fast superpixels and regions: {all(same)}")
            print(f"{'step':<10}{'fast s/frame':>14}{'naive s/frame':>15}{'naive/fast':>12}")
            tot_f = tot_n = 0.0
            for s in steps:
                f = float(np.mean([t[s] for t in fast_t]))
                nv = float(np.mean([t[s] for t in naive_t]))
                tot_f += f
                tot_n += nv
                print(f"{s:<10}{f:>14.3f}{nv:>15.3f}{nv / max(f, 1e-9):>11.1f}x")
            sl = float(np.mean([t['slic'] for t in fast_t]))
            sl_n = float(np.mean([t['slic'] for t in naive_t]))
            print(f"{'total':<10}{tot_f:>14.3f}{tot_n:>15.3f}{tot_n / tot_f:>11.1f}x")
            print(f"{'no SLIC':<10}{tot_f - sl:>14.3f}{tot_n - sl_n:>15.3f}"
                  f"{(tot_n - sl_n) / max(tot_f - sl, 1e-9):>11.1f}x")

            search = float(np.mean(search_t))
            print(f"of which InfoMap's own C++ search (Infomap.run, the same problems in both paths): {search:.3f} "
                  f"s/frame: a floor for any implementation that keeps the paper's partition, which caps "
                  f"naive/fast at {tot_n / (search + sl):.1f}x with this SLIC")

            from joblib import Parallel, delayed, parallel_config
            for nw in sorted({1, args.workers_max}):
                with parallel_config(backend="loky", inner_max_num_threads=1):
                    par = Parallel(n_jobs=nw)
                    par(delayed(_fast_frame)(*frames[0], GroupingParams(n_segments=200)) for _ in range(nw))  # warm
                    t0 = time.perf_counter()
                    par(delayed(_fast_frame)(rgb, d, K, p) for rgb, d, K in frames * max(1, nw))
                    el = time.perf_counter() - t0
                nfr = len(frames) * max(1, nw)
                print(f"throughput, {nw} worker(s): {nfr} frames in {el:.2f} s = {el / nfr:.3f} s/frame wall, "
                      f"{el * nw / nfr:.3f} s/frame per core")


if __name__ == "__main__":
    main()
