"""Known answers for `depth-rgb` proposals: each step by hand, then small scenes with exact and weak depth."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from shared.regions.depth_rgb import (DepthRgbParams, absorb_filtered_regions, appearance_term, depth_precision,
                                      depth_rgb_regions, depth_rgb_superpixels, depth_rgb_weights, group_superpixels, lab_means, mean_w_merge, merge_regions,
                                      normal_confidence, plane_gap, plane_residuals)
from shared.regions.grouping import GroupingParams, adjacency, depth_regions, edge_weights
from tests.shared.regions.test_grouping import H, K, PARAMS, W, box_on_ground_scene, margin_ok, paint, rays

APP = DepthRgbParams(merge_k=1000.0)  # few, large regions: the small scenes are 1/9 of a 384x768 frame


def bulk_regions(regions: np.ndarray, mask: np.ndarray, share: float = 0.9) -> int:
    """The region that holds at least `share` of `mask`'s pixels (0 if none does)."""
    ids, counts = np.unique(regions[mask], return_counts=True)
    return int(ids[counts.argmax()]) if counts.max() >= share * mask.sum() else 0


def smooth_noise(seed: int, strength: float, px: float) -> np.ndarray:
    """exp(strength * n), n a Gaussian-smoothed unit-variance field [H, W]: the grain of a weak depth map."""
    f = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((H, W)), px)
    return np.exp(strength * f / f.std())


# ---------------------------------------------------------------------------------------------
# the steps


def test_plane_residuals_zero_on_a_plane_known_on_a_slab_inf_without_a_plane():
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:, 3:] = 1
    labels[0, 0] = 2  # one pixel: no plane
    r, c = np.mgrid[0:6, 0:6].astype(np.float64)
    pts = np.stack([c, r, 2.0 + 0.5 * c - 0.25 * r], axis=-1)  # a tilted plane
    # superpixel 1 alternates +-e along z: a slab; its across-plane variance is about e^2 (times a factor
    # below 1 for the tilt), far smaller than the in-plane spread
    pts[:, 3:, 2] += np.where((r[:, 3:] + c[:, 3:]) % 2 == 0, 0.1, -0.1)
    res = plane_residuals(labels, pts, 3)
    assert res[0] == pytest.approx(0.0, abs=1e-6)  # (rounding leaves about 1e-8)
    assert 0.02 < res[1] < 0.2
    assert res[2] == np.inf
    # scale free: the residual is a ratio
    np.testing.assert_allclose(plane_residuals(labels, 7.5 * pts, 3)[:2], res[:2], rtol=1e-9, atol=1e-6)
    conf = normal_confidence(res, 0.05)
    assert conf[0] == pytest.approx(1.0) and conf[2] == 0.0 and 0 < conf[1] < 1
    assert depth_precision(np.array([0.0, 0.2, 0.9])) == pytest.approx(0.2)


def test_appearance_term_is_the_lab_distance_of_the_means():
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, 2:4] = 255  # black | white | black
    labels = np.repeat(np.array([[0, 0, 1, 1, 2, 2]]), 4, axis=0)
    lab = lab_means(rgb, labels, 3)
    np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1], [100, 0, 0], atol=1e-2)
    d = appearance_term(lab, np.array([[0, 1], [0, 2]]))
    np.testing.assert_allclose(d, [100.0, 0.0], atol=1e-2)


def test_plane_gap_zero_for_one_plane_known_for_a_step():
    normals = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])  # both face the camera
    same = np.array([[0.0, 0.0, 2.0], [1.0, 0.5, 2.0]])  # two pieces of the wall z = 2
    assert plane_gap(same, normals, np.array([[0, 1]]))[0] == pytest.approx(0.0)
    step = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 3.0]])  # walls at z = 2 and z = 3: gap 1 each way
    assert plane_gap(step, normals, np.array([[0, 1]]))[0] == pytest.approx(2.0 / 5.0)


