"""`depth-rgb` region proposals: the paper's coherent depth regions made to hold up when depth is weak.

The paper's grouping (shared.regions.grouping) trusts depth completely. With the relative disparity
of an off-the-shelf network (blurred occlusion edges, grainy surfaces, a range compressed to about
4x) its support term cuts the near road into fragments (noisy normals) and its occlusion term merges
sky, buildings and trees (blurred steps). Measured on superpixel edges (issue 17): with exact depth the
point-to-plane gap between neighbours separates same-object from different-object edges cleanly;
with weak depth it, the normals and the occlusion term barely do, while colour does in both cases.
So this method keeps the paper's steps and weighs each cue by how far the depth can be trusted:

  1. SLIC superpixels (superpixel_factor times the paper's number) and the 4-connected region adjacency
     graph (as the paper)
  2. camera points normalised per axis, per-superpixel centre and normal (as the paper)
  3. per-superpixel plane-fit residual -> normal confidence c = exp(-residual / tau_res);
     the frame's depth precision q = the median superpixel's c
  4. edge terms: the paper's D_ocln and D_sup, plus D_app (CIE76 colour difference of the two
     superpixels' mean Lab) and D_plane (how far each centre lies off the other's plane)
  5. W = sigmoid(q w_ocln D_ocln + c12 w_sup D_sup + w_app (1 - c12 exp(-D_plane / tau_plane)) D_app + bias):
     occlusion as far as the frame's depth is precise, support as far as both normals are, and colour
     everywhere except across a boundary that precise depth shows to be one plane (a facade and its
     windows, a road and its markings)
  6. graph merging on the superpixel graph, chosen by the frame's depth precision:
     - precise depth (q >= precise_q): W is the paper's, calibrated in absolute terms, so regions merge
       as the paper's iterative InfoMap joins communities, by the mean W of the original edges between
       them: the pair with the lowest mean W merges, until none is at most merge_k / (merge_k +
       mean_k_half). A single weak link cannot pull two objects together, as it can in a greedy
       single-link merge; InfoMap on the same W was measured too and lost to the mean-W merge
     - weak depth: W is mostly colour, whose level varies over a frame, so Felzenszwalb and
       Huttenlocher's adaptive criterion (an edge joins two regions when its W is at most either
       region's largest internal W plus merge_k / size); regions under max(min_pixels, small_per_k x
       merge_k) then join their lowest-W neighbour. Iterative InfoMap and the mean-W merge lost to it
       on the real Cityscapes samples
     regions under min_pixels join their lowest-W neighbour in both
  7. regions whose bounding box the paper's filter would drop join their lowest-W neighbour (so their
     pixels stay covered), then the paper's region filter

With exact depth q and c are about 1 and W is the paper's W plus colour across non-planar boundaries;
with weak depth they are about 0 and W is mostly colour. merge_k is the knob for the region count
in both merges (larger = fewer, larger regions).
Everything is a pure function of the inputs; the same image, depth and parameters give the same regions,
and the depth's scale does not matter (as in the paper's method).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np

from shared import geometry
from shared.jit import njit
from shared.regions.grouping import (GroupingParams, _bboxes, _first_seen_ids, adjacency, edge_terms,
                                     filter_regions, slic_superpixels)


@dataclass(frozen=True)
class DepthRgbParams:
    """The constants `depth-rgb` adds to the paper's (GroupingParams supplies SLIC, w_ocln, w_sup, bias and
    the region filter). Sizes are in pixels of a frame `reference_height` rows high."""

    # weight of the colour difference (CIE76 delta E of the mean Lab of two superpixels) in W: a delta E
    # of 20 (a clear colour edge) adds 4 to the logit, as much as the paper's bias takes away
    w_app: float = 0.2
    # plane-fit residual (sqrt of smallest / middle eigenvalue of a superpixel's point spread) at which a
    # normal is trusted 1/e: exact depth gives about 0 inside surfaces, the synthetic city's degraded
    # depth about 0.10 and the shipped Cityscapes disparity about 0.40 (medians, on depth-rgb's superpixels at
    # 384x768; 0.13 and 0.43 on the paper's larger ones)
    tau_res: float = 0.05
    # point-to-plane gap between neighbours (relative to their depth) at which they stop counting as one
    # plane: exact depth puts 90 % of same-object edges below 0.004 and half the others above 0.039
    tau_plane: float = 0.005
    # the region-count knob of both merges (with weak depth Felzenszwalb and Huttenlocher's k, in W x
    # reference pixels; with precise depth it sets the mean-W merge's stop, see mean_k_half): larger gives
    # fewer, larger regions; 10 gives about 90 regions on a 384x768 Cityscapes frame with the shipped
    # disparity (the paper's method: about 130) and about 120 on the synthetic city with exact depth
    merge_k: float = 10.0
    # regions smaller than this join their lowest-W neighbour: the paper's filter (16 x 6 px boxes) would
    # drop them anyway, so they go to a neighbour instead of leaving a hole (at about 260 regions per
    # Cityscapes frame, 50 (Felzenszwalb's min_size) left 17 % of the pixels uncovered, 96 left 11 % and
    # scored 2.9 GT-query mIoU higher)
    min_pixels: int = 96
    # with weak depth, regions under small_per_k x merge_k reference pixels join their lowest-W neighbour
    # too: Felzenszwalb and Huttenlocher's merge lets such a region take any boundary up to 1 / small_per_k
    # above its own (a W of 1/8 is a delta E of about 10, a visible colour edge), so it has not shown a
    # boundary the merge respects; at the coarse end the merge then stops sooner. It matters only for
    # merge_k above min_pixels / small_per_k (12): on the tuning data 8 raised purity at 25-60 regions
    # per frame by 5-13 points on the Cityscapes samples (4: by about 6), GT-query mIoU by -0.5 to +2
    small_per_k: float = 8.0
    # frames whose depth precision q is at least this are grouped by the mean-W merge, the others by
    # Felzenszwalb and Huttenlocher's: q is about 1 with exact depth, 0.15 with the synthetic city's degraded
    # depth (0.08 on the paper's superpixels) and 0 with the shipped Cityscapes disparity, so any value
    # between splits them alike
    precise_q: float = 0.5
    # with precise depth the mean-W merge stops at W = merge_k / (merge_k + mean_k_half): one knob for both
    # merges, and 100 makes the same merge_k give about the same region count either way on the tuning
    # city (75, 99, 114 regions at merge_k 100, 50, 20 with the greedy merge; 71, 85, 118 with the mean-W one)
    mean_k_half: float = 100.0
    # sizes above are in pixels at this height, so a smaller working size gives the same partition
    reference_height: int = 384
    # SLIC makes this many times the paper's n_segments: the paper's 10k at 384x768 are about 5 px apart, too
    # coarse for a pole or a sign, which then never gets a superpixel of its own colour; with 2 the Cityscapes
    # samples' GT-query mIoU rose by 1-3 points at 90-160 regions per frame (10k: the paper's superpixels).
    # Never more than one per min_superpixel_pixels pixels: smaller ones hold too few points for a plane fit
    superpixel_factor: float = 2.0
    # the floor of superpixel size in pixels (the demo presets' too: at most H x W / 9 superpixels)
    min_superpixel_pixels: int = 9
    # regions the paper's filter would drop (bounding box under min_height x min_width) join their lowest-W
    # neighbour first, as regions under min_pixels do: a pole 3 px wide can only be proposed inside a region
    # wide enough to pass the filter, and its pixels stay covered. On the Cityscapes samples this raised
    # GT-query mIoU at 170-260 regions per frame by about 2 points, purity fell by about 1
    absorb_filtered: bool = True


# ---------------------------------------------------------------------------------------------
# step 3: how far the depth can be trusted


@njit(cache=True, nogil=True)
def _centred_moments(labels: np.ndarray, points: np.ndarray, n: int):
    # two passes (mean, then products about it): raw sums of squares lose the spread of a distant
    # superpixel to cancellation
    counts = np.zeros(n, dtype=np.int64)
    mean = np.zeros((n, 3), dtype=np.float64)
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            s = labels[r, c]
            counts[s] += 1
            for i in range(3):
                mean[s, i] += points[r, c, i]
    for s in range(n):
        for i in range(3):
            mean[s, i] /= max(counts[s], 1)
    cov = np.zeros((n, 3, 3), dtype=np.float64)
    for r in range(h):
        for c in range(w):
            s = labels[r, c]
            for i in range(3):
                di = points[r, c, i] - mean[s, i]
                for j in range(3):
                    cov[s, i, j] += di * (points[r, c, j] - mean[s, j])
    for s in range(n):
        for i in range(3):
            for j in range(3):
                cov[s, i, j] /= max(counts[s], 1)
    return counts, cov


def plane_residuals(labels: np.ndarray, points: np.ndarray, n: int) -> np.ndarray:
    """labels [H, W] (0..n-1), points [H, W, 3] -> residual [n] = sqrt(l0 / l1), l0 <= l1 <= l2 the
    eigenvalues of each superpixel's point covariance: 0 for points on a plane, larger the thicker the
    spread across the plane relative to along it. Independent of the points' scale. A superpixel whose
    points do not span a plane (fewer than 3 pixels, or on a line) gets inf: no normal to trust."""
    counts, cov = _centred_moments(np.ascontiguousarray(labels), np.ascontiguousarray(points, dtype=np.float64), n)
    ev = np.linalg.eigvalsh(cov)  # ascending
    l0, l1 = np.maximum(ev[:, 0], 0.0), ev[:, 1]
    spans = (counts >= 3) & (l1 > 1e-12 * np.maximum(ev[:, 2], 1e-300)) & np.isfinite(ev).all(axis=1)
    return np.where(spans, np.sqrt(l0 / np.where(spans, l1, 1.0)), np.inf)


def normal_confidence(residuals: np.ndarray, tau_res: float) -> np.ndarray:
    """[n] residuals -> [n] confidence exp(-residual / tau_res) in [0, 1] (0 for inf)."""
    return np.exp(-residuals / tau_res)


def depth_precision(confidence: np.ndarray) -> float:
    """The frame's depth precision q: the median superpixel's normal confidence (exact depth ~1: most
    superpixels lie inside a surface; blurred, grainy depth ~0)."""
    return float(np.median(confidence)) if confidence.size else 0.0


# ---------------------------------------------------------------------------------------------
# step 4: the new edge terms


def lab_means(rgb: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """uint8 [H, W, 3] and superpixels [H, W] -> mean CIE Lab of each superpixel [n, 3]."""
    from skimage.color import rgb2lab  # here: `--help` of the commands stays light

    lab = rgb2lab(rgb).reshape(-1, 3)
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
    return np.stack([np.bincount(flat, weights=lab[:, k], minlength=n) for k in range(3)], axis=1) / counts[:, None]


def appearance_term(lab: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """D_app [E]: CIE76 delta E between the mean Lab of the two superpixels of each edge."""
    return np.linalg.norm(lab[edges[:, 0]] - lab[edges[:, 1]], axis=1)


def plane_gap(centres: np.ndarray, normals: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """D_plane [E] = (|n1 . (c2 - c1)| + |n2 . (c1 - c2)|) / (z1 + z2): how far each superpixel's centre lies
    off its neighbour's plane, relative to their distance (0 for two pieces of one plane)."""
    c1, c2 = centres[edges[:, 0]], centres[edges[:, 1]]
    n1, n2 = normals[edges[:, 0]], normals[edges[:, 1]]
    d = c2 - c1
    z_sum = np.maximum(c1[:, 2] + c2[:, 2], 1e-12)
    return (np.abs((n1 * d).sum(1)) + np.abs((n2 * d).sum(1))) / z_sum


