"""Depth-coherent copy-paste synthesis of one group (the paper's Algorithm 2), pure and seeded.

A group takes M source frames (image, depth, coherent-region map, horizon row) and makes 2M images:
in each of the rounds (default two, e = [1, 2] expected pastes per region), every source frame is
the untouched background of one image, and every region of every source frame that passes the size
filter (bounding box >= 16 px high and >= 6 px wide) is pasted e times (floor(e) times plus once more
with probability frac(e)) into the images of that round, the copies shuffled and dealt round-robin.

One paste, in the order it is drawn:
- scale s about the horizon row c (row cy*H of the frame's K): a point at row V lands at row
  c_t + s (V - c_f) (c_f, c_t: horizon of source and target frame, equal for one camera). This is
  "the same object at 1/s of its distance" for a level camera, so its disparity (1/depth) is
  multiplied by s. 1/s is uniform in [1/s_max, 1/s_min] (uniform in depth), s_min = max(0.2,
  8 px / box side), s_max = min(2, 2H / box height, 2W / box width, what keeps the region on its
  side of the horizon inside the image); when s_max <= s_min the paste keeps s = 1.
- horizontal flip (p = 0.5) about the region's box; horizontal position uniform over every
  position where the box overlaps the image.
- vertical offset: the box's top edge lands within h_t = 16 px of c_t + s (top - c_f), the row
  the scaled region would sit at (an integer offset, so at s = 1 pixels are copied exactly).
- colour jitter (p = 0.8: brightness, contrast, saturation 0.5, hue 0.2, in random order),
  grayscale (p = 0.1), Gaussian blur (p = 0.2, 5 taps, sigma in [0.1, 2]). The jitter ops are
  composed into one 3x4 colour matrix and clamped once at the end (torchvision clamps after each
  op); contrast pulls towards the region's mean grey level; hue rotates the chroma plane of YIQ,
  a linear stand-in for the HSV hue shift (the matrices of shared.photometric).
- DepthMix: a pasted pixel is written only where its scaled disparity is strictly larger (nearer)
  than the disparity already there (background or an earlier paste), so later pastes respect
  earlier ones.

Sampling: every synthesised pixel x' maps through the paste's affine to a source point
(sx, sy); the pixel belongs to the paste when source pixel (rint(sx), rint(sy)) lies in the region
(nearest for ids, disparity and membership, exactly as `shared.shard_schema.source_ids` rebuilds
it); its colour is sampled bilinearly at (sx, sy). Pixel centres sit at integer + 0.5 in the
continuous coordinates the scale acts on; the stored affine maps integer pixel indices.

Schema decisions (see `shared.shard_schema`): region ids are unique within the group
(id = offset of the source frame + its local region id), and a pasted copy keeps the id of its
original, so all copies of a region and the region in its own background are region-level positives.
Layer 0 of each image is its background; only pastes with at least one visible pixel become layers
(in paste order), so the layer maps stay small; the maps are uint8 unless an image of the group
has more than 254 layers (many regions with e = 2), then uint16 (the schema's extension). Each
layer entry carries, besides the schema's
`source` and `affine`, `region` (group region id, 0 for the background); the paste's scale is
1 / affine[4] (its disparity was multiplied by that) and it was flipped when affine[0] < 0. The
affines are rounded to 6 decimals before they are used, so meta.json stays short and exact.
Soft (blurred) paste edges of the original code are left out: they would make a pixel show a mix
of two sources, and pixel-level positives must be exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from shared.photometric import GREY_ROWS, LUMA, hue_matrices, saturation_matrices
from shared.jit import njit
from shared.shard_schema import NO_LAYER, NO_LAYER16, Group

# Bump when the same inputs and seed would give different groups: it keys the shard folders.
SYNTHESIS_VERSION = 2
AFFINE_DECIMALS = 6  # stored affines are short decimals; 1e-6 of a pixel per pixel is far below interpolation
_IDENTITY34 = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)


@dataclass(frozen=True)
class PasteParams:
    """The copy-paste knobs; defaults are the paper's (original code where the paper is silent)."""

    rounds: tuple[float, ...] = (1.0, 2.0)  # expected pastes per region in each round
    min_height: int = 16  # region filter: bounding box height and width in px
    min_width: int = 6
    scale_range: tuple[float, float] = (0.2, 2.0)
    min_size: int = 8  # a scaled box keeps both sides >= this many px
    height_tolerance: int = 16  # h_t
    flip_prob: float = 0.5
    jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.2)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    gray_prob: float = 0.1
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass
class SourceFrame:
    frame_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], > 0 (non-positive = infinitely far)
    regions: np.ndarray  # uint16 [H, W], 0 = no region
    horizon: float  # horizon row in continuous pixel coordinates (cy * H)