def test_weights_reduce_to_the_papers_and_to_colour_alone():
    p = GroupingParams()
    d_o, d_s = np.array([0.05, 0.2, 0.0]), np.array([0.0, 0.01, 0.3])
    zero, one = np.zeros(3), np.ones(3)
    d_app = np.array([0.0, 30.0, 10.0])
    # precise depth (q = c = 1) and no colour difference: the paper's W
    np.testing.assert_allclose(depth_rgb_weights(d_o, d_s, zero, one, one, 1.0, p, DepthRgbParams()),
                               edge_weights(d_o, d_s, p.w_ocln, p.w_sup, p.bias))
    # depth not trusted at all (q = c = 0): colour alone
    np.testing.assert_allclose(depth_rgb_weights(d_o, d_s, d_app, one, zero, 0.0, p, DepthRgbParams()),
                               1 / (1 + np.exp(-(0.2 * d_app - 4))))
    # precise depth showing one plane (D_plane = 0): the colour difference does not count
    np.testing.assert_allclose(depth_rgb_weights(zero, zero, d_app, zero, one, 1.0, p, DepthRgbParams()),
                               1 / (1 + np.exp(4)) * one)
    # ... and it counts again across a boundary that is not one plane
    w = depth_rgb_weights(zero, zero, d_app, np.full(3, 1.0), one, 1.0, p, DepthRgbParams())
    assert w[1] == pytest.approx(1 / (1 + np.exp(-(0.2 * 30 * (1 - np.exp(-200)) - 4))))


def test_merge_known_partitions():
    # a path 0-1-2-3 with a strong boundary in the middle, unit sizes
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    w = np.array([0.1, 0.9, 0.1])
    sizes = np.ones(4)
    # k = 0.5: 0.1 <= 0 + 0.5 joins the pairs; 0.9 > 0.1 + 0.5 / 2 keeps them apart
    assert merge_regions(4, edges, w, sizes, k=0.5, min_size=0).tolist() == [0, 0, 1, 1]
    # k = 2: 0.9 <= 0.1 + 2 / 2: everything joins
    assert merge_regions(4, edges, w, sizes, k=2.0, min_size=0).tolist() == [0, 0, 0, 0]
    # k = 0: nothing joins; min_size 2 then pairs each node along its lowest-W edge
    assert merge_regions(4, edges, w, sizes, k=0.0, min_size=0).tolist() == [0, 1, 2, 3]
    assert merge_regions(4, edges, w, sizes, k=0.0, min_size=2).tolist() == [0, 0, 1, 1]
    # large regions resist: the same W joins two small nodes but not two big ones
    big = np.full(4, 100.0)
    assert merge_regions(4, edges, np.full(3, 0.3), big, k=2.0, min_size=0).tolist() == [0, 1, 2, 3]
    assert merge_regions(3, np.zeros((0, 2), dtype=np.int64), np.zeros(0), np.ones(3), 1.0, 0).tolist() == [0, 1, 2]


def test_mean_w_merge_known_partitions():
    # a triangle: 0-1 alike (0.1); 2 touches 0 weakly (0.15) but 1 strongly (0.9)
    edges = np.array([[0, 1], [0, 2], [1, 2]])
    w = np.array([0.1, 0.15, 0.9])
    ones = np.ones(3)
    # the mean W of {0, 1} to 2 is (0.15 + 0.9) / 2 = 0.525: above 0.3, so 2 stays apart ...
    assert mean_w_merge(3, edges, w, ones, max_w=0.3, min_size=0).tolist() == [0, 0, 1]
    # ... where the greedy single-link merge takes the 0.15 edge (0.15 <= min(0.1 + 0.3 / 2, 0 + 0.3 / 1))
    assert merge_regions(3, edges, w, ones, k=0.3, min_size=0).tolist() == [0, 0, 0]
    assert mean_w_merge(3, edges, w, ones, max_w=0.525, min_size=0).tolist() == [0, 0, 0]
    assert mean_w_merge(3, edges, w, ones, max_w=0.05, min_size=0).tolist() == [0, 1, 2]
    # the mean, not the lowest or the highest edge: 0-1 merge first (0.1), then {0, 1} - 2 is (0.2 + 0.3) / 2
    w2 = np.array([0.1, 0.2, 0.3])
    assert mean_w_merge(3, edges, w2, ones, max_w=0.24, min_size=0).tolist() == [0, 0, 1]
    assert mean_w_merge(3, edges, w2, ones, max_w=0.26, min_size=0).tolist() == [0, 0, 0]
    # the means carry over several merges: a path 0-1-2-3, then 3 touches 0 (W 1.0)
    e4 = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    w4 = np.array([0.1, 0.2, 0.3, 1.0])
    # {0, 1, 2} - 3 has edges 0.3 and 1.0: mean 0.65
    assert mean_w_merge(4, e4, w4, np.ones(4), max_w=0.6, min_size=0).tolist() == [0, 0, 0, 1]
    assert mean_w_merge(4, e4, w4, np.ones(4), max_w=0.65, min_size=0).tolist() == [0, 0, 0, 0]
    # small regions join their lowest-mean neighbour, again while still too small: 0 (size 1) joins 1 (0.8 <
    # 0.9), {0, 1} (size 2) is still under 3 and joins 2 (its only neighbour)
    e3 = np.array([[0, 1], [1, 2]])
    sizes = np.array([1.0, 1.0, 5.0])
    assert mean_w_merge(3, e3, np.array([0.8, 0.9]), sizes, max_w=0.1, min_size=2).tolist() == [0, 0, 1]
    assert mean_w_merge(3, e3, np.array([0.8, 0.9]), sizes, max_w=0.1, min_size=3).tolist() == [0, 0, 0]
    # no edges, no nodes
    assert mean_w_merge(3, np.zeros((0, 2), dtype=np.int64), np.zeros(0), ones, 0.5, 10).tolist() == [0, 1, 2]
    assert mean_w_merge(0, np.zeros((0, 2), dtype=np.int64), np.zeros(0), np.zeros(0), 0.5, 0).tolist() == []