# ---------------------------------------------------------------------------------------------
# step 5: the boundary weight


def depth_rgb_weights(d_ocln: np.ndarray, d_sup: np.ndarray, d_app: np.ndarray, d_plane: np.ndarray,
                      c_edge: np.ndarray, q: float, params: GroupingParams, app: DepthRgbParams) -> np.ndarray:
    """W [E] = sigmoid(q w_ocln D_ocln + c12 w_sup D_sup + w_app (1 - c12 exp(-D_plane / tau_plane)) D_app + bias).

    c_edge [E] is the smaller normal confidence of an edge's two superpixels (a support or plane
    judgement needs both normals); q the frame's depth precision. With q = c = 0 only colour is left,
    with q = c = 1 and D_app = 0 this is the paper's W."""
    same_plane = c_edge * np.exp(-d_plane / app.tau_plane)
    x = (q * params.w_ocln * d_ocln + c_edge * params.w_sup * d_sup + app.w_app * (1.0 - same_plane) * d_app
         + params.bias)
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# step 6: graph merging


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]  # path halving
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _merge(n: int, edges: np.ndarray, weights: np.ndarray, order: np.ndarray, sizes: np.ndarray, k: float,
           min_size: float) -> np.ndarray:
    parent = np.arange(n)
    size = sizes.copy()
    internal = np.zeros(n)  # largest W inside each region (edges come in ascending order)
    for i in order:
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        if a == b:
            continue
        w = weights[i]
        if w <= min(internal[a] + k / size[a], internal[b] + k / size[b]):
            parent[b] = a
            size[a] += size[b]
            internal[a] = w
    for i in order:  # small regions join along their lowest-W edge
        a = _find(parent, edges[i, 0])
        b = _find(parent, edges[i, 1])
        if a != b and (size[a] < min_size or size[b] < min_size):
            parent[b] = a
            size[a] += size[b]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


