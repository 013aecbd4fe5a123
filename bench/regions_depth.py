"""How the paper's depth regions follow the depth they are grouped on, against SLIC and Felzenszwalb at
matched region counts, in one run (docs/depth.md#what-the-regions-need-from-the-depth).

    .venv/bin/python bench/regions_depth.py [--sizes 96x192,144x288,192x384] [--low 64x128,96x192]
                                            [--model CKPT ...] [--sequences 2 --frames 6 --seed 0]

For each working size it renders the tiny city's streets at that size (the `preprocess synth` stage,
kept under --out and reused) and scores every labelled frame with the project's proposal metrics
(`evaluate.proposals.score_frame`, the same code as `make proposals`):

  exact            the city's exact depth at the working size
  exact@HxW        the exact disparity area-averaged down to HxW (a depth network's output size) and
                   bilinearly upsampled to the working size, as the predictor upsamples its output:
                   perfect depth with a network's resolution
  model:NAME       each --model checkpoint (`make depth`'s depth_net.pt), as `make regions` uses it

Each row gives the paper's regions (GT-query mIoU, regions per frame) and SLIC and Felzenszwalb at the
same count, with the per-frame difference's std over frames: a difference smaller than that std is
not one. Grouping constants are the paper's (scaled like the demo presets: `demo_grouping`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from evaluate.proposals import (MethodSummary, ProposalsConfig, paired_differences,  # noqa: E402
                                score_frame)
from shared.datasets.synthetic import city_is_complete  # noqa: E402
from evaluate.verdict import count_mismatch  # noqa: E402
from shared.datasets import build_index  # noqa: E402
from shared.regions.config import grouping_params, parse_size  # noqa: E402
from shared.regions.depth_source import DepthSource, parse_depth_spec  # noqa: E402
from shared.stage import run_stage  # noqa: E402


def low_resolution(depth: np.ndarray, low: tuple[int, int]) -> np.ndarray:
    """depth [H, W] -> the same depth seen through a [h, w] output: disparity area-averaged to `low`,
    bilinearly upsampled back (what DepthPredictor does with its own output) -> float32 [H, W]."""
    import torch
    import torch.nn.functional as F

    disp = torch.from_numpy(1.0 / depth.astype(np.float64))[None, None]  # [1,1,H,W]
    small = F.interpolate(disp, low, mode="area")
    up = F.interpolate(small, depth.shape, mode="bilinear", align_corners=False)[0, 0]
    return (1.0 / up).numpy().astype(np.float32)


class Condition:
    """A depth source with the interface score_frame uses: load(frame, size, rgb) -> depth [H, W]."""

    def __init__(self, name: str, exact: DepthSource, low: tuple[int, int] | None = None,
                 model: DepthSource | None = None):
        self.name, self.exact, self.low, self.model = name, exact, low, model

    def load(self, frame, size, rgb):
        if self.model is not None:
            return self.model.load(frame, size, rgb)
        depth = self.exact.load(frame, size, rgb)
        return depth if self.low is None else low_resolution(depth, self.low)


def city(out: Path, size: tuple[int, int], sequences: int, frames: int, seed: int) -> Path:
    root = out / f"city-{sequences}x{frames}-{size[0]}x{size[1]}-s{seed}"
    if not city_is_complete(root):
        run_stage("preprocess", "synth", ["--dataset", "synthetic", "--data-root", str(root.resolve()),
                                          "--sequences", str(sequences), "--frames", str(frames),
                                          "--size", f"{size[0]}x{size[1]}", "--seed", str(seed)], root,
                  log=out / f"{root.name}.log")
        print(f"rendered {root} (log {out / (root.name + '.log')})")
    return root


def score(condition: Condition, frames, size, cfg: ProposalsConfig) -> dict[str, MethodSummary]:
    params = grouping_params(cfg, size)
    methods = {m: MethodSummary() for m in ("depth", "slic", "felzenszwalb")}
    for i, f in enumerate(frames):
        r = score_frame(f, i, size, condition, params, cfg, Path("."))  # overlays 0: nothing written
        for m in methods:
            methods[m].frames.append(r["scores"][m])
    return methods


def row(name: str, methods: dict[str, MethodSummary]) -> str:
    s = {m: v.summary() for m, v in methods.items()}
    cells = [f"{name:<18}", f"{s['depth']['gt_query_miou']:6.1f} {s['depth']['regions_per_frame']:6.1f}"]
    for base in ("slic", "felzenszwalb"):
        p = paired_differences(methods["depth"].frames, methods[base].frames)
        count = s[base]["regions_per_frame"]
        off = count_mismatch(count, s["depth"]["regions_per_frame"])
        cells.append(f"{s[base]['gt_query_miou']:6.1f} {count:6.1f}{'!' if off else ' '} "
                     f"{s['depth']['gt_query_miou'] - s[base]['gt_query_miou']:+6.1f} ±{p['frame_std']:4.1f}")
    return "  ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="96x192,144x288,192x384", help="working sizes HxW, comma-separated")
    ap.add_argument("--low", default="64x128,96x192", help="depth-network output sizes for exact@HxW")
    ap.add_argument("--model", action="append", default=[], metavar="CKPT",
                    help="a depth checkpoint to score too (repeatable); scored at every size")
    ap.add_argument("--sequences", type=int, default=2, help="streets (the last is val; all are scored)")
    ap.add_argument("--frames", type=int, default=6, help="frames per street")
    ap.add_argument("--seed", type=int, default=0, help="city seed")
    ap.add_argument("--out", default="runs/bench-regions-depth", help="where the rendered cities are kept")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"regions vs depth: {args.sequences} x {args.frames} frames, city seed {args.seed}, load {load:.2f} "
          f"on {os.cpu_count()} cores")
    print("GT-query mIoU and regions/frame; baselines at the paper's count, then paper - baseline ± std over frames "
          "(! = count more than 10 % away)")
    print(f"{'depth':<18}  {'paper regions':>13}  {'SLIC':>28}  {'Felzenszwalb':>28}")
    for text in args.sizes.split(","):
        size = parse_size(text)
        t0 = time.perf_counter()
        root = city(out, size, args.sequences, args.frames, args.seed)
        frames = [f for f in build_index("synthetic", root) if f.semantic and f.instance]
        cfg = ProposalsConfig(dataset="synthetic", data_root=str(root), out=str(out), demo_size="tiny",
                              size=text, overlays=0)
        exact = DepthSource(parse_depth_spec("gt", "synthetic"))
        conditions = [Condition("exact", exact)]
        # a network output as large as the working size is the exact depth itself: not a row
        conditions += [Condition(f"exact@{low}", exact, low=parse_size(low)) for low in args.low.split(",")
                       if low and parse_size(low)[0] < size[0]]
        conditions += [Condition(f"model:{Path(m).parent.name}", exact, model=DepthSource(parse_depth_spec(
            f"model:{m}", "synthetic"))) for m in args.model]
        print(f"working size {size[0]}x{size[1]}, {len(frames)} labelled frames")
        for c in conditions:
            print(row(c.name, score(c, frames, size, cfg)), flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