def test_mean_w_merge_is_independent_of_node_order():
    # the same graph with its nodes renumbered gives the same partition (renumbered)
    rng = np.random.default_rng(3)
    n = 40
    edges = np.array([(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.15])
    w = np.round(rng.random(len(edges)), 3)
    a = mean_w_merge(n, edges, w, np.ones(n), max_w=0.3, min_size=0)
    perm = rng.permutation(n)
    pe = np.sort(perm[edges], axis=1)
    b = mean_w_merge(n, pe, w, np.ones(n), max_w=0.3, min_size=0)
    same = a[:, None] == a[None, :]
    np.testing.assert_array_equal(same, b[perm][:, None] == b[perm][None, :])
    assert 1 < a.max() + 1 < n  # the case is not trivial


def test_group_superpixels_follows_the_depth_precision():
    edges = np.array([[0, 1], [0, 2], [1, 2]])
    w = np.array([0.1, 0.15, 0.9])
    # merge_k 0.3 with mean_k_half 0.7: the mean-W merge stops at 0.3 / (0.3 + 0.7) = 0.3
    app = DepthRgbParams(merge_k=0.3, mean_k_half=0.7, min_pixels=0, small_per_k=0.0, precise_q=0.5)
    assert group_superpixels(3, edges, w, np.ones(3), 0.9, app).tolist() == [0, 0, 1]  # precise: mean W
    assert group_superpixels(3, edges, w, np.ones(3), 0.1, app).tolist() == [0, 0, 0]  # weak: greedy
    # weak depth, merge_k 1 on regions of 10+ pixels: no edge joins (0.5 > 0 + 1 / 10); a region under
    # small_per_k x merge_k then joins its lowest-W neighbour, again while still under it
    path = np.array([[0, 1], [1, 2]])
    sizes = np.array([10.0, 25.0, 40.0])
    strong = np.array([0.5, 0.9])

    def weak(small_per_k: float) -> list[int]:
        app = DepthRgbParams(merge_k=1.0, min_pixels=0, small_per_k=small_per_k)
        return group_superpixels(3, path, strong, sizes, 0.0, app).tolist()

    assert weak(5.0) == [0, 1, 2]
    assert weak(20.0) == [0, 0, 1]  # 10 < 20 joins 25; 35 and 40 stay
    assert weak(38.0) == [0, 0, 0]  # 35 < 38 joins 40 too
    # ... and with precise depth small_per_k plays no part (the mean-W merge stops at 1 / 101)
    precise = DepthRgbParams(merge_k=1.0, min_pixels=0, small_per_k=38.0)
    assert group_superpixels(3, path, strong, sizes, 1.0, precise).tolist() == [0, 1, 2]


def test_absorb_filtered_regions_known_partition():
    # superpixels: columns of a 20 x 14 map, 0 | 1 | 2 (one column wide) | 3; the regions are {0, 1}, {2}, {3}
    sp = np.zeros((20, 14), np.int64)
    sp[:, 3:6], sp[:, 6], sp[:, 7:] = 1, 2, 3
    node_region = np.array([0, 0, 1, 2])
    edges = adjacency(sp)  # (0,1) (1,2) (2,3)
    # the thin region's edge to the right is the weaker boundary: it joins the right region
    out = absorb_filtered_regions(sp, node_region, edges, np.array([0.1, 0.6, 0.3]), 16, 6)
    np.testing.assert_array_equal(out, [0, 0, 1, 1])
    # ... and the left one when that edge is weaker
    out = absorb_filtered_regions(sp, node_region, edges, np.array([0.1, 0.3, 0.6]), 16, 6)
    np.testing.assert_array_equal(out, [0, 0, 0, 1])
    # regions that pass the filter are never joined, whatever their W
    out = absorb_filtered_regions(sp, node_region, edges, np.array([0.0, 0.9, 0.9]), 16, 1)
    np.testing.assert_array_equal(out, [0, 0, 1, 2])
    # joins go on until the merged box passes: four regions 2 px wide, lowest W first
    sp2 = np.repeat(np.arange(4)[None, :], 20, axis=0).repeat(2, axis=1)
    out = absorb_filtered_regions(sp2, np.arange(4), adjacency(sp2), np.array([0.1, 0.2, 0.3]), 16, 4)
    np.testing.assert_array_equal(out, [0, 0, 0, 0])  # {2} is still too small at W 0.2, {3} at 0.3
    out = absorb_filtered_regions(sp2, np.arange(4), adjacency(sp2), np.array([0.1, 0.3, 0.2]), 16, 4)
    np.testing.assert_array_equal(out, [0, 0, 1, 1])  # {0,1} and {2,3} are 4 wide: W 0.3 joins nothing
    # a region with no neighbour stays, and the filter then drops it
    lone = np.zeros((4, 4), np.int64)
    np.testing.assert_array_equal(absorb_filtered_regions(lone, np.array([0]), adjacency(lone), np.zeros(0), 16, 6), [0])


def test_absorbed_regions_leave_no_hole_where_the_filter_would_drop_them():
    # a dark dash 3 px tall on a light slanted wall: its own region, too short for the filter (min height 5)
    rgb, depth, _ = two_colour_wall()
    rgb[:] = (200, 200, 190)
    pole = np.zeros((H, W), bool)
    pole[H // 2: H // 2 + 3, W // 2: W // 2 + 12] = True
    rgb[pole] = (30, 30, 30)
    kept = depth_rgb_regions(rgb, depth, K, PARAMS, DepthRgbParams(merge_k=1.0))
    dropped = depth_rgb_regions(rgb, depth, K, PARAMS, DepthRgbParams(merge_k=1.0, absorb_filtered=False))
    assert (kept.regions[pole] > 0).all(), "the dash is covered by a region that passes the filter"
    assert (kept.regions > 0).all()
    assert (dropped.regions[pole] == 0).mean() > 0.5, "without the absorption the filter drops the dash"


def test_superpixel_factor_sets_the_number_of_superpixels():
    rgb, _, _ = two_colour_wall()
    params = GroupingParams(n_segments=200)
    n = [int(depth_rgb_superpixels(rgb, params, DepthRgbParams(superpixel_factor=f)).max()) + 1 for f in (1.0, 2.0)]
    assert 1.5 * n[0] < n[1] < 2.5 * n[0], n
    # never smaller than min_superpixel_pixels on average: H x W / 9 = 3640 here, not 2 x 3000
    n = int(depth_rgb_superpixels(rgb, GroupingParams(n_segments=3000), DepthRgbParams()).max()) + 1
    assert 0.7 * H * W / 9 < n <= H * W / 9, n


# ---------------------------------------------------------------------------------------------
# scenes


def test_two_planes_of_one_colour_split_along_the_depth_step():
    xr, _ = rays()
    depth = np.where(xr < 0, 5.0, 10.0)
    rgb = paint([(np.ones((H, W), bool), (120, 120, 120))])
    res = depth_rgb_regions(rgb, depth, K, PARAMS, APP)
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    a, b = bulk_regions(res.regions, left), bulk_regions(res.regions, ~left)
    assert a and b and a != b
    assert res.depth_precision > 0.9  # exact depth: the occlusion term is fully on
    # without the depth step, the same grey image is one region
    flat = depth_rgb_regions(rgb, slanted_wall(), K, PARAMS, APP)
    assert bulk_regions(flat.regions, np.ones((H, W), bool), share=0.95)


def slanted_wall() -> np.ndarray:
    """Depth of a plane 6 m ahead on the optical axis, turned away to the right (1 / z is linear in the
    ray for a plane; a fronto-parallel wall has no depth spread, which the per-axis normalisation cannot
    scale)."""
    xr, _ = rays()
    return 6.0 / (1.0 - 0.5 * xr)


def two_colour_wall() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A slanted wall, left half brick red, right half blue."""
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    rgb = paint([(left, (170, 60, 40)), (~left, (40, 60, 170))])
    return rgb, slanted_wall(), left


def test_one_plane_of_two_colours_splits_when_depth_is_weak_and_stays_whole_when_exact():
    rgb, depth, left = two_colour_wall()
    # weak depth: blurred, grainy (smooth 8 % multiplicative noise): colour decides
    weak = ndimage.gaussian_filter(depth, 2.0) * smooth_noise(1, 0.08, 4.0)
    res = depth_rgb_regions(rgb, weak, K, PARAMS, APP)
    assert res.depth_precision < 0.1
    a, b = bulk_regions(res.regions, left), bulk_regions(res.regions, ~left)
    assert a and b and a != b
    # exact depth says the two colours lie on one plane: a facade and its paint, one region
    exact = depth_rgb_regions(rgb, depth, K, PARAMS, APP)
    assert exact.depth_precision > 0.9
    whole = np.ones((H, W), bool)
    assert bulk_regions(exact.regions, whole, share=0.95)
    # the paper's method sees one plane either way
    assert bulk_regions(depth_regions(rgb, depth, K, PARAMS).regions, whole, share=0.95)


def test_weak_depth_does_not_fragment_a_flat_road():
    xr, yr = rays()
    ground = 1.5 / np.maximum(-yr, 1e-9)
    road = yr < -0.05  # the ground below, a grey wall above at 30 m
    depth = np.where(road, np.minimum(ground, 30.0), 30.0)
    rgb = paint([(road, (90, 90, 90)), (~road, (180, 170, 120))])
    # compressed, blurred and grainy like an off-the-shelf network's disparity
    disp = 1.0 / depth
    disp = 1 + 3 * (disp - disp.min()) / (disp.max() - disp.min())
    weak = 1.0 / (ndimage.gaussian_filter(disp, 2.0) * smooth_noise(2, 0.08, 4.0))
    res = depth_rgb_regions(rgb, weak, K, PARAMS, APP)
    r = bulk_regions(res.regions, road, share=0.95)
    assert r, "the road is one region"
    # the paper's method on the same weak depth cuts the road into many pieces (the failure this fixes)
    paper = depth_regions(rgb, weak, K, PARAMS).regions
    assert len(np.unique(paper[road])) > 10 and not bulk_regions(paper, road, share=0.95)


def test_box_on_ground_is_its_own_region_with_exact_depth():
    rgb, depth, box, ground = box_on_ground_scene()
    res = depth_rgb_regions(rgb, depth, K, PARAMS, APP)
    for obj in (box, ground):
        ok, why = margin_ok(res.regions, obj, res.superpixels)
        assert ok, why
    b = bulk_regions(res.regions, box)
    assert b and (res.regions[ground] == b).sum() < 0.01 * ground.sum()


def test_depth_scale_does_not_matter_and_runs_repeat():
    rgb, depth, _, _ = box_on_ground_scene()
    a = depth_rgb_regions(rgb, depth, K, PARAMS, APP).regions
    for s in (0.01, 3.7, 250.0):
        np.testing.assert_array_equal(a, depth_rgb_regions(rgb, depth * s, K, PARAMS, APP).regions,
                                      err_msg=f"depth x {s}")
    np.testing.assert_array_equal(a, depth_rgb_regions(rgb, depth, K, PARAMS, APP).regions)


def test_merge_k_trades_region_count():
    rgb, depth, _, _ = box_on_ground_scene()
    rgb = np.clip(rgb.astype(int) + np.random.default_rng(0).integers(-40, 40, rgb.shape), 0, 255).astype(np.uint8)
    counts = [int(depth_rgb_regions(rgb, depth, K, PARAMS, DepthRgbParams(merge_k=k)).regions.max())
              for k in (3.0, 30.0, 300.0)]
    assert counts[0] > counts[1] > counts[2] >= 1