def merge_regions(n_nodes: int, edges: np.ndarray, weights: np.ndarray, sizes: np.ndarray, k: float,
                  min_size: float) -> np.ndarray:
    """Felzenszwalb and Huttenlocher's merge on a weighted graph: edges [E, 2], weights W [E] (low = alike),
    node sizes [n] -> region of every node [n], numbered 0..R-1 in node order.

    Edges are taken by ascending W (ties in edge order); an edge joins its two regions when W is at most
    min(Int(A) + k / |A|, Int(B) + k / |B|), Int the largest W already inside a region. Then every region
    smaller than min_size joins the neighbour across its lowest-W edge."""
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    if len(edges) == 0:
        return np.arange(n_nodes, dtype=np.int64)
    order = np.argsort(weights, kind="stable")
    roots = _merge(int(n_nodes), np.ascontiguousarray(edges, dtype=np.int64), weights.astype(np.float64),
                   order.astype(np.int64), sizes.astype(np.float64), float(k), float(min_size))
    return _first_seen_ids(roots)


def mean_w_merge(n_nodes: int, edges: np.ndarray, weights: np.ndarray, sizes: np.ndarray, max_w: float,
                 min_size: float) -> np.ndarray:
    """Agglomerative merge by the mean W of the original edges between two regions: edges [E, 2] (u < v),
    weights W [E], node sizes [n] -> region of every node [n], numbered 0..R-1 in node order.

    The two adjacent regions with the lowest mean W merge (ties: the lower region ids), and the means of the
    merged region's boundaries are updated (sums and counts carried), until the lowest mean exceeds max_w.
    Then every region smaller than min_size, smallest first, joins the neighbour of lowest mean W (ties: the
    lower id), until none is left that has a neighbour."""
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    # neighbour -> [sum of W, number of original edges]; one list shared by both ends of a boundary
    nb: list[dict[int, list[float]]] = [{} for _ in range(n_nodes)]
    for (u, v), w in zip(np.asarray(edges, dtype=np.int64).tolist(), np.asarray(weights, dtype=np.float64).tolist()):
        nb[u][v] = nb[v][u] = [w, 1.0]
    size = np.asarray(sizes, dtype=np.float64).copy()
    parent = np.arange(n_nodes)
    version = [0] * n_nodes  # a heap entry is stale once either end has merged since it was pushed

    def absorb(a: int, b: int) -> None:  # region b into region a
        for x, link in nb[b].items():
            if x == a:
                continue
            del nb[x][b]
            if x in nb[a]:
                nb[a][x][0] += link[0]
                nb[a][x][1] += link[1]
            else:
                nb[a][x] = nb[x][a] = link
        del nb[a][b]
        nb[b] = {}
        parent[b] = a
        size[a] += size[b]
        version[a] += 1
        version[b] += 1

    heap = [(s / c, u, v, 0, 0) for u, v, s, c in ((u, v, *nb[u][v]) for u, v in np.asarray(edges).tolist())]
    heapq.heapify(heap)
    while heap:
        mean, u, v, vu, vv = heapq.heappop(heap)
        if vu != version[u] or vv != version[v] or parent[u] != u or parent[v] != v:
            continue
        if mean > max_w:
            break
        a, b = (u, v) if len(nb[u]) >= len(nb[v]) else (v, u)  # the smaller neighbourhood moves
        absorb(a, b)
        for x, (s, c) in nb[a].items():
            lo, hi = min(a, x), max(a, x)
            heapq.heappush(heap, (s / c, lo, hi, version[lo], version[hi]))
    small = [(size[r], r) for r in range(n_nodes) if parent[r] == r and size[r] < min_size]
    heapq.heapify(small)
    while small:  # smallest first; a region still too small after taking one in goes back on the heap
        s, r = heapq.heappop(small)
        if parent[r] != r or s != size[r] or not nb[r]:
            continue
        x = min(nb[r], key=lambda y: (nb[r][y][0] / nb[r][y][1], y))
        absorb(x, r)
        if size[x] < min_size:
            heapq.heappush(small, (size[x], x))
    roots = parent.copy()
    for i in range(n_nodes):
        while roots[roots[i]] != roots[i]:
            roots[i] = roots[roots[i]]
    return _first_seen_ids(roots)


