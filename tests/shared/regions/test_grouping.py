"""Known answers for the coherent-depth-region grouping (docs/design.md#region-grouping) on small
hand-made scenes."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from shared.regions.grouping import (GroupingParams, adjacency, boundary_weight_map, depth_regions, edge_terms,
                                 edge_weights, filter_regions, gt_regions, instance_components, iterative_infomap)

H, W = 128, 256
K = np.array([[0.6 * W, 0.0, W / 2], [0.0, 0.6 * W, H / 2], [0.0, 0.0, 1.0]])
PARAMS = GroupingParams(n_segments=3000, min_height=5, min_width=2)  # ~3x3 px superpixels


def rays() -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:H, 0:W] + 0.5
    return (u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1]


def paint(masks: list[tuple[np.ndarray, tuple[int, int, int]]], seed: int = 0) -> np.ndarray:
    """Flat colours per surface plus a little noise (SLIC needs something to chew on)."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((H, W, 3), dtype=np.float64)
    for m, c in masks:
        rgb[m] = c
    return np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)


def box_on_ground_scene(w_ground=True):
    """Level camera 1.5 m above the ground, a wall 20 m ahead, and a box face 8 m ahead, 1 m high,
    standing on the ground across the whole view (so only its bottom edge touches the ground, where
    the depths agree: nothing but the support term can cut there). Returns rgb, depth, box, ground."""
    xr, yr = rays()
    wall = np.full((H, W), 20.0)
    ground = np.where(yr < 0, 1.5 / np.maximum(-yr, 1e-9), np.inf)
    depth = np.minimum(wall, ground)
    cols = np.arange(W)[None, :].repeat(H, 0)
    box = (cols >= 0) & (yr * 8 >= -1.5) & (yr * 8 <= -0.5)
    depth = np.where(box, 8.0, depth)
    gmask = (~box) & (ground < wall)
    rgb = paint([(~box & ~gmask, (150, 110, 90)), (gmask, (110, 110, 110)), (box, (40, 60, 170))])
    return rgb, depth, box, gmask


def margin_ok(regions: np.ndarray, obj: np.ndarray, superpixels: np.ndarray, margin: int = 0,
              share: float = 0.5) -> tuple[bool, str]:
    """Every region made mostly of `obj` holds no pixel outside `obj` beyond the boundary margin:
    the superpixels that straddle the object's boundary (a region is a union of superpixels, so it
    cannot be cleaner than they are) plus `margin` pixels."""
    straddle = np.isin(superpixels, np.unique(superpixels[obj]))
    if margin:
        straddle |= ndimage.binary_dilation(obj, iterations=margin)
    for r in np.unique(regions[obj]):
        if r == 0:
            continue
        m = regions == r
        if (m & obj).sum() < share * m.sum():
            continue
        stray = m & ~obj & ~straddle
        if stray.any():
            return False, f"region {r}: {stray.sum()} pixels beyond the margin"
    return True, ""


def test_adjacency_matches_a_naive_scan():
    rng = np.random.default_rng(0)
    labels = ndimage.zoom(rng.integers(0, 30, size=(6, 8)), 4, order=0).astype(np.int32)
    edges = adjacency(labels)
    naive = set()
    for r in range(labels.shape[0]):
        for c in range(labels.shape[1]):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < labels.shape[0] and c + dc < labels.shape[1]:
                    a, b = labels[r, c], labels[r + dr, c + dc]
                    if a != b:
                        naive.add((min(a, b), max(a, b)))
    assert set(map(tuple, edges.tolist())) == naive
    assert (edges[:, 0] < edges[:, 1]).all()