@dataclass
class Paste:
    """One drawn paste (visible or not); `image` is the synthesised image it went into."""

    image: int
    source: int  # index of the source frame within the group
    region: int  # local region id in the source frame
    group_region: int
    scale: float
    flip: bool
    affine: tuple[float, float, float, float, float, float]  # synthesised (x, y) -> source (sx, sy)
    ideal_top: float  # row the scaled box's top edge would sit at without the vertical jitter
    top: float  # row it sits at
    colour: np.ndarray  # float64 [3, 4]: rgb' = colour[:, :3] @ rgb + colour[:, 3]
    blur: np.ndarray  # float64 [5] kernel taps, all 0 = no blur
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the synthesised pixels it may touch


@dataclass
class Synthesis:
    group: Group
    disparity: np.ndarray  # float32 [N, H, W] disparity of what each pixel shows (z-buffer)
    pastes: list[Paste] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# kernels

@njit(cache=True, nogil=True)
def region_boxes(regions: np.ndarray, n: int) -> np.ndarray:
    """int64 [n + 1, 4] rows (y0, y1, x0, x1), half-open, per region id; empty ids get y0 = y1 = 0."""
    h, w = regions.shape
    out = np.zeros((n + 1, 4), dtype=np.int64)
    out[:, 0] = h
    out[:, 2] = w
    for y in range(h):
        for x in range(w):
            r = regions[y, x]
            if y < out[r, 0]:
                out[r, 0] = y
            if y + 1 > out[r, 1]:
                out[r, 1] = y + 1
            if x < out[r, 2]:
                out[r, 2] = x
            if x + 1 > out[r, 3]:
                out[r, 3] = x + 1
    for r in range(n + 1):
        if out[r, 1] == 0:
            out[r, 0] = 0
            out[r, 2] = 0
            out[r, 3] = 0
    return out