def group_superpixels(n_nodes: int, edges: np.ndarray, weights: np.ndarray, sizes: np.ndarray, q: float,
                      app: DepthRgbParams) -> np.ndarray:
    """Step 6: the merge for a frame of depth precision q (sizes in reference pixels) -> region of every
    node [n]: the mean-W merge with precise depth, Felzenszwalb and Huttenlocher's merge otherwise."""
    if q >= app.precise_q:
        return mean_w_merge(n_nodes, edges, weights, sizes, app.merge_k / (app.merge_k + app.mean_k_half),
                            app.min_pixels)
    return merge_regions(n_nodes, edges, weights, sizes, app.merge_k, max(app.min_pixels, app.small_per_k * app.merge_k))


@njit(cache=True, nogil=True)
def _box_passes(box: np.ndarray, r: int, min_height: int, min_width: int) -> bool:
    return box[r, 1] - box[r, 0] + 1 >= min_height and box[r, 3] - box[r, 2] + 1 >= min_width


@njit(cache=True, nogil=True)
def _absorb_boxes(node_region: np.ndarray, edges: np.ndarray, order: np.ndarray, box: np.ndarray, min_height: int,
                  min_width: int) -> np.ndarray:
    r_n = box.shape[0]
    parent = np.arange(r_n)
    box = box.copy()
    for i in order:
        a = _find(parent, node_region[edges[i, 0]])
        b = _find(parent, node_region[edges[i, 1]])
        if a == b:
            continue
        if _box_passes(box, a, min_height, min_width) and _box_passes(box, b, min_height, min_width):
            continue  # both pass the filter: nothing to absorb
        parent[b] = a
        box[a, 0] = min(box[a, 0], box[b, 0])
        box[a, 1] = max(box[a, 1], box[b, 1])
        box[a, 2] = min(box[a, 2], box[b, 2])
        box[a, 3] = max(box[a, 3], box[b, 3])
    out = np.empty(node_region.shape[0], dtype=np.int64)
    for i in range(node_region.shape[0]):
        out[i] = _find(parent, node_region[i])
    return out


