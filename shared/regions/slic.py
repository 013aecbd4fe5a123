"""SLIC superpixels (Achanta et al. 2012) with a numba core that reproduces scikit-image 0.26's
`skimage.segmentation.slic` bit for bit on 2D RGB images without a mask.

Why it exists: SLIC at the paper's 10000 segments is the slowest step of the grouping, and most of
its time is skimage's generic Cython core (3D, any number of channels, optional mask and SLIC-zero,
all through 4D memoryviews). Specialised to the one case the project uses and laid out so that
LLVM vectorises the distance rows, the same arithmetic runs about 2.4x faster (1.8x for the whole
call; bench/slic_speed.py). The preprocessing (scaling to [0, 1], Lab, Gaussian, seed grid) is not
re-implemented: it calls the same skimage / numpy functions in the same order on the same dtypes,
so the core sees the very same float64 image.

Exactness rests on doing every floating-point operation that can affect a result in skimage's
order and precision (no fastmath, no reassociation). The z axis is dropped only where that cannot
change a bit: with depth 1 the centroids' z is 0.0 (or NaN for an empty segment, which gets no
pixels either way), so dz * dz is +0.0 and 0.0 + dy == dy. Checked on x86-64, where neither
numba (without fastmath) nor skimage's wheel fuses a * b + c into an FMA; a build that did would
round differently, and tests/preprocess/test_slic.py would say so.
"""
from __future__ import annotations

import numpy as np

from shared.jit import njit

_MAX_ITER = 10  # skimage's default max_num_iter
_MIN_SIZE_FACTOR = 0.5
_MAX_SIZE_FACTOR = 3


def slic_labels(rgb: np.ndarray, n_segments: int, compactness: float, sigma: float) -> np.ndarray:
    """uint8 [H, W, 3] -> int32 [H, W] superpixel labels from 0.

    Equal, label for label, to `skimage.segmentation.slic(rgb, n_segments=n_segments,
    compactness=compactness, sigma=sigma, start_label=0, channel_axis=-1)` of scikit-image 0.26
    (the tests compare the two on synthetic, real, noise, constant and odd-sized images)."""
    image, seg_y, seg_x, step, step_y, step_x = prepare(rgb, n_segments, compactness, sigma)
    return slic_core(image, seg_y, seg_x, step, step_y, step_x)


def prepare(rgb: np.ndarray, n_segments: int, compactness: float, sigma: float):
    """skimage's slic up to the call of its Cython core, for 2D RGB without mask or spacing.

    Returns the planar Lab image float64 [3, H, W] (already times 1 / compactness), the seed rows
    and columns float64 [K], the float step between seeds and the integer row / column steps."""
    # scikit-image is imported here, not at the top: commands import the grouping for its constants
    from skimage.color import rgb2lab
    from skimage.filters import gaussian
    from skimage.util import img_as_float, regular_grid

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        # skimage keeps float32 input in float32 all the way; only the uint8 -> float64 path is reproduced
        raise TypeError(f"expected uint8 RGB, got {rgb.dtype}")
    image = img_as_float(rgb)
    image = image.astype(np.float64, copy=True)  # slic's in-place rescale must not touch the input
    imin = image.min()
    imax = image.max()
    image -= imin
    if imax != imin:
        image /= imax - imin
    image = rgb2lab(image[np.newaxis, ...])  # skimage converts the [1, H, W, 3] volume, not the 2D image

    slices = regular_grid(image.shape[:3], n_segments)
    _, h, w = image.shape[:3]
    grid_y, grid_x = np.mgrid[:h, :w]
    seg_y = grid_y[slices[1:]].ravel().astype(np.float64)
    seg_x = grid_x[slices[1:]].ravel().astype(np.float64)
    steps = [float(s.step) if s.step is not None else 1.0 for s in slices]
    step = max(steps)
    step_y, step_x = (int(s.step if s.step is not None else 1) for s in slices[1:])

    sig = np.full(3, sigma, dtype=np.float64)  # skimage's sigma / spacing, with unit spacing
    if (sig > 0).any():
        image = gaussian(image, sigma=list(sig) + [0], mode="reflect")

    ratio = 1.0 / compactness
    image = np.ascontiguousarray(image * ratio, dtype=np.float64)
    # Planes, so that the inner loop over x reads three unit-stride rows and vectorises.
    planes = np.ascontiguousarray(np.moveaxis(image[0], -1, 0))
    return planes, seg_y, seg_x, step, step_y, step_x


