"""SLIC superpixels: scikit-image's `slic` against the numba core of shared.regions.slic, in one run.

    .venv/bin/python bench/slic_speed.py [--frames 3] [--size 384x768] [--n-segments 10000] [--repeats 3]

Frames: the built-in synthetic city at --size, plus the Cityscapes / KITTI samples of ../shared/data
resized to it when that folder is there. Per frame, the best of --repeats runs of

  whole  skimage.segmentation.slic(...) vs shared.regions.slic.slic_labels(...), both from the uint8 image
  core   skimage's Cython k-means + connectivity (_slic_cython, _enforce_label_connectivity_cython)
         vs shared.regions.slic.slic_core, both on the same prepared Lab image and seeds

and checks that both give the same labels, pixel for pixel. Prints seconds per frame and the ratio.
Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import skimage  # noqa: E402
from skimage.segmentation import slic  # noqa: E402
from skimage.segmentation._slic import _enforce_label_connectivity_cython, _slic_cython  # noqa: E402

from shared.regions.slic import prepare, slic_core, slic_labels  # noqa: E402

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def frames(size: tuple[int, int], n: int, root: Path) -> list[tuple[str, np.ndarray]]:
    from preprocess.synth import generate
    from shared.datasets.synthetic import read_synthetic
    from shared.imageio import read_rgb

    generate(root / "city", 1, n, size, seed=0, progress=False)
    out = [(f.id, read_rgb(f.image)) for f in read_synthetic(root / "city")[:n]]
    real = sorted((SAMPLE_DATA / "cityscapes" / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    real += sorted((SAMPLE_DATA / "kitti").glob("*/*/image_02/data/*.png"))[:1]
    out += [(p.stem, read_rgb(p, size)) for p in real]
    return out


def skimage_core(planes, seg_y, seg_x, step, n_centroids):
    """skimage's two Cython calls on the inputs slic would hand them."""
    image = np.ascontiguousarray(np.moveaxis(planes, 0, -1)[np.newaxis])
    k = len(seg_y)
    segments = np.zeros((k, 6))
    segments[:, 1] = seg_y
    segments[:, 2] = seg_x
    labels = _slic_cython(image, None, segments, step, 10, np.ones(3), False, start_label=0)
    size = math.prod(image.shape[:3]) / n_centroids
    return _enforce_label_connectivity_cython(labels, int(0.5 * size), int(3 * size), start_label=0)[0]


def best(fn, repeats: int):
    t_best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", default="384x768")
    ap.add_argument("--n-segments", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compactness", type=float, default=10.0)
    ap.add_argument("--sigma", type=float, default=1.0)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    n, c, s = args.n_segments, args.compactness, args.sigma
    print(f"scikit-image {skimage.__version__}, {os.cpu_count()} CPUs, {size[0]}x{size[1]}, n_segments {n}, "
          f"compactness {c}, sigma {s}, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        imgs = frames(size, args.frames, Path(tmp))
    slic_labels(imgs[0][1][:32, :32], 20, c, s)  # numba compile / cache load
    rows = []
    print(f"{'frame':<34}{'whole sk':>10}{'whole nb':>10}{'core sk':>10}{'core nb':>10}  same labels")
    for name, rgb in imgs:
        t_sk, want = best(lambda: slic(rgb, n_segments=n, compactness=c, sigma=s, start_label=0, channel_axis=-1),
                          args.repeats)
        t_nb, got = best(lambda: slic_labels(rgb, n, c, s), args.repeats)
        planes, seg_y, seg_x, step, step_y, step_x = prepare(rgb, n, c, s)
        tc_sk, core_want = best(lambda: skimage_core(planes, seg_y, seg_x, step, len(seg_y)), args.repeats)
        tc_nb, core_got = best(lambda: slic_core(planes, seg_y, seg_x, step, step_y, step_x), args.repeats)
        same = bool(np.array_equal(want, got) and np.array_equal(core_want, core_got) and np.array_equal(want, core_got))
        rows.append((t_sk, t_nb, tc_sk, tc_nb, same))
        print(f"{name:<34}{t_sk:>10.3f}{t_nb:>10.3f}{tc_sk:>10.3f}{tc_nb:>10.3f}  {same}")
    m = np.mean([r[:4] for r in rows], axis=0)
    print(f"{'mean s/frame':<34}{m[0]:>10.3f}{m[1]:>10.3f}{m[2]:>10.3f}{m[3]:>10.3f}  {all(r[4] for r in rows)}")
    print(f"skimage / numba: whole slic {m[0] / m[1]:.2f}x, core {m[2] / m[3]:.2f}x")


if __name__ == "__main__":
    main()
