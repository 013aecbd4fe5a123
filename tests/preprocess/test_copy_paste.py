"""Copy-paste synthesis: exact correspondences, DepthMix, the height constraint, counts, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from preprocess.copy_paste import (PasteParams, SourceFrame, colour_matrices, disparity_of, region_boxes,
                                   synthesise)
from shared.shard_schema import NO_LAYER, decode_group, encode_group, source_ids

H, W = 48, 64
NO_AUG = dict(jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0)


def _regions(rng: np.random.Generator) -> np.ndarray:
    """uint16 [H, W]: rectangles, a disc and a ring (non-convex), a too-thin strip, gaps of 0."""
    reg = np.zeros((H, W), dtype=np.uint16)
    yy, xx = np.mgrid[0:H, 0:W]
    reg[2:22, 2:14] = 1
    reg[25:47, 5:30] = 2
    reg[((yy - 15) ** 2 + (xx - 40) ** 2) < 100] = 3
    ring = ((yy - 34) ** 2 + (xx - 50) ** 2)
    reg[(ring < 130) & (ring > 30)] = 4
    reg[5:40, 58:63] = 5  # 5 px wide: fails the 6-px width filter
    reg[0:15, 20:30] = 6  # 15 px high: fails the 16-px height filter
    reg[30:47, 32:40] = 7
    return reg


def _frames(seed: int, m: int = 3, smooth: bool = False) -> list[SourceFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(m):
        if smooth:  # slopes of at most 2 grey levels per pixel: bounded interpolation error
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
            ph = rng.uniform(0, 6.28, 3)
            img = np.stack([127 + 100 * np.sin(xx / 50 + yy / 70 + ph[c]) for c in range(3)], -1)
            img = np.rint(img).astype(np.uint8)
        else:
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        reg = _regions(rng)
        per_region = rng.uniform(2, 60, 8)
        depth = (per_region[reg] * (1 + 0.1 * rng.random((H, W)))).astype(np.float32)
        out.append(SourceFrame(f"f{i}", img, depth, reg, horizon=[20.0, 24.5, 22.0, 21.0][i % 4]))
    return out


def _source_pixels(syn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per synthesised pixel: source frame, row, column (from the stored maps only) and a validity mask."""
    sid = source_ids(syn.group.layers, syn.group.meta)
    ok = sid >= 0
    f, rest = np.divmod(np.where(ok, sid, 0), H * W)
    sy, sx = np.divmod(rest, W)
    return f, sy, sx, ok


def _group_region(frames, f, sy, sx):
    """Group region id of source pixels (frame f, row sy, column sx)."""
    highest = np.array([fr.regions.max() for fr in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(highest)[:-1]])
    local = np.stack([fr.regions for fr in frames]).astype(np.int64)[f, sy, sx]
    return np.where(local > 0, local + offsets[f], 0)


def test_region_boxes_known_answer():
    reg = np.zeros((5, 6), dtype=np.uint16)
    reg[1:3, 2:5] = 1
    reg[4, 0] = 3
    boxes = region_boxes(reg, 3)
    assert boxes[1].tolist() == [1, 3, 2, 5]
    assert boxes[2].tolist() == [0, 0, 0, 0]  # absent id
    assert boxes[3].tolist() == [4, 5, 0, 1]


def test_scale_one_without_colour_aug_copies_source_pixels_exactly():
    frames = _frames(0)
    syn = synthesise(frames, 7, PasteParams(scale_range=(1.0, 1.0), **NO_AUG))
    g = syn.group
    assert g.images.shape == (6, H, W, 3) and g.layers.dtype == np.uint8
    assert all(p.scale == 1.0 for p in syn.pastes)
    assert sum(len(m["layers"]) - 1 for m in g.meta["images"]) > 10  # pastes are visible
    f, sy, sx, ok = _source_pixels(syn)
    assert ok.all() and not (g.layers == NO_LAYER).any()  # every pixel shows some source pixel
    src = np.stack([fr.image for fr in frames])
    assert np.array_equal(g.images, src[f, sy, sx])
    assert np.array_equal(g.regions, _group_region(frames, f, sy, sx))
    # pasted pixels really moved: not every pixel shows its own background position
    moved = (f != np.array([m["base"] for m in g.meta["images"]])[:, None, None]) | \
            (sy != np.arange(H)[None, :, None]) | (sx != np.arange(W)[None, None, :])
    assert moved.mean() > 0.05
    flips = [p.flip for p in syn.pastes]
    assert any(flips) and not all(flips)