def slic_core(planes: np.ndarray, seg_y: np.ndarray, seg_x: np.ndarray, step: float, step_y: int,
              step_x: int) -> np.ndarray:
    """k-means iterations and connectivity enforcement on `prepare`'s output -> int32 [H, W]."""
    _, h, w = planes.shape
    n_centroids = seg_y.shape[0]
    # skimage passes step to a float32 argument and squares it in float32
    step32 = np.float32(step)
    spatial_weight = 1.0 / float(step32 * step32)
    labels = _kmeans(planes, seg_y.copy(), seg_x.copy(), spatial_weight, int(step_y), int(step_x), _MAX_ITER)
    segment_size = (h * w) / n_centroids
    min_size = int(_MIN_SIZE_FACTOR * segment_size)
    max_size = int(_MAX_SIZE_FACTOR * segment_size)
    return _enforce_connectivity(labels, min_size, max_size)


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def _kmeans(planes, seg_y, seg_x, spatial_weight, step_y, step_x, max_iter):
    _, h, w = planes.shape
    n_seg = seg_y.shape[0]
    img0 = planes[0]
    img1 = planes[1]
    img2 = planes[2]
    seg_c0 = np.zeros(n_seg)  # skimage seeds every centroid with colour 0, not the pixel's colour
    seg_c1 = np.zeros(n_seg)
    seg_c2 = np.zeros(n_seg)
    labels = np.full((h, w), -1, dtype=np.int32)  # a pixel no window reaches keeps its last label
    dist = np.empty((h, w))
    count = np.empty(n_seg, dtype=np.int64)
    row_d = np.empty(w)
    dx2 = np.empty(w)
    big = np.finfo(np.float64).max
    wy = 2 * step_y
    wx = 2 * step_x
    for it in range(max_iter):
        dist[:, :] = big
        for k in range(n_seg):
            cy = seg_y[k]
            cx = seg_x[k]
            if cy != cy:
                # an empty segment's centroid is 0/0 = NaN: its colour distance is NaN, so it
                # could win no pixel even if its window were not empty
                continue
            c0 = seg_c0[k]
            c1 = seg_c1[k]
            c2 = seg_c2[k]
            # skimage: (Py_ssize_t)max(c - 2*step, 0) and (Py_ssize_t)min(c + 2*step + 1, size),
            # clamped in float64 before truncation, with the additions in that order
            a = cy - wy
            y0 = 0 if 0.0 > a else int(a)
            b = (cy + wy) + 1.0
            y1 = h if h < b else int(b)
            a = cx - wx
            x0 = 0 if 0.0 > a else int(a)
            b = (cx + wx) + 1.0
            x1 = w if w < b else int(b)
            n = x1 - x0
            for i in range(n):
                dx = cx - (x0 + i)
                dx2[i] = dx * dx
            kk = np.int32(k)
            for y in range(y0, y1):
                dy = cy - y
                dy = dy * dy
                r0 = img0[y, x0:x1]
                r1 = img1[y, x0:x1]
                r2 = img2[y, x0:x1]
                # distances first, then the compare-and-store: two simple loops that LLVM
                # vectorises, where the fused loop stays scalar. Same operations, same order:
                # spatial term, then the colour sum from channel 0, then their sum.
                for i in range(n):
                    d = (dy + dx2[i]) * spatial_weight
                    t = r0[i] - c0
                    col = t * t
                    t = r1[i] - c1
                    col += t * t
                    t = r2[i] - c2
                    col += t * t
                    row_d[i] = d + col
                drow = dist[y, x0:x1]
                lrow = labels[y, x0:x1]
                for i in range(n):
                    d = row_d[i]
                    old = drow[i]
                    better = old > d  # strict: on a tie the lower segment index keeps the pixel
                    drow[i] = d if better else old
                    lrow[i] = kk if better else lrow[i]
        # skimage's "some pixel changed" flag is set by any store, and every store leaves a
        # distance below DBL_MAX, so scanning for one afterwards gives the same flag
        change = False
        for y in range(h):
            for x in range(w):
                if dist[y, x] < big:
                    change = True
                    break
            if change:
                break
        if not change or it == max_iter - 1:
            break  # the last centroid update could not change the labels; skimage does it anyway
        count[:] = 0
        seg_y[:] = 0.0
        seg_x[:] = 0.0
        seg_c0[:] = 0.0
        seg_c1[:] = 0.0
        seg_c2[:] = 0.0
        # sums per segment in raster order, as skimage does
        for y in range(h):
            fy = float(y)
            for x in range(w):
                k = labels[y, x]
                count[k] += 1
                seg_y[k] += fy
                seg_x[k] += x
                seg_c0[k] += img0[y, x]
                seg_c1[k] += img1[y, x]
                seg_c2[k] += img2[y, x]
        for k in range(n_seg):
            n = float(count[k])  # 0 gives NaN (0/0), as in skimage
            seg_y[k] /= n
            seg_x[k] /= n
            seg_c0[k] /= n
            seg_c1[k] /= n
            seg_c2[k] /= n
    return labels


@njit(cache=True, nogil=True, error_model="numpy", boundscheck=False)
def _enforce_connectivity(labels, min_size, max_size):
    # skimage's breadth-first relabelling: components in raster order of their first pixel,
    # neighbours in the order +x, -x, +y, -y (the z neighbours are outside a depth-1 volume), a
    # component cut off at max_size pixels, and one smaller than min_size merged into the last
    # already-labelled neighbour met during its search.
    h, w = labels.shape
    out = np.full((h, w), -1, dtype=np.int32)
    queue_y = np.empty(max(max_size, 1), dtype=np.int64)
    queue_x = np.empty(max(max_size, 1), dtype=np.int64)
    ddy = (0, 0, 1, -1)
    ddx = (1, -1, 0, 0)
    new_label = 0
    for y in range(h):
        for x in range(w):
            label = labels[y, x]
            if label == -1 or out[y, x] > -1:
                continue
            adjacent = new_label
            out[y, x] = new_label
            size = 1
            visited = 0
            queue_y[0] = y
            queue_x[0] = x
            while visited < size and size < max_size:
                qy = queue_y[visited]
                qx = queue_x[visited]
                for i in range(4):
                    yy = qy + ddy[i]
                    xx = qx + ddx[i]
                    if 0 <= xx < w and 0 <= yy < h:
                        if labels[yy, xx] == label and out[yy, xx] == -1:
                            out[yy, xx] = new_label
                            queue_y[size] = yy
                            queue_x[size] = xx
                            size += 1
                            if size >= max_size:
                                break
                        elif out[yy, xx] > -1 and out[yy, xx] != new_label:
                            adjacent = out[yy, xx]
                visited += 1
            if size < min_size:
                for i in range(size):
                    out[queue_y[i], queue_x[i]] = adjacent
            else:
                new_label += 1
    return out