def absorb_filtered_regions(superpixels: np.ndarray, node_region: np.ndarray, edges: np.ndarray,
                            weights: np.ndarray, min_height: int, min_width: int) -> np.ndarray:
    """Regions the filter would drop join their neighbours: superpixels [H, W] (0..n-1), node_region [n]
    (0..R-1), edges [E, 2] of the superpixel graph with W [E] -> region of every node [n], numbered 0..R'-1 in
    node order.

    Edges are taken by ascending W (ties in edge order); an edge between two regions joins them when either
    one's bounding box is under min_height x min_width. A region with no neighbour stays as it is (the filter
    then drops it)."""
    node_region = np.asarray(node_region, dtype=np.int64)
    if len(node_region) == 0 or len(edges) == 0:
        return node_region
    box = np.stack(_bboxes(np.ascontiguousarray(node_region[superpixels]), int(node_region.max()) + 1), axis=1)
    order = np.argsort(weights, kind="stable").astype(np.int64)
    roots = _absorb_boxes(node_region, np.ascontiguousarray(edges, dtype=np.int64), order, box, int(min_height),
                          int(min_width))
    return _first_seen_ids(roots)


# ---------------------------------------------------------------------------------------------
# the method


@dataclass
class DepthRgbRegions:
    regions: np.ndarray  # uint16 [H, W], 0 = none
    superpixels: np.ndarray  # int32 [H, W]
    edges: np.ndarray  # int64 [E, 2]
    weights: np.ndarray  # float64 [E]
    depth_precision: float  # q
    timings: dict[str, float]  # seconds per step: geometry, slic, graph, merge, filter