@njit(cache=True, nogil=True)
def region_stats(regions: np.ndarray, image: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass: boxes int64 [n + 1, 4] (as region_boxes), pixel counts int64 [n + 1], mean colour
    float64 [n + 1, 3] per region id. regions uint16 [H, W], image uint8 [H, W, 3]."""
    h, w = regions.shape
    counts = np.zeros(n + 1, dtype=np.int64)
    sums = np.zeros((n + 1, 3), dtype=np.float64)
    for y in range(h):
        for x in range(w):
            r = regions[y, x]
            counts[r] += 1
            for ch in range(3):
                sums[r, ch] += image[y, x, ch]
    for r in range(n + 1):
        if counts[r] > 0:
            for ch in range(3):
                sums[r, ch] /= counts[r]
    return region_boxes(regions, n), counts, sums


@njit(cache=True, nogil=True)
def _bilinear(src_img, s, sx, sy, h, w, out, yy, xx):
    """Colour of source frame s at (sx, sy), clamped to the frame, into out[yy, xx, :]."""
    fx = min(max(sx, 0.0), w - 1.0)
    fy = min(max(sy, 0.0), h - 1.0)
    ix = int(math.floor(fx))
    iy = int(math.floor(fy))
    ix1 = min(ix + 1, w - 1)
    iy1 = min(iy + 1, h - 1)
    wx = fx - ix
    wy = fy - iy
    for ch in range(3):
        top = src_img[s, iy, ix, ch] * (1.0 - wx) + src_img[s, iy, ix1, ch] * wx
        bot = src_img[s, iy1, ix, ch] * (1.0 - wx) + src_img[s, iy1, ix1, ch] * wx
        out[yy, xx, ch] = top * (1.0 - wy) + bot * wy


@njit(cache=True, nogil=True)
def _colour(col, yy, xx, cm):
    r0 = col[yy, xx, 0]
    g0 = col[yy, xx, 1]
    b0 = col[yy, xx, 2]
    for ch in range(3):
        col[yy, xx, ch] = cm[4 * ch] * r0 + cm[4 * ch + 1] * g0 + cm[4 * ch + 2] * b0 + cm[4 * ch + 3]


@njit(cache=True, nogil=True)
def _compose_image(out_img, out_disp, out_reg, out_lay, base, offset, src_img, src_disp, src_reg,
                   p_src, p_region, p_greg, p_aff, p_box, p_scale, p_col, p_blur):
    """Background `base` plus the pastes, in order, with the DepthMix z-test; returns visible pastes.

    out_img uint8 [H, W, 3], out_disp float32 [H, W], out_reg uint16 [H, W], out_lay int32 [H, W]
    (k + 1 = paste k, 0 = background); src_* [M, H, W(, 3)]; per paste k: p_aff [P, 6] float64,
    p_box [P, 4] (y0, y1, x0, x1), p_col [P, 12] colour matrix, p_blur [P, 5] taps (0 = none).
    A pixel's colour is only computed where the paste wins the z-test (and in its box when blurred).
    """
    h, w = out_disp.shape
    for y in range(h):
        for x in range(w):
            for ch in range(3):
                out_img[y, x, ch] = src_img[base, y, x, ch]
            out_disp[y, x] = src_disp[base, y, x]
            r = src_reg[base, y, x]
            out_reg[y, x] = r + offset if r > 0 else 0
            out_lay[y, x] = 0
    n_p = p_src.shape[0]
    # reused across pastes; a paste writes every box pixel it reads, so no clearing is needed
    win = np.empty((h, w), dtype=np.bool_)
    wdisp = np.empty((h, w), dtype=np.float32)
    col = np.empty((h, w, 3), dtype=np.float32)
    tmp = np.empty((h, w, 3), dtype=np.float32)
    for k in range(n_p):
        s = p_src[k]
        reg = p_region[k]
        a, b, c, d, e, f = p_aff[k, 0], p_aff[k, 1], p_aff[k, 2], p_aff[k, 3], p_aff[k, 4], p_aff[k, 5]
        y0, y1, x0, x1 = p_box[k, 0], p_box[k, 1], p_box[k, 2], p_box[k, 3]
        if y1 <= y0 or x1 <= x0:
            continue
        n_win = 0
        for y in range(y0, y1):
            for x in range(x0, x1):
                win[y, x] = False
                sx = a * x + b * y + c
                sy = d * x + e * y + f
                rx = np.rint(sx)
                ry = np.rint(sy)
                if rx >= 0 and rx < w and ry >= 0 and ry < h:
                    jx = int(rx)
                    jy = int(ry)
                    if src_reg[s, jy, jx] == reg:
                        dd = np.float32(src_disp[s, jy, jx] * p_scale[k])
                        if dd > out_disp[y, x]:
                            win[y, x] = True
                            wdisp[y, x] = dd
                            n_win += 1
        if n_win == 0:
            continue
        cm = p_col[k]
        ident = (cm[0] == 1.0 and cm[1] == 0.0 and cm[2] == 0.0 and cm[3] == 0.0 and cm[4] == 0.0 and cm[5] == 1.0
                 and cm[6] == 0.0 and cm[7] == 0.0 and cm[8] == 0.0 and cm[9] == 0.0 and cm[10] == 1.0
                 and cm[11] == 0.0)
        kern = p_blur[k]
        blur = kern[2] != 0.0
        for y in range(y0, y1):
            for x in range(x0, x1):
                if blur or win[y, x]:
                    _bilinear(src_img, s, a * x + b * y + c, d * x + e * y + f, h, w, col, y, x)
                    if not ident:
                        _colour(col, y, x, cm)
        if blur:  # separable 5 taps inside the box, edges clamped; then only winners are written
            for y in range(y0, y1):
                for x in range(x0, x1):
                    for ch in range(3):
                        acc = 0.0
                        for t in range(5):
                            acc += kern[t] * col[y, min(max(x + t - 2, x0), x1 - 1), ch]
                        tmp[y, x, ch] = acc
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if win[y, x]:
                        for ch in range(3):
                            acc = 0.0
                            for t in range(5):
                                acc += kern[t] * tmp[min(max(y + t - 2, y0), y1 - 1), x, ch]
                            col[y, x, ch] = acc
        greg = p_greg[k]
        for y in range(y0, y1):
            for x in range(x0, x1):
                if win[y, x]:
                    out_disp[y, x] = wdisp[y, x]
                    out_reg[y, x] = greg
                    out_lay[y, x] = k + 1
                    for ch in range(3):
                        out_img[y, x, ch] = np.uint8(min(max(col[y, x, ch] + 0.5, 0.0), 255.0))


@njit(cache=True, nogil=True)
def _compact_layers(lay: np.ndarray, n_p: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the visible pastes 1.. in paste order: (new map int32 [H, W], visible paste indices)."""
    seen = np.zeros(n_p + 1, dtype=np.bool_)
    h, w = lay.shape
    for y in range(h):
        for x in range(w):
            seen[lay[y, x]] = True
    remap = np.zeros(n_p + 1, dtype=np.int32)
    visible = np.empty(n_p, dtype=np.int64)
    nv = 0
    for k in range(1, n_p + 1):
        if seen[k]:
            visible[nv] = k - 1
            nv += 1
            remap[k] = nv
    out = np.empty((h, w), dtype=np.int32)
    for y in range(h):
        for x in range(w):
            out[y, x] = remap[lay[y, x]]
    return out, visible[:nv]


# ----------------------------------------------------------------------------------------------
# drawing the random parameters

def colour_matrices(rng: np.random.Generator, p: PasteParams, mean_rgb: np.ndarray) -> np.ndarray:
    """float64 [P, 3, 4] affine colour transforms for 0..255 RGB (identity where nothing is drawn).

    mean_rgb: float64 [P, 3], each region's mean colour (contrast pulls towards its grey level).
    Per paste: jitter with probability jitter_prob (its four ops in a random order), then grayscale
    with probability gray_prob."""
    P = mean_rgb.shape[0]
    T = np.broadcast_to(_IDENTITY34, (P, 3, 4)).copy()  # [A | bias]: rgb' = A rgb + bias
    bj, cj, sj, hj = p.jitter
    apply = rng.random(P) < p.jitter_prob
    order = np.argsort(rng.random((P, 4)), axis=1)  # a random permutation of the 4 ops per paste
    fb = rng.uniform(max(0.0, 1 - bj), 1 + bj, P)
    fc = rng.uniform(max(0.0, 1 - cj), 1 + cj, P)
    fs = rng.uniform(max(0.0, 1 - sj), 1 + sj, P)
    ang = 2 * np.pi * rng.uniform(-hj, hj, P)
    for pos in range(4):
        op = order[:, pos]
        if bj > 0 and (sel := apply & (op == 0)).any():
            T[sel] *= fb[sel, None, None]
        if cj > 0 and (sel := apply & (op == 1)).any():
            grey = np.einsum("c,pc->p", LUMA, np.einsum("pij,pj->pi", T[sel, :, :3], mean_rgb[sel]) + T[sel, :, 3])
            T[sel] *= fc[sel, None, None]
            T[sel, :, 3] += ((1 - fc[sel]) * grey)[:, None]
        if sj > 0 and (sel := apply & (op == 2)).any():
            T[sel] = saturation_matrices(fs[sel]) @ T[sel]
        if hj > 0 and (sel := apply & (op == 3)).any():
            T[sel] = hue_matrices(ang[sel]) @ T[sel]
    gray = rng.random(P) < p.gray_prob
    T[gray] = GREY_ROWS @ T[gray]
    return T


def blur_kernels(rng: np.random.Generator, p: PasteParams, n: int) -> np.ndarray:
    """float64 [n, 5] normalised Gaussian taps per paste, zeros = no blur (probability 1 - blur_prob)."""
    on = rng.random(n) < p.blur_prob
    sigma = rng.uniform(p.blur_sigma[0], p.blur_sigma[1], n)
    t = np.exp(-0.5 * (np.arange(-2, 3)[None, :] / sigma[:, None]) ** 2)
    return np.where(on[:, None], t / t.sum(1, keepdims=True), 0.0)


def draw_scales(rng: np.random.Generator, p: PasteParams, boxes: np.ndarray, horizons: np.ndarray,
                size: tuple[int, int]) -> np.ndarray:
    """float64 [P] scale about the horizon per region box (boxes int [P, 4] = y0, y1, x0, x1; horizons
    [P] of the source frames); 1/s uniform (= uniform in depth) between the limits, 1 where none fit."""
    H, W = size
    y0, y1, x0, x1 = (boxes[:, k].astype(np.float64) for k in range(4))
    bh, bw = y1 - y0, x1 - x0
    s_max = np.minimum(np.minimum(p.scale_range[1], 2 * H / bh), 2 * W / bw)
    c = horizons
    above, below = y1 < c, y0 > c
    # above the horizon: keep the scaled bottom edge below row 0; below it: the top edge above row H
    s_max = np.where(above, np.minimum(s_max, c / np.where(above, c - y1, 1.0)), s_max)
    s_max = np.where(below, np.minimum(s_max, (H - c) / np.where(below, y0 - c, 1.0)), s_max)
    s_min = np.maximum(np.maximum(p.scale_range[0], p.min_size / bh), p.min_size / bw)
    u = rng.random(len(boxes))
    inv = 1.0 / s_max + u * (1.0 / s_min - 1.0 / s_max)
    return np.where(s_max > s_min, 1.0 / inv, 1.0)


def place_all(rng: np.random.Generator, p: PasteParams, boxes: np.ndarray, scales: np.ndarray, flips: np.ndarray,
              horizon_src: np.ndarray, horizon_dst: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Affines (synthesised index -> source index) [P, 6], the scales they imply [P], ideal and
    actual top rows [P] and the boxes of synthesised pixels each paste may touch [P, 4].

    Continuous coordinates (centre of pixel i at i + 0.5): U' = s U + px (or -s U + px flipped),
    V' = s V + oy; oy is an integer within h_t of its ideal c_t - s c_f. The affine is rounded to
    AFFINE_DECIMALS before use, so what meta.json stores (short decimals) is exactly what was
    sampled; s is then 1 / affine[4], and at s = 1 the affine stays integral (exact copies)."""
    H, W = size
    P = len(boxes)
    y0, y1, x0, x1 = (boxes[:, k].astype(np.float64) for k in range(4))
    inv = np.array([round(v, AFFINE_DECIMALS) for v in (1.0 / scales).tolist()])
    s = 1.0 / inv
    sw = s * (x1 - x0)
    left = rng.integers(-np.ceil(sw).astype(np.int64) + 1, W).astype(np.float64)  # box overlaps the image
    px = np.where(flips, left + s * x1, left - s * x0)
    oy_ideal = horizon_dst - s * horizon_src
    ht = p.height_tolerance
    oy = np.round(oy_ideal + rng.uniform(-ht, ht, P))
    oy = np.where(oy - oy_ideal > ht, oy - 1.0, np.where(oy_ideal - oy > ht, oy + 1.0, oy))
    c = np.where(flips, (px - 0.5) * inv - 0.5, (0.5 - px) * inv - 0.5)
    f = (0.5 - oy) * inv - 0.5
    aff = np.zeros((P, 6))
    aff[:, 0] = np.where(flips, -inv, inv)
    aff[:, 2] = [round(v, AFFINE_DECIMALS) for v in c.tolist()]
    aff[:, 4] = inv
    aff[:, 5] = [round(v, AFFINE_DECIMALS) for v in f.tolist()]
    top, bottom = s * y0 + oy, s * y1 + oy
    margin = 3  # rounding, plus the blur's 2-px reach
    box = np.stack([np.maximum(0, np.floor(top) - margin), np.minimum(H, np.ceil(bottom) + margin),
                    np.maximum(0, np.floor(left) - margin), np.minimum(W, np.ceil(left + sw) + margin)],
                   axis=1).astype(np.int64)
    return {"affine": aff, "scale": s, "ideal_top": s * y0 + oy_ideal, "top": top, "box": box}


def _short(v: float) -> float | int:
    """Integral values as JSON ints (shorter meta.json; same number)."""
    return int(v) if float(v).is_integer() else float(v)


def pastes_per_region(rng: np.random.Generator, e: float, n: int) -> np.ndarray:
    """int [n] copies per region: floor(e), plus one with probability frac(e) (expectation e)."""
    base = int(math.floor(e))
    frac = e - base
    extra = (rng.random(n) < frac).astype(np.int64) if frac > 0 else np.zeros(n, dtype=np.int64)
    return base + extra


# ----------------------------------------------------------------------------------------------
# the group

def disparity_of(depth: np.ndarray) -> np.ndarray:
    """float32 [H, W] 1 / depth; non-positive or non-finite depth counts as infinitely far (0)."""
    d = depth.astype(np.float32)
    ok = np.isfinite(d) & (d > 0)
    out = np.zeros_like(d)
    np.divide(1.0, d, out=out, where=ok)
    return out


def group_region_offsets(frames: Sequence[SourceFrame]) -> np.ndarray:
    """int64 [M]: group id of region r of frame m is offsets[m] + r (r > 0); ids stay uint16."""
    highest = np.array([int(f.regions.max()) for f in frames], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(highest)[:-1]])
    if highest.sum() > np.iinfo(np.uint16).max:
        raise ValueError(f"group has {highest.sum()} regions; region ids are uint16 (at most 65535)")
    return offsets


def synthesise(frames: Sequence[SourceFrame], seed: int | Sequence[int], params: PasteParams = PasteParams()
               ) -> Synthesis:
    """Synthesise the len(rounds) * M images of one group from M source frames; same seed = same output."""
    rng = np.random.default_rng(seed)
    M = len(frames)
    if M == 0:
        raise ValueError("a group needs at least one source frame")
    H, W = frames[0].regions.shape
    for f in frames:
        if f.image.shape != (H, W, 3) or f.depth.shape != (H, W) or f.regions.shape != (H, W):
            raise ValueError(f"frame {f.frame_id}: image/depth/regions shapes {f.image.shape}, {f.depth.shape}, "
                             f"{f.regions.shape} do not match the group's {H}x{W}")
    src_img = np.ascontiguousarray(np.stack([f.image for f in frames]))  # uint8 [M, H, W, 3]
    src_disp = np.ascontiguousarray(np.stack([disparity_of(f.depth) for f in frames]))  # float32 [M, H, W]
    src_reg = np.ascontiguousarray(np.stack([f.regions.astype(np.uint16) for f in frames]))  # uint16 [M, H, W]
    offsets = group_region_offsets(frames)

    # candidate regions (those passing the size filter): frame, local id, box, mean colour
    c_frame, c_region, c_box, c_mean = [], [], [], []
    for m, f in enumerate(frames):
        n = int(f.regions.max())
        if n == 0:
            continue
        boxes, counts, means = region_stats(src_reg[m], src_img[m], n)  # [n + 1, 4], [n + 1], [n + 1, 3]
        ok = (counts > 0) & (boxes[:, 1] - boxes[:, 0] >= params.min_height) & \
             (boxes[:, 3] - boxes[:, 2] >= params.min_width)
        ok[0] = False
        ids = np.flatnonzero(ok)
        c_frame.append(np.full(len(ids), m, dtype=np.int64))
        c_region.append(ids.astype(np.int64))
        c_box.append(boxes[ids])
        c_mean.append(means[ids])
    c_frame_a = np.concatenate(c_frame) if c_frame else np.zeros(0, np.int64)
    c_region_a = np.concatenate(c_region) if c_region else np.zeros(0, np.int64)
    c_box_a = np.concatenate(c_box) if c_box else np.zeros((0, 4), np.int64)
    c_mean_a = np.concatenate(c_mean) if c_mean else np.zeros((0, 3))
    horizon = np.array([f.horizon for f in frames], dtype=np.float64)

    n_rounds = len(params.rounds)
    N = n_rounds * M
    out_img = np.empty((N, H, W, 3), dtype=np.uint8)
    out_disp = np.empty((N, H, W), dtype=np.float32)
    out_reg = np.empty((N, H, W), dtype=np.uint16)
    layers = np.empty((N, H, W), dtype=np.int32)
    images_meta: list[dict[str, Any]] = []
    all_pastes: list[Paste] = []
    identity = [1, 0, 0, 0, 1, 0]

    for rnd, e in enumerate(params.rounds):
        # every candidate e times in expectation, shuffled, dealt round-robin to the round's M images
        copies = np.repeat(np.arange(len(c_frame_a)), pastes_per_region(rng, e, len(c_frame_a)))
        copies = copies[rng.permutation(len(copies))]
        P = len(copies)
        dst = np.arange(P) % M
        src, boxes = c_frame_a[copies], c_box_a[copies]
        scales = draw_scales(rng, params, boxes, horizon[src], (H, W))
        flips = rng.random(P) < params.flip_prob
        pl = place_all(rng, params, boxes, scales, flips, horizon[src], horizon[dst], (H, W))
        colours = colour_matrices(rng, params, c_mean_a[copies]).reshape(P, 12)
        kernels = blur_kernels(rng, params, P)
        regions = c_region_a[copies]
        gregions = offsets[src] + regions
        for m_dst in range(M):
            i = rnd * M + m_dst
            sel = np.flatnonzero(dst == m_dst)  # this image's pastes, in paste order
            lay = np.empty((H, W), dtype=np.int32)
            _compose_image(out_img[i], out_disp[i], out_reg[i], lay, m_dst, int(offsets[m_dst]),
                           src_img, src_disp, src_reg, src[sel], regions[sel], gregions[sel],
                           np.ascontiguousarray(pl["affine"][sel]), np.ascontiguousarray(pl["box"][sel]),
                           pl["scale"][sel], np.ascontiguousarray(colours[sel]), np.ascontiguousarray(kernels[sel]))
            # keep only visible pastes as layers, renumbered 1.. in paste order
            layers[i], visible = _compact_layers(lay, len(sel))
            if len(visible) + 1 >= NO_LAYER16:
                raise ValueError(f"image {i} has {len(visible)} visible pastes; a layer map holds at most "
                                 f"{NO_LAYER16 - 1}")
            entries = [{"source": m_dst, "affine": identity, "region": 0}]
            for k in sel[visible]:
                entries.append({"source": int(src[k]), "affine": [_short(v) for v in pl["affine"][k].tolist()],
                                "region": int(gregions[k])})
            images_meta.append({"base": m_dst, "round": rnd, "layers": entries})
            all_pastes.extend(
                Paste(i, int(src[k]), int(regions[k]), int(gregions[k]), float(pl["scale"][k]), bool(flips[k]),
                      tuple(pl["affine"][k].tolist()), float(pl["ideal_top"][k]), float(pl["top"][k]),
                      colours[k].reshape(3, 4), kernels[k], tuple(int(v) for v in pl["box"][k]))
                for k in sel)

    # uint8 layer maps unless an image has more layers than 254 (then the whole group is uint16)
    most = max(len(m["layers"]) for m in images_meta)
    layers_out = layers.astype(np.uint8 if most < NO_LAYER else np.uint16)
    meta = {"sources": [f.frame_id for f in frames], "images": images_meta}
    return Synthesis(Group(out_img, out_reg, layers_out, meta), out_disp, all_pastes)
