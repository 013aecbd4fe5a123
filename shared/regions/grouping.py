"""Coherent depth regions (docs/design.md#region-grouping): SLIC superpixels -> 4-connected region
adjacency graph -> boundary weights from an occlusion and a support term -> iterative InfoMap ->
region filter.

Also the two other proposal methods that feed the same region store: `felzenszwalb` (appearance
only, standing in for the paper's owt-ucm baseline) and `gt` (connected components of ground-truth
instances, the paper's upper bound).

Everything here is a pure function of its inputs: the same image, depth and parameters give the
same regions (InfoMap is seeded, the graph is built in a fixed order).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from shared.regions.slic import slic_labels
from shared import geometry
from shared.jit import njit

if TYPE_CHECKING:
    import infomap

MAX_REGION_ID = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class GroupingParams:
    """The method's constants (paper values by default)."""

    n_segments: int = 10000  # SLIC
    compactness: float = 10.0
    sigma: float = 1.0
    w_ocln: float = 48.0  # W = sigmoid(w_ocln D_ocln + w_sup D_sup + bias)
    w_sup: float = 200.0
    bias: float = -4.0
    t_e: float = 0.2  # a community whose every outgoing edge is above this is final
    min_height: int = 16  # region filter: bounding box at least this high ...
    min_width: int = 6  # ... and this wide (pixels at the working resolution)
    seed: int = 123  # InfoMap
    trials: int = 1
    max_levels: int = 200  # safety net only: every level must shrink the graph anyway


# ---------------------------------------------------------------------------------------------
# superpixels and the adjacency graph


def slic_superpixels(rgb: np.ndarray, n_segments: int, compactness: float, sigma: float) -> np.ndarray:
    """uint8 [H, W, 3] -> superpixel labels int32 [H, W], contiguous from 0.

    scikit-image's SLIC, through the numba core of `shared.regions.slic` (same labels, faster)."""
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        sp = slic_labels(rgb, n_segments, compactness, sigma)
    else:  # the fast path reproduces only the uint8 RGB case; anything else keeps skimage's own
        from skimage.segmentation import slic

        sp = slic(rgb, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0,
                  channel_axis=-1)
    return compact_labels(sp.astype(np.int32, copy=False))


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative labels to 0..n-1 (order kept) when some ids are unused."""
    n = int(labels.max()) + 1
    used = np.bincount(labels.ravel(), minlength=n) > 0
    if used.all():
        return labels
    remap = np.cumsum(used, dtype=np.int64) - 1
    return remap[labels].astype(np.int32)


def adjacency(labels: np.ndarray) -> np.ndarray:
    """4-connected adjacency of a label map by comparing it with itself shifted one pixel right and
    one pixel down: labels [H, W] int (0..n-1) -> edges int64 [E, 2], u < v, sorted, unique."""
    n = int(labels.max()) + 1
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()]).astype(np.int64)
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()]).astype(np.int64)
    differ = a != b
    a, b = a[differ], b[differ]
    keys = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return np.stack([keys // n, keys % n], axis=1)


def boundary_weight_map(labels: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 [H, W]: on each pixel whose right or lower neighbour is in another superpixel, the
    weight W of that edge (the larger of the two); NaN elsewhere. For the overlay PNGs."""
    h, w = labels.shape
    n = int(labels.max()) + 1
    keys = edges[:, 0] * n + edges[:, 1]
    out = np.full((h, w), np.nan, dtype=np.float32)
    for sl_a, sl_b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                       ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        a = labels[sl_a].astype(np.int64)
        b = labels[sl_b].astype(np.int64)
        k = np.minimum(a, b) * n + np.maximum(a, b)
        mask = a != b
        idx = np.searchsorted(keys, k[mask])
        view = out[sl_a]
        cur = view[mask]
        view[mask] = np.fmax(cur, weights[idx].astype(np.float32))
    return out


# ---------------------------------------------------------------------------------------------
# boundary weights