def depth_rgb_superpixels(rgb: np.ndarray, params: GroupingParams, app: DepthRgbParams) -> np.ndarray:
    """Step 1: SLIC with superpixel_factor x the paper's n_segments, at most one per min_superpixel_pixels
    pixels (never fewer than n_segments) -> int32 [H, W] (0..n-1)."""
    h, w = rgb.shape[:2]
    n = max(params.n_segments, min(round(params.n_segments * app.superpixel_factor), h * w // app.min_superpixel_pixels))
    return slic_superpixels(rgb, max(1, n), params.compactness, params.sigma)


def depth_rgb_regions(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, params: GroupingParams = GroupingParams(),
                      app: DepthRgbParams = DepthRgbParams(), superpixels: np.ndarray | None = None) -> DepthRgbRegions:
    """`depth-rgb` regions of one frame: rgb uint8 [H, W, 3], depth [H, W] > 0 (any unit, any scale), K 3x3
    pixel intrinsics at [H, W]. `superpixels` skips SLIC when given."""
    if rgb.shape[:2] != depth.shape:
        raise ValueError(f"image {rgb.shape[:2]} and depth {depth.shape} differ in size")
    t0 = time.perf_counter()
    pts = geometry.normalise_axes(geometry.backproject(depth, K))
    tangents = geometry.pixel_tangents(pts)
    t1 = time.perf_counter()
    sp = depth_rgb_superpixels(rgb, params, app) if superpixels is None else superpixels
    t2 = time.perf_counter()
    n = int(sp.max()) + 1
    centres, normals, counts = geometry.superpixel_stats(sp, pts, tangents, n)
    conf = normal_confidence(plane_residuals(sp, pts, n), app.tau_res)
    q = depth_precision(conf)
    edges = adjacency(sp)
    d_ocln, d_sup = edge_terms(centres, normals, edges)
    d_app = appearance_term(lab_means(rgb, sp, n), edges)
    d_plane = plane_gap(centres, normals, edges)
    c_edge = np.minimum(conf[edges[:, 0]], conf[edges[:, 1]])
    w = depth_rgb_weights(d_ocln, d_sup, d_app, d_plane, c_edge, q, params, app)
    # as in the paper's method: float32 W, so 1e-16 rounding from the depth's scale cannot reorder ties
    w = w.astype(np.float32).astype(np.float64)
    t3 = time.perf_counter()
    area = (app.reference_height / rgb.shape[0]) ** 2  # one pixel here, in reference pixels
    node_region = group_superpixels(n, edges, w, counts * area, q, app)
    if app.absorb_filtered:
        node_region = absorb_filtered_regions(sp, node_region, edges, w, params.min_height, params.min_width)
    t4 = time.perf_counter()
    regions = filter_regions(node_region[sp], params.min_height, params.min_width)
    t5 = time.perf_counter()
    timings = dict(geometry=t1 - t0, slic=t2 - t1, graph=t3 - t2, merge=t4 - t3, filter=t5 - t4)
    return DepthRgbRegions(regions, sp, edges, w, q, timings)
