"""How fast the synthetic city renders, on one core.

    .venv/bin/python bench/synth_speed.py [--frames 10] [--size 384x768]

Prints: numba compile time (cold cache), render-only frames/s at the given size, frames/s with
the files written, and the wall time of the tiny and small presets (what `make demo` pays).
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preprocess import synth  # noqa: E402
import numpy as np  # noqa: E402

from preprocess.synth_render import render, render_points  # noqa: E402
from preprocess.synth_scene import pixel_K  # noqa: E402


def cold_compile_seconds() -> float:
    """Import + first tiny render in a fresh interpreter with an empty numba cache."""
    code = ("import time; t=time.perf_counter(); from preprocess.synth_render import render; "
            "from preprocess.synth_scene import two_planes, pixel_K, level_pose; "
            "render(two_planes(), pixel_K((8, 16)), level_pose(), (8, 16)); print(time.perf_counter()-t)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", default="384x768")
    args = ap.parse_args()
    H, W = synth.parse_size(args.size)

    print(f"numba compile (cold cache, import + first render): {cold_compile_seconds():.1f} s")

    params = {"sequences": 1, "frames": args.frames, "size": [H, W], "seed": 0, "fx": synth.DEFAULT_FX,
              "format": synth.FORMAT_VERSION}
    poses, _, world = synth.sequence_world(params, 0)
    K = pixel_K((H, W))
    render(world.scene_at(0, behind_x=poses[0][0, 3] - 3.0), K, poses[0], (H, W))  # warm
    t0 = time.perf_counter()
    for i, T in enumerate(poses):
        render(world.scene_at(i, behind_x=T[0, 3] - 3.0), K, T, (H, W))
    t_render = (time.perf_counter() - t0) / len(poses)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    t0 = time.perf_counter()
    for i, T in enumerate(poses[:3]):
        render_points(world.scene_at(i), K, T, uv)
    t_brute = (time.perf_counter() - t0) / 3
    print(f"render only at {H}x{W}: {1 / t_render:.2f} frames/s ({t_render * 1000:.0f} ms/frame, "
          f"{len(world.primitives)} primitives in the street)\n"
          f"  every ray against every primitive: {1 / t_brute:.2f} frames/s "
          f"(tiles + culling behind the camera = x{t_brute / t_render:.1f})")

    with tempfile.TemporaryDirectory() as tmp:
        res = synth.generate(Path(tmp) / "c", 1, args.frames, (H, W), seed=0, progress=False)
        print(f"render + write files at {H}x{W}: {res['frames'] / res['seconds']:.2f} frames/s "
              f"(writing = {100 * (1 - t_render * res['frames'] / res['seconds']):.0f} % of the time)")
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "c").rglob("*") if p.is_file()) / 2 ** 20
        print(f"  disk: {size_mb / res['frames']:.2f} MiB per frame")
        for name in ("tiny", "small"):
            t0 = time.perf_counter()
            synth.generate_preset(Path(tmp) / name, name)
            sequences, frames, size = synth.city_preset(name)
            n = sequences * frames
            dt = time.perf_counter() - t0
            print(f"preset {name:5s} ({sequences} x {frames} @ {size[0]}x{size[1]}): "
                  f"{dt:.1f} s, {n / dt:.1f} frames/s")
    sequences, frames, size = synth.city_preset("full")
    n = sequences * frames
    print(f"preset full  ({sequences} x {frames} @ {size[0]}x{size[1]}): "
          f"about {n * res['seconds'] / res['frames']:.0f} s estimated from the rate above")


if __name__ == "__main__":
    main()