def edge_terms(centres: np.ndarray, normals: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """centres [n, 3] and normals [n, 3] (scale-normalised camera frame, Y up), edges [E, 2]
    -> D_ocln [E], D_sup [E].

    D_ocln = ||c1 - c2|| / (z1 + z2): a 3D gap between neighbours, relative to their distance.
    D_sup: S1 is the lower of the two (smaller Y); an upward-facing S1 (n_y1 > 0) that faces more
    upward than S2, below the camera (y1 < 0), is a supporting surface (ground under an object):
    D_sup = max(n_y1, 0) * max(n_y1 - n_y2, 0) * y1^2, and 0 when y1 >= 0.
    """
    c1, c2 = centres[edges[:, 0]], centres[edges[:, 1]]
    z_sum = np.maximum(c1[:, 2] + c2[:, 2], 1e-12)
    d_ocln = np.linalg.norm(c1 - c2, axis=1) / z_sum
    # compared in float32: two superpixels at the same height (fronto-parallel rows) must not swap
    # roles on 1e-16 rounding noise, which would make D_sup depend on the depth scale
    first_lower = c1[:, 1].astype(np.float32) <= c2[:, 1].astype(np.float32)
    y_low = np.where(first_lower, c1[:, 1], c2[:, 1])
    n_low = np.where(first_lower, normals[edges[:, 0], 1], normals[edges[:, 1], 1])
    n_high = np.where(first_lower, normals[edges[:, 1], 1], normals[edges[:, 0], 1])
    d_sup = np.maximum(n_low, 0.0) * np.maximum(n_low - n_high, 0.0) * y_low ** 2
    d_sup = np.where(y_low < 0, d_sup, 0.0)
    return d_ocln, d_sup


def edge_weights(d_ocln: np.ndarray, d_sup: np.ndarray, w_ocln: float = 48.0, w_sup: float = 200.0,
                 bias: float = -4.0) -> np.ndarray:
    """W = sigmoid(w_ocln D_ocln + w_sup D_sup + bias) [E]: boundary strength, high = separate."""
    x = w_ocln * d_ocln + w_sup * d_sup + bias
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# iterative InfoMap


def _first_seen_ids(values: np.ndarray) -> np.ndarray:
    """Relabel arbitrary ids to 0..k-1 in order of first appearance (deterministic numbering)."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def _module_ids(result: "infomap.Result", n_nodes: int) -> np.ndarray:
    """Top-level module of nodes 0..n-1 [n_nodes]. Result.modules() builds a Python snapshot of the
    whole tree (paths, flows) and costs ~0.1 s per 10k nodes; infomap 2.16's core hands the two
    columns we need directly. Falls back to the public accessor if that internal ever moves."""
    try:
        data = result._engine._core.get_node_data(1, False)
        ids, mods = np.asarray(data.node_id, dtype=np.int64), np.asarray(data.module_id, dtype=np.int64)
    except AttributeError:
        modules = result.modules()
        ids = np.fromiter(modules.keys(), dtype=np.int64, count=len(modules))
        mods = np.fromiter(modules.values(), dtype=np.int64, count=len(modules))
    comm = np.full(n_nodes, -1, dtype=np.int64)  # -1: a node without links, set by the caller
    comm[ids] = mods
    return comm


def infomap_communities(n_nodes: int, edges: np.ndarray, similarity: np.ndarray,
                        preferred_modules: int, seed: int, trials: int) -> np.ndarray:
    """Two-level InfoMap on an undirected weighted graph without teleportation:
    -> community of every node [n_nodes], numbered 0..k-1 in order of first appearance."""
    # InfoMap lumps link-less nodes into one module; a node with no neighbour is its own community
    degree = np.bincount(edges.ravel(), minlength=n_nodes)
    if len(edges) == 0:
        return np.arange(n_nodes, dtype=np.int64)
    import infomap  # here, not at the top: commands import this module for its constants

    opts = infomap.Options(two_level=True, silent=True, directed=False, teleportation_probability=0.0,
                           seed=int(seed), num_trials=int(trials),
                           preferred_number_of_modules=int(max(preferred_modules, 1)))
    im = infomap.Infomap(options=opts)
    # no add_nodes: every node here has a link (link-less ones are handled above), and the Python
    # loop of add_nodes costs as much as the rest of the bookkeeping
    im.add_links(np.column_stack([edges.astype(np.float64), similarity.astype(np.float64)]))  # C++ bulk path
    comm = _module_ids(im.run(), n_nodes)
    lonely = degree == 0
    comm[lonely] = comm.max() + 1 + np.arange(int(lonely.sum()))
    return _first_seen_ids(comm)


@dataclass
class InfomapTrace:
    levels: int = 0
    nodes_per_level: list[int] = field(default_factory=list)
    finalised_per_level: list[int] = field(default_factory=list)
    guard_stops: int = 0  # levels that did not shrink the graph (the rest was finalised as is)


def iterative_infomap(n_nodes: int, edges: np.ndarray, weights: np.ndarray, t_e: float = 0.2,
                      seed: int = 123, trials: int = 1, max_levels: int = 200
                      ) -> tuple[np.ndarray, InfomapTrace]:
    """The paper's Algorithm 1. edges [E, 2] (u < v), weights W [E] in (0, 1)
    -> region id of every node [n_nodes] (0..R-1), trace.

    Each level runs InfoMap on similarity 1/W asking for half as many modules as nodes. A community
    whose every outgoing edge has W > t_e (or that has none) is final and leaves the graph; the
    other communities become the nodes of the next level, joined by the mean W of the ORIGINAL
    (level-0) edges between them (sums and counts are carried, so a mean of means never skews it).
    A level that does not shrink the graph finalises every remaining node as it is; one node left
    is final.
    """
    trace = InfomapTrace()
    region = np.full(n_nodes, -1, dtype=np.int64)
    if n_nodes == 0:
        return region, trace
    node_of = np.arange(n_nodes, dtype=np.int64)  # original node -> current node, -1 once final
    e = edges.astype(np.int64)
    w_sum = weights.astype(np.float64).copy()
    w_cnt = np.ones(len(e), dtype=np.int64)
    m = n_nodes
    next_region = 0

    def finalise(final_ids_of_current: np.ndarray) -> None:
        """final_ids_of_current [m]: a new region index per current node, or -1 to keep it."""
        nonlocal next_region
        live = node_of >= 0
        assigned = np.full(n_nodes, -1, dtype=np.int64)
        assigned[live] = final_ids_of_current[node_of[live]]
        done = assigned >= 0
        region[done] = assigned[done] + next_region
        node_of[done] = -1
        next_region += int(final_ids_of_current.max()) + 1 if (final_ids_of_current >= 0).any() else 0

    while True:
        if m <= 1 or trace.levels >= max_levels:
            if trace.levels >= max_levels and m > 1:
                trace.guard_stops += 1
            finalise(np.arange(m, dtype=np.int64))
            break
        trace.levels += 1
        trace.nodes_per_level.append(m)
        mean_w = w_sum / w_cnt
        comm = infomap_communities(m, e, 1.0 / mean_w, m // 2, seed, trials)
        k = int(comm.max()) + 1
        cu, cv = comm[e[:, 0]], comm[e[:, 1]]
        cross = cu != cv
        weak = cross & (mean_w <= t_e)
        joined = np.zeros(k, dtype=bool)
        joined[cu[weak]] = True
        joined[cv[weak]] = True
        n_keep = int(joined.sum())
        if n_keep >= m:  # no shrink: InfoMap returned singletons that all stay connected
            trace.guard_stops += 1
            trace.finalised_per_level.append(m)
            finalise(np.arange(m, dtype=np.int64))
            break
        # final communities: numbered in community order
        final_rank = np.where(~joined, np.cumsum(~joined) - 1, -1)
        trace.finalised_per_level.append(int((~joined).sum()))
        finalise(final_rank[comm])
        if n_keep == 0:
            break
        # the next graph: surviving communities, edges between two survivors, original-edge means
        new_id = np.where(joined, np.cumsum(joined) - 1, -1)
        live = node_of >= 0
        node_of[live] = new_id[comm[node_of[live]]]
        keep = cross & joined[cu] & joined[cv]
        a, b = new_id[cu[keep]], new_id[cv[keep]]
        keys = np.minimum(a, b) * n_keep + np.maximum(a, b)
        uniq, inv = np.unique(keys, return_inverse=True)
        w_sum = np.bincount(inv, weights=w_sum[keep], minlength=len(uniq))
        w_cnt = np.bincount(inv, weights=w_cnt[keep], minlength=len(uniq)).astype(np.int64)
        e = np.stack([uniq // n_keep, uniq % n_keep], axis=1)
        m = n_keep
    return region, trace


# ---------------------------------------------------------------------------------------------
# region filter


@njit(cache=True, nogil=True)
def _bboxes(labels: np.ndarray, n: int):
    rmin = np.full(n, 1 << 30, dtype=np.int64)
    rmax = np.full(n, -1, dtype=np.int64)
    cmin = np.full(n, 1 << 30, dtype=np.int64)
    cmax = np.full(n, -1, dtype=np.int64)
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            s = labels[r, c]
            if s < 0:
                continue
            if r < rmin[s]:
                rmin[s] = r
            if r > rmax[s]:
                rmax[s] = r
            if c < cmin[s]:
                cmin[s] = c
            if c > cmax[s]:
                cmax[s] = c
    return rmin, rmax, cmin, cmax


def filter_regions(labels: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    """labels [H, W] int (>= 0 a region, < 0 none) -> uint16 [H, W]: regions whose bounding box is at
    least min_height x min_width pixels, renumbered 1..N in raster order of first appearance; 0 for
    smaller regions and unlabelled pixels."""
    labels = np.ascontiguousarray(labels.astype(np.int64, copy=False))
    out = np.zeros(labels.shape, dtype=np.uint16)
    if labels.size == 0 or labels.max() < 0:
        return out
    n = int(labels.max()) + 1
    rmin, rmax, cmin, cmax = _bboxes(labels, n)
    big = (rmax - rmin + 1 >= min_height) & (cmax - cmin + 1 >= min_width) & (rmax >= 0)
    flat = labels.ravel()
    valid = flat >= 0
    keep = np.zeros(flat.shape, dtype=bool)
    keep[valid] = big[flat[valid]]
    if not keep.any():
        return out
    new = _first_seen_ids(flat[keep]) + 1
    if new.max() > MAX_REGION_ID:
        raise ValueError(f"{int(new.max())} regions do not fit uint16 region ids")
    out.ravel()[keep] = new.astype(np.uint16)
    return out


# ---------------------------------------------------------------------------------------------
# the three proposal methods


@dataclass
class DepthRegions:
    regions: np.ndarray  # uint16 [H, W], 0 = none
    superpixels: np.ndarray  # int32 [H, W]
    edges: np.ndarray  # int64 [E, 2]
    weights: np.ndarray  # float64 [E]
    trace: InfomapTrace
    timings: dict[str, float]  # seconds per step: geometry, slic, graph, infomap, filter


def depth_regions(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray,
                  params: GroupingParams = GroupingParams(),
                  superpixels: np.ndarray | None = None) -> DepthRegions:
    """The paper's coherent depth regions for one frame.

    rgb uint8 [H, W, 3], depth [H, W] > 0 (any unit, any scale), K 3x3 pixel intrinsics at [H, W].
    `superpixels` skips SLIC when given (the benchmark and the report reuse one SLIC).
    """
    if rgb.shape[:2] != depth.shape:
        raise ValueError(f"image {rgb.shape[:2]} and depth {depth.shape} differ in size")
    t = {}
    t0 = time.perf_counter()
    pts = geometry.normalise_axes(geometry.backproject(depth, K))
    tangents = geometry.pixel_tangents(pts)
    t1 = time.perf_counter()
    sp = slic_superpixels(rgb, params.n_segments, params.compactness, params.sigma) \
        if superpixels is None else superpixels
    t2 = time.perf_counter()
    n = int(sp.max()) + 1
    centres, normals, _ = geometry.superpixel_stats(sp, pts, tangents, n)
    edges = adjacency(sp)
    d_ocln, d_sup = edge_terms(centres, normals, edges)
    w = edge_weights(d_ocln, d_sup, params.w_ocln, params.w_sup, params.bias)
    # InfoMap breaks near-ties by float comparisons, so a 1e-16 change (depth x 3.7 instead of x 1)
    # could change the partition; rounding W to float32 makes the regions exactly scale-free
    w = w.astype(np.float32).astype(np.float64)
    t3 = time.perf_counter()
    node_region, trace = iterative_infomap(n, edges, w, params.t_e, params.seed, params.trials,
                                           params.max_levels)
    t4 = time.perf_counter()
    regions = filter_regions(node_region[sp], params.min_height, params.min_width)
    t5 = time.perf_counter()
    t.update(geometry=t1 - t0, slic=t2 - t1, graph=t3 - t2, infomap=t4 - t3, filter=t5 - t4)
    return DepthRegions(regions, sp, edges, w, trace, t)


def felzenszwalb_regions(rgb: np.ndarray, scale: float, sigma: float, min_size: int,
                         min_height: int, min_width: int) -> np.ndarray:
    """Appearance-only proposals: scikit-image Felzenszwalb, then the same region filter."""
    from skimage.segmentation import felzenszwalb

    seg = felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
    return filter_regions(seg, min_height, min_width)


def instance_components(instance_ids: np.ndarray, min_pixels: int = 0) -> np.ndarray:
    """Cityscapes instanceIds [H, W] (labelId*1000+k for things, labelId for stuff) -> int64 [H, W]:
    the 4-connected components of each id, numbered 0..N-1 in raster order; -1 on void labelIds
    (0-6) and on components smaller than min_pixels."""
    from skimage.measure import label as connected_label

    inst = instance_ids.astype(np.int64)
    label_ids = np.where(inst >= 1000, inst // 1000, inst)
    void = label_ids < 7
    comp = connected_label(np.where(void, 0, inst + 1), background=0, connectivity=1).astype(np.int64)
    comp -= 1  # background 0 -> -1, components 0..N-1
    if min_pixels > 0 and comp.max() >= 0:
        sizes = np.bincount(comp[comp >= 0], minlength=int(comp.max()) + 1)
        comp[(comp >= 0) & (sizes[np.maximum(comp, 0)] < min_pixels)] = -1
    if comp.max() < 0:
        return comp
    out = np.full(comp.shape, -1, dtype=np.int64)
    valid = comp >= 0
    out[valid] = _first_seen_ids(comp[valid])
    return out


def gt_regions(instance_ids: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    """The upper bound: connected components of the ground-truth instances, same region filter."""
    return filter_regions(instance_components(instance_ids), min_height, min_width)