def _bilinear(img: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Reference bilinear sampling, clamped at the border: float [..., 3]."""
    h, w = img.shape[:2]
    fx = np.clip(sx, 0, w - 1)
    fy = np.clip(sy, 0, h - 1)
    x0 = np.floor(fx).astype(int)
    y0 = np.floor(fy).astype(int)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = (fx - x0)[..., None]
    wy = (fy - y0)[..., None]
    im = img.astype(np.float64)
    top = im[y0, x0] * (1 - wx) + im[y0, x1] * wx
    bot = im[y1, x0] * (1 - wx) + im[y1, x1] * wx
    return top * (1 - wy) + bot * wy


def test_scaled_pastes_match_within_interpolation_error():
    frames = _frames(1, smooth=True)
    syn = synthesise(frames, 3, PasteParams(**NO_AUG))
    g = syn.group
    scales = np.array([p.scale for p in syn.pastes])
    assert (scales != 1.0).mean() > 0.5 and scales.min() >= 0.2 and scales.max() <= 2.0
    f, sy, sx, ok = _source_pixels(syn)
    assert ok.all()
    src = np.stack([fr.image for fr in frames])
    # nearest source pixel: within the interpolation error of a 2-levels-per-pixel image
    err = np.abs(g.images.astype(int) - src[f, sy, sx].astype(int))
    assert err.max() <= 2
    # ids are nearest-neighbour: exact
    assert np.array_equal(g.regions, _group_region(frames, f, sy, sx))
    # and the colour is the bilinear sample at the exact affine position (rounded to uint8)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    for i, im_meta in enumerate(g.meta["images"]):
        for k, layer in enumerate(im_meta["layers"]):
            sel = g.layers[i] == k
            a, b, c, d, e, ff = layer["affine"]
            ref = _bilinear(frames[layer["source"]].image, a * xs[sel] + b * ys[sel] + c,
                            d * xs[sel] + e * ys[sel] + ff)
            assert np.abs(g.images[i][sel] - ref).max() <= 0.5 + 1e-6


def _candidates(frames, syn, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Independent recomputation: background disparity and every paste's disparity where it claims a pixel."""
    m_base = syn.group.meta["images"][i]["base"]
    bg = disparity_of(frames[m_base].depth)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    out = []
    for p in syn.pastes:
        if p.image != i:
            continue
        a, b, c, d, e, f = p.affine
        rx = np.rint(a * xs + b * ys + c).astype(int)
        ry = np.rint(d * xs + e * ys + f).astype(int)
        inside = (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
        rxc, ryc = np.clip(rx, 0, W - 1), np.clip(ry, 0, H - 1)
        claim = inside & (frames[p.source].regions[ryc, rxc] == p.region)
        # scaled in double precision, stored as float32 (as the kernel does)
        disp = np.where(claim, disparity_of(frames[p.source].depth)[ryc, rxc].astype(np.float64) * p.scale, -1)
        out.append(disp.astype(np.float32))
    return bg, out


def test_depthmix_never_puts_a_farther_pixel_over_a_nearer_one():
    frames = _frames(2)
    syn = synthesise(frames, 11, PasteParams())
    g = syn.group
    f, sy, sx, _ = _source_pixels(syn)
    for i in range(g.n_images):
        bg, cands = _candidates(frames, syn, i)
        best = np.max(np.stack([bg] + cands), axis=0)
        # what each pixel shows is the nearest of everything that claimed it
        np.testing.assert_array_equal(syn.disparity[i], best)
        # and the stored maps say which source pixel that is, with its scaled disparity
        scale = np.array([1.0 / layer["affine"][4] for layer in g.meta["images"][i]["layers"]])
        shown = np.stack([disparity_of(fr.depth) for fr in frames])[f[i], sy[i], sx[i]] * scale[g.layers[i]]
        shown = shown.astype(np.float32)
        np.testing.assert_array_equal(shown, syn.disparity[i])
        for k, cand in enumerate(cands):
            assert (cand <= syn.disparity[i]).all(), f"image {i}: paste {k} hidden under a farther pixel"


def test_vertical_position_stays_within_h_t_of_the_scaled_region():
    frames = _frames(3)
    params = PasteParams(**NO_AUG)
    syn = synthesise(frames, 5, params)
    g = syn.group
    boxes = [region_boxes(fr.regions, int(fr.regions.max())) for fr in frames]
    n_checked = 0
    for p in syn.pastes:
        c_f = frames[p.source].horizon
        c_t = frames[g.meta["images"][p.image]["base"]].horizon
        y0 = boxes[p.source][p.region][0]
        ideal = c_t + p.scale * (y0 - c_f)
        assert p.ideal_top == pytest.approx(ideal)
        assert abs(p.top - ideal) <= params.height_tolerance
        # the stored affine sends the top edge of the scaled box back to the region's top edge
        a, b, c, d, e, f = p.affine
        assert d == 0 and b == 0 and e == pytest.approx(1 / p.scale)
        assert e * (p.top - 0.5) + f + 0.5 == pytest.approx(y0, abs=1e-5)  # affine rounded to 1e-6
    # the claimed pixels really start at that row (when not cut off by the image)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    for p in syn.pastes:
        a, b, c, d, e, f = p.affine
        rx, ry = np.rint(a * xs + c).astype(int), np.rint(e * ys + f).astype(int)
        inside = (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
        claim = inside & (frames[p.source].regions[np.clip(ry, 0, H - 1), np.clip(rx, 0, W - 1)] == p.region)
        rows = np.flatnonzero(claim.any(axis=1))
        if rows.size and p.top > 0 and p.box[2] > 0 and p.box[3] < W:  # not cut off
            # a claimed pixel centre lies at or below the top edge, and the first claimed row is
            # close to it (thin tops of round regions can fall between samples when s < 1)
            assert p.top - 1e-9 <= rows[0] + 0.5 <= p.top + p.scale + 2.0
            n_checked += 1
    assert n_checked > 5


def test_each_region_passing_the_filter_is_pasted_e_times_per_round():
    frames = _frames(4, m=2)
    syn = synthesise(frames, 0, PasteParams(rounds=(1.0, 3.0)))
    M = 2
    assert syn.group.n_images == 4
    for rnd, e in enumerate((1, 3)):
        per_region: dict[tuple[int, int], int] = {}
        for p in syn.pastes:
            if p.image // M == rnd:
                per_region[(p.source, p.region)] = per_region.get((p.source, p.region), 0) + 1
        # regions 5 (5 px wide) and 6 (15 px high) fail the size filter; 1, 2, 3, 4, 7 pass
        assert sorted(per_region) == [(m, r) for m in range(M) for r in (1, 2, 3, 4, 7)]
        assert set(per_region.values()) == {e}
    # each source frame is the untouched background of one image per round
    assert [m["base"] for m in syn.group.meta["images"]] == [0, 1, 0, 1]
    # fractional expectation: floor(e) copies plus one with probability frac(e)
    counts = []
    for seed in range(20):
        s = synthesise(frames, seed, PasteParams(rounds=(0.5,), scale_range=(1.0, 1.0), **NO_AUG))
        counts.append(len(s.pastes))
    assert 0.3 < np.mean(counts) / 10 < 0.7 and max(counts) <= 10


def test_region_ids_are_unique_within_the_group_and_shared_by_copies():
    frames = _frames(5)
    syn = synthesise(frames, 1, PasteParams())
    ids = {(p.source, p.region): p.group_region for p in syn.pastes}
    assert len(set(ids.values())) == len(ids)
    for i, m in enumerate(syn.group.meta["images"]):
        for layer in m["layers"][1:]:
            assert layer["region"] == ids[(layer["source"], _local(frames, layer["source"], layer["region"]))]
            assert (syn.group.regions[i][syn.group.layers[i] == m["layers"].index(layer)] == layer["region"]).all()


def _local(frames, m: int, group_region: int) -> int:
    highest = [int(fr.regions.max()) for fr in frames]
    return group_region - sum(highest[:m])


def test_same_seed_same_group_and_layers_are_compact():
    frames = _frames(6)
    a = synthesise(frames, [1, 2, 3], PasteParams())
    b = synthesise(frames, [1, 2, 3], PasteParams())
    c = synthesise(frames, [1, 2, 4], PasteParams())
    assert np.array_equal(a.group.images, b.group.images) and a.group.meta == b.group.meta
    assert not np.array_equal(a.group.images, c.group.images)
    for i, m in enumerate(a.group.meta["images"]):
        counts = np.bincount(a.group.layers[i].ravel(), minlength=len(m["layers"]))
        assert len(counts) == len(m["layers"]) and (counts[1:] > 0).all()  # every listed paste is visible


def test_colour_matrix_known_answers():
    mean = np.array([[90.0, 120.0, 60.0]] * 50)
    grey_level = 0.299 * 90 + 0.587 * 120 + 0.114 * 60
    rng = np.random.default_rng(0)
    cm = colour_matrices(rng, PasteParams(jitter=(0.5, 0.0, 0.0, 0.0), jitter_prob=1.0, gray_prob=0.0), mean)
    fac = cm[:, 0, 0]
    assert (0.5 <= fac).all() and (fac <= 1.5).all() and fac.std() > 0.1
    assert np.allclose(cm, fac[:, None, None] * np.c_[np.eye(3), np.zeros(3)][None])  # brightness only
    # contrast keeps the region's mean grey level; saturation and hue keep greys grey
    cm = colour_matrices(rng, PasteParams(jitter=(0.0, 0.5, 0.0, 0.0), jitter_prob=1.0, gray_prob=0.0), mean)
    grey_after = np.einsum("c,pc->p", np.array([0.299, 0.587, 0.114]),
                           np.einsum("pij,pj->pi", cm[:, :, :3], mean) + cm[:, :, 3])
    np.testing.assert_allclose(grey_after, grey_level)
    assert np.abs(cm[:, 0, 0] - 1).max() > 0.1  # and it did change the contrast
    cm = colour_matrices(rng, PasteParams(jitter=(0.0, 0.0, 0.5, 0.2), jitter_prob=1.0, gray_prob=0.0), mean)
    np.testing.assert_allclose(np.einsum("pij,j->pi", cm[:, :, :3], np.full(3, 77.0)) + cm[:, :, 3], 77.0, atol=1e-6)
    assert np.abs(cm[:, :, :3] - np.eye(3)).max() > 0.1  # colours do change
    gray = colour_matrices(rng, PasteParams(jitter_prob=0.0, gray_prob=1.0), mean)
    assert np.allclose(gray[:, 0], gray[:, 1]) and np.allclose(gray[:, 1], gray[:, 2])
    assert np.array_equal(colour_matrices(rng, PasteParams(**NO_AUG), mean),
                          np.broadcast_to(np.c_[np.eye(3), np.zeros(3)], (50, 3, 4)))
    # a random order of the ops: brightness-then-contrast differs from contrast-then-brightness
    mixed = colour_matrices(np.random.default_rng(1), PasteParams(jitter=(0.5, 0.5, 0.0, 0.0), jitter_prob=1.0,
                                                                   gray_prob=0.0), mean)
    assert len({round(float(b), 6) for b in mixed[:, 0, 3]}) > 10
    # probability: about jitter_prob of the pastes are jittered
    half = colour_matrices(rng, PasteParams(jitter_prob=0.5, gray_prob=0.0), np.repeat(mean, 20, axis=0))
    changed = np.abs(half - np.c_[np.eye(3), np.zeros(3)][None]).max(axis=(1, 2)) > 0
    assert 0.4 < changed.mean() < 0.6


def test_many_layers_promote_the_layer_maps_to_uint16_and_round_trip():
    # 2 frames of 60 thin regions each, 6 copies per region, all at scale 1 and visible (nearer each paste)
    reg = np.zeros((H, W), dtype=np.uint16)
    k = 1
    for y in range(0, H - 16 + 1, 16):
        for x in range(0, W - 6 + 1, 3):
            reg[y:y + 16, x:x + 3] = k  # 3 px wide: the filter needs 6, so widen via min_width below
            k += 1
    rng = np.random.default_rng(0)
    frames = [SourceFrame(f"f{m}", rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                          rng.uniform(1, 50, (H, W)).astype(np.float32), reg, 24.0) for m in range(2)]
    syn = synthesise(frames, 0, PasteParams(rounds=(6.0,), min_width=3, scale_range=(1.0, 1.0), **NO_AUG))
    g = syn.group
    assert max(len(m["layers"]) for m in g.meta["images"]) > 255
    assert g.layers.dtype == np.uint16
    back = decode_group(encode_group("e00_g0000000", g))
    assert back.layers.dtype == np.uint16 and np.array_equal(back.layers, g.layers)
    f, sy, sx, ok = _source_pixels(syn)
    assert ok.all()
    assert np.array_equal(g.images, np.stack([fr.image for fr in frames])[f, sy, sx])


def test_mismatched_shapes_are_rejected():
    frames = _frames(7, m=2)
    frames[1] = SourceFrame("bad", frames[1].image[:-1], frames[1].depth, frames[1].regions, 20.0)
    with pytest.raises(ValueError, match="bad"):
        synthesise(frames, 0)


def test_scale_keeps_the_region_on_its_side_of_the_horizon_and_within_limits():
    from preprocess.copy_paste import draw_scales

    rng = np.random.default_rng(0)
    p = PasteParams()
    size = (384, 768)
    c = 192.0
    above, below, small = (20, 120, 100, 140), (260, 300, 10, 60), (150, 158, 10, 14)
    boxes = np.array([above, below] * 300)
    s = draw_scales(rng, p, boxes, np.full(len(boxes), c), size)
    sa, sb = s[0::2], s[1::2]
    assert (sa >= 0.2).all() and (s <= 2.0).all() and (c + sa * (above[1] - c) >= -1e-9).all()  # bottom edge in
    assert (c + sb * (below[0] - c) <= size[0] + 1e-9).all()  # top edge stays in the image
    assert (sb * (below[1] - below[0]) >= p.min_size - 1e-9).all()
    assert sa.std() > 0.05 and sb.std() > 0.05
    # an 8x4 box cannot reach 8 px on both sides within (0.2, 1.5): 4 * s >= 8 needs s >= 2, so s = 1
    assert draw_scales(rng, PasteParams(scale_range=(0.2, 1.5)), np.array([small]), np.array([c]), size)[0] == 1.0
    # 1/s is uniform between 1/s_max and 1/s_min (uniform in depth): its mean sits in the middle
    inv = 1 / draw_scales(rng, p, np.array([(150, 250, 100, 200)] * 4000), np.full(4000, c), size)
    assert np.mean(inv) == pytest.approx((1 / 2.0 + 1 / 0.2) / 2, rel=0.03)