def test_edge_terms_known_values():
    centres = np.array([[0.0, -1.0, 2.0], [0.0, -0.5, 2.0], [3.0, 1.0, 4.0]])
    normals = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.6, -0.8]])
    edges = np.array([[0, 1], [1, 2], [0, 2]])
    d_ocln, d_sup = edge_terms(centres, normals, edges)
    np.testing.assert_allclose(d_ocln, [0.5 / 4, np.linalg.norm([3, 1.5, 2]) / 6, np.linalg.norm([3, 2, 2]) / 6])
    # edge 0-1: S1 = node 0 (y=-1 lower), n_y1 = 1, n_y2 = 0 -> 1 * 1 * 1
    # edge 1-2: S1 = node 1 (y=-0.5), n_y1 = 0 -> 0
    # edge 0-2: S1 = node 0, n_y1 = 1, n_y2 = 0.6 -> 1 * 0.4 * 1
    np.testing.assert_allclose(d_sup, [1.0, 0.0, 0.4])
    # the order of an edge's ends does not matter
    d_o2, d_s2 = edge_terms(centres, normals, edges[:, ::-1])
    np.testing.assert_allclose(d_o2, d_ocln)
    np.testing.assert_allclose(d_s2, d_sup)
    # above the camera (y1 >= 0) there is no support
    up = centres.copy()
    up[:, 1] += 5
    assert (edge_terms(up, normals, edges)[1] == 0).all()
    w = edge_weights(np.array([0.0, 1 / 12]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(w, [1 / (1 + np.exp(4)), 0.5])


def test_iterative_infomap_two_cliques():
    # two 6-cliques joined by one strong edge: two final regions
    n = 12
    edges = [(i, j) for i in range(6) for j in range(i + 1, 6)] + [(i, j) for i in range(6, 12)
                                                                   for j in range(i + 1, 12)]
    w = [0.05] * len(edges)
    edges.append((5, 6))
    w.append(0.9)
    region, trace = iterative_infomap(n, np.array(edges), np.array(w))
    assert len(set(region[:6])) == 1 and len(set(region[6:])) == 1 and region[0] != region[6]
    assert (region >= 0).all() and trace.levels >= 1


def test_iterative_infomap_isolated_and_empty():
    region, trace = iterative_infomap(3, np.zeros((0, 2), dtype=np.int64), np.zeros(0))
    assert sorted(region.tolist()) == [0, 1, 2]
    region, trace = iterative_infomap(0, np.zeros((0, 2), dtype=np.int64), np.zeros(0))
    assert region.size == 0


def test_filter_regions_by_bounding_box():
    labels = np.full((20, 20), -1)
    labels[0:16, 0:6] = 3  # 16 x 6: kept
    labels[0:15, 10:20] = 7  # 15 high: dropped
    labels[16:20, :] = 1  # 4 high: dropped
    labels[0:18, 8] = 2  # 1 wide: dropped
    out = filter_regions(labels, 16, 6)
    assert out.dtype == np.uint16
    assert (out[0:16, 0:6] == 1).all() and out.max() == 1
    assert (out[labels != 3] == 0).all()


def test_instance_components_split_disconnected_parts_and_drop_void():
    inst = np.full((10, 10), 7, dtype=np.int32)  # road
    inst[0:3, 0:3] = 26001
    inst[6:9, 6:9] = 26001  # same id, second component
    inst[0:2, 8:10] = 3  # void labelId
    comp = instance_components(inst)
    assert (comp[0:2, 8:10] == -1).all()
    assert comp[0, 0] != comp[7, 7] and comp[0, 0] >= 0
    assert len(np.unique(comp[comp >= 0])) == 3
    assert (instance_components(inst, min_pixels=10)[0:3, 0:3] == -1).all()
    g = gt_regions(inst, 3, 3)
    assert g[0, 0] > 0 and g[7, 7] > 0 and g[0, 9] == 0


def test_one_plane_is_one_region():
    xr, yr = rays()
    depth = 10.0 + 2.0 * xr  # a slanted wall
    rgb = paint([(np.ones((H, W), bool), (120, 120, 120))])
    res = depth_regions(rgb, depth, K, PARAMS)
    assert res.regions.max() == 1 and (res.regions == 1).all()


def test_two_planes_split_along_the_depth_step():
    xr, _ = rays()
    depth = np.where(xr < 0, 5.0, 10.0)
    rgb = paint([(np.ones((H, W), bool), (120, 120, 120))])
    res = depth_regions(rgb, depth, K, PARAMS)
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    ok_l, why_l = margin_ok(res.regions, left, res.superpixels)
    ok_r, why_r = margin_ok(res.regions, ~left, res.superpixels)
    assert ok_l and ok_r, why_l + why_r
    # the bulk of each half is one region
    for half in (left, ~left):
        ids, counts = np.unique(res.regions[half], return_counts=True)
        assert counts.max() > 0.9 * half.sum() and ids[counts.argmax()] != 0


def test_box_on_ground_is_split_from_the_ground_by_the_support_term():
    rgb, depth, box, ground = box_on_ground_scene()
    res = depth_regions(rgb, depth, K, PARAMS)
    ok, why = margin_ok(res.regions, box, res.superpixels)
    assert ok, why
    ok, why = margin_ok(res.regions, ground, res.superpixels)
    assert ok, why
    # the occlusion term alone (no support) joins the box to the ground it stands on
    no_sup = depth_regions(rgb, depth, K, GroupingParams(**{**PARAMS.__dict__, "w_sup": 0.0}))
    assert not margin_ok(no_sup.regions, box, no_sup.superpixels)[0]


def test_regions_do_not_depend_on_the_depth_scale_and_are_deterministic():
    rgb, depth, _, _ = box_on_ground_scene()
    a = depth_regions(rgb, depth, K, PARAMS).regions
    for s in (0.01, 3.7, 250.0):
        b = depth_regions(rgb, depth * s, K, PARAMS).regions
        np.testing.assert_array_equal(a, b, err_msg=f"depth x {s}")
    np.testing.assert_array_equal(a, depth_regions(rgb, depth, K, PARAMS).regions)


def test_boundary_weight_map_marks_superpixel_edges():
    labels = np.zeros((4, 6), dtype=np.int32)
    labels[:, 3:] = 1
    labels[2:, :3] = 2
    edges = adjacency(labels)
    w = np.array([0.1, 0.5, 0.9])[: len(edges)]
    m = boundary_weight_map(labels, edges, w)
    lookup = {tuple(e): x for e, x in zip(edges.tolist(), w)}
    assert m[0, 2] == pytest.approx(lookup[(0, 1)])
    assert m[1, 0] == pytest.approx(lookup[(0, 2)])
    assert np.isnan(m[0, 0])


# The sky box sits at 100 m (the far end of a Monodepth2-style depth range) or out of view. With the
# scene's default 300 m sky the per-axis std normalisation (docs/design.md#region-grouping) is
# dominated by the sky, the support term shrinks with it, and the car joins the road it stands on:
# a property of the method (reported in the issue), not something to tune away here.
@pytest.mark.parametrize("scene_kw", [{"sky_distance": 100.0}, {"facade_height": 40.0}],
                         ids=["sky-at-100m", "no-sky"])
def test_car_in_front_of_facade_render(scene_kw):
    synth_scene = pytest.importorskip("preprocess.synth_scene")
    synth_render = pytest.importorskip("preprocess.synth_render")
    size = (H, W)
    Kc = synth_scene.pixel_K(size)
    out = synth_render.render(synth_scene.car_in_front_of_facade(**scene_kw), Kc, synth_scene.level_pose(), size)
    res = depth_regions(out["rgb"], out["depth"], Kc, PARAMS)
    car = out["label"] == 26
    assert car.sum() > 300
    # margin: the straddling superpixels plus ~2 superpixels (6 px) where car, road and facade meet
    ok, why = margin_ok(res.regions, car, res.superpixels, margin=6)
    assert ok, why
    in_car_regions = [r for r in np.unique(res.regions[car])
                      if r and (car & (res.regions == r)).sum() > 0.5 * (res.regions == r).sum()]
    assert (np.isin(res.regions, in_car_regions) & car).sum() > 0.8 * car.sum(), "most car pixels sit in car regions"


def test_a_level_that_does_not_shrink_finalises_the_rest(monkeypatch):
    import shared.regions.grouping as grouping

    # a path of 5 nodes with weak edges; InfoMap answering singletons would loop for ever
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    w = np.full(4, 0.05)
    monkeypatch.setattr(grouping, "infomap_communities", lambda m, *a, **k: np.arange(m))
    region, trace = grouping.iterative_infomap(5, edges, w)
    assert sorted(region.tolist()) == [0, 1, 2, 3, 4] and trace.guard_stops == 1 and trace.levels == 1


def test_merged_edges_carry_the_mean_of_the_original_edges(monkeypatch):
    import shared.regions.grouping as grouping

    # level 1 pairs (0,1) and (2,3) and leaves 4 alone; the next graph must join {0,1}-{2,3} by the
    # mean of the three original edges between them, (0.1 + 0.1 + 0.4) / 3 = 0.2 (not above T_e)
    edges = np.array([[0, 1], [2, 3], [0, 2], [1, 3], [1, 2], [3, 4]])
    w = np.array([0.01, 0.01, 0.1, 0.1, 0.4, 0.9])
    seen = []

    def fake(m, e, sim, preferred, seed, trials):
        seen.append((m, e.tolist(), np.round(1.0 / sim, 6).tolist(), preferred))
        return np.array([0, 0, 1, 1, 2]) if m == 5 else np.zeros(m, dtype=np.int64)

    monkeypatch.setattr(grouping, "infomap_communities", fake)
    region, trace = grouping.iterative_infomap(5, edges, w, t_e=0.2)
    assert seen[0][3] == 2 and seen[1][0] == 2
    assert seen[1][1] == [[0, 1]] and seen[1][2] == [pytest.approx(0.2)]
    assert region[0] == region[1] == region[2] == region[3] != region[4]
    assert trace.levels == 2 and trace.finalised_per_level == [1, 1]
