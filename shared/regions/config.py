"""The options of region grouping, shared by `preprocess regions` (which writes the region store)
and `evaluate proposals` (which scores the same grouping against ground truth), and how they
resolve to the grouping's parameters at a working size."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Collection

import click

from shared.config import config_hash, field
from shared.executor import backend_field, scheduler_field
from shared.frames import Frame, aspect_size
from shared.presets import apply_preset
from shared.regions.depth_rgb import DepthRgbParams
from shared.regions.depth_source import DepthSpec, parse_depth_spec
from shared.regions.grouping import GroupingParams
from shared.frames import DataError
from shared.stage import StageConfig, output_dir, read_pointer

PROPOSALS = ["depth", "depth-rgb", "felzenszwalb", "gt"]
DEPTH_METHODS = ("depth", "depth-rgb")  # the proposal methods that use depth
DEFAULT_SIZE = {"cityscapes": (384, 768), "kitti": (384, 1280)}
ASPECT_DATASETS = ("folder", "video")  # the user's own footage: the working size follows the frames' aspect
PAPER = GroupingParams()
RGB = DepthRgbParams()
PAPER_HEIGHT = 384
# DEMO_SIZE shrinks the default working size of real datasets by this factor (an empty --size only:
# the size the user gives is used as it is)
DEMO_DIVISOR = {"": 1, "small": 2, "tiny": 4}


@dataclass
class RegionsConfig(StageConfig):
    """Coherent depth regions -> region store (docs/design.md#region-grouping)."""

    proposals: str = field("depth", "region proposals: depth (the paper's), depth-rgb (the paper's terms weighed by "
                                    "how far the depth can be trusted, plus colour: for weak depth), felzenszwalb "
                                    "(appearance only), gt (ground-truth instance components, the upper bound)",
                           choices=PROPOSALS)
    depth: str = field("", "depth source: gt | files:DIR | model:CKPT (empty = gt for synthetic, required otherwise)")
    depth_kind: str = field("depth", "files: the maps hold depth or disparity", choices=["depth", "disparity"])
    depth_scale: float = field(1.0, "files: value = raw / scale (e.g. 256 for KITTI 16-bit PNG)", bounds="(0, inf)")
    max_invalid_depth: float = field(0.0, "fraction of NaN/inf/non-positive depth pixels tolerated (filled from "
                                          "the nearest valid pixel); above it the frame is bad", bounds="[0, 1]")
    device: str = field("auto", "model depth: torch device; auto = cuda when a GPU is present, else cpu", hash=False)
    size: str = field("", "working size HEIGHTxWIDTH (empty = per dataset: cityscapes 384x768, kitti 384x1280, "
                          "folder/video 384 rows and the width of the frames' aspect rounded to a multiple of 32, "
                          "synthetic native)")
    n_segments: int = field(PAPER.n_segments, "SLIC superpixels (scaled down at demo sizes)", bounds="[1, inf)")
    compactness: float = field(PAPER.compactness, "SLIC compactness", bounds="(0, inf)")
    sigma: float = field(PAPER.sigma, "SLIC Gaussian smoothing", bounds="[0, inf)")
    w_ocln: float = field(PAPER.w_ocln, "weight of the occlusion term D_ocln in W", bounds="[0, inf)")
    w_sup: float = field(PAPER.w_sup, "weight of the support term D_sup in W", bounds="[0, inf)")
    bias: float = field(PAPER.bias, "bias inside W = sigmoid(w_ocln D_ocln + w_sup D_sup + bias)", bounds="(-inf, inf)")
    t_e: float = field(PAPER.t_e, "a community whose every outgoing edge W exceeds this is final", bounds="[0, 1]")
    min_height: int = field(PAPER.min_height, "region filter: min bounding-box height, px (scaled at demo sizes)",
                            bounds="[0, inf)")
    min_width: int = field(PAPER.min_width, "region filter: min bounding-box width, px (scaled at demo sizes)",
                           bounds="[0, inf)")
    seed: int = field(PAPER.seed, "InfoMap seed", bounds="[0, inf)")
    trials: int = field(PAPER.trials, "InfoMap trials per level", bounds="[1, inf)")
    # depth-rgb's own knobs: hash=False because they enter the store hash through `regions_hash` only when
    # --proposals depth-rgb, so the other methods' store names (and reuse) do not change with them
    w_app: float = field(RGB.w_app, "depth-rgb: weight of the colour difference (CIE76 delta E) in W", hash=False,
                         bounds="[0, inf)")
    tau_res: float = field(RGB.tau_res, "depth-rgb: plane-fit residual at which a normal is trusted 1/e", hash=False,
                           bounds="(0, inf)")
    tau_plane: float = field(RGB.tau_plane, "depth-rgb: point-to-plane gap (relative) at which two superpixels stop "
                                            "being one plane", hash=False, bounds="(0, inf)")
    merge_k: float = field(RGB.merge_k, "depth-rgb: region-count knob of the merge (larger = fewer, larger regions; "
                                        "10 gives about 90 regions on a 384x768 Cityscapes frame)", hash=False,
                           bounds="(0, inf)")
    min_pixels: int = field(RGB.min_pixels, "depth-rgb: smaller regions join their lowest-W neighbour (pixels at "
                                            "384 rows)", hash=False, bounds="[0, inf)")
    small_per_k: float = field(RGB.small_per_k, "depth-rgb, weak depth: regions under this x merge_k pixels (at 384 "
                                                "rows) join their lowest-W neighbour too", hash=False, bounds="[0, inf)")
    precise_q: float = field(RGB.precise_q, "depth-rgb: frames of at least this depth precision are grouped by the "
                                            "mean-W merge, the others by Felzenszwalb and Huttenlocher's", hash=False,
                             bounds="[0, inf)")
    mean_k_half: float = field(RGB.mean_k_half, "depth-rgb, precise depth: the mean-W merge stops at W = merge_k / "
                                                "(merge_k + this)", hash=False, bounds="(0, inf)")
    superpixel_factor: float = field(RGB.superpixel_factor, "depth-rgb: SLIC makes this many times n_segments "
                                                            "superpixels", hash=False, bounds="(0, inf)")
    absorb_filtered: bool = field(RGB.absorb_filtered, "depth-rgb: regions the region filter would drop join their "
                                                       "lowest-W neighbour first", hash=False)
    felz_scale: float = field(300.0, "felzenszwalb proposals: scale", bounds="(0, inf)")
    felz_sigma: float = field(0.8, "felzenszwalb proposals: sigma", bounds="[0, inf)")
    felz_min_size: int = field(50, "felzenszwalb proposals: min component size, px", bounds="[0, inf)")
    max_frames: int = field(0, "process only the first N frames of the index (0 = all)", bounds="[0, inf)")
    chunk_size: int = field(8, "frames per HDF5 chunk", bounds="[1, inf)")
    workers: int = field(os.cpu_count() or 1, "parallel worker processes", hash=False, bounds="[1, inf)")
    backend: str = backend_field()
    scheduler: str = scheduler_field()
    strict: bool = field(False, "stop before writing anything if any frame is bad (default: skip and report it)",
                         hash=False)


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"--size {text!r} is not HEIGHTxWIDTH, e.g. 384x768") from None
    if h < 8 or w < 8:
        raise click.BadParameter(f"--size {text!r} is too small")
    return h, w


def common_size(frames: list[Frame]) -> tuple[int, int]:
    """(height, width) most frames have (a tie: the first frame's)."""
    counts: dict[tuple[int, int], int] = {}
    for f in frames:
        counts[(f.height, f.width)] = counts.get((f.height, f.width), 0) + 1
    return max(counts.items(), key=lambda kv: kv[1])[0]


def working_size(cfg: RegionsConfig, frames: list[Frame]) -> tuple[int, int]:
    if cfg.size:
        return parse_size(cfg.size)
    if cfg.dataset == "synthetic":
        return frames[0].height, frames[0].width
    h, w = aspect_size(*common_size(frames)) if cfg.dataset in ASPECT_DATASETS else DEFAULT_SIZE[cfg.dataset]
    div = DEMO_DIVISOR[cfg.demo_size]
    return h // div, w // div


def demo_grouping(size: tuple[int, int]) -> dict[str, int]:
    """The paper's pixel constants (set for 384-pixel-high images) at working size (H, W): a demo
    preset. Superpixels no smaller than 3x3 pixels; filter boxes in proportion to the height."""
    h, w = size
    ratio = min(h / PAPER_HEIGHT, 1.0)
    return {"n_segments": int(min(PAPER.n_segments, h * w // 9)),
            "min_height": max(2, round(PAPER.min_height * ratio)),
            "min_width": max(2, round(PAPER.min_width * ratio))}


def grouping_params(cfg: RegionsConfig, size: tuple[int, int], explicit: Collection[str] = ()) -> GroupingParams:
    """The config's constants; at a demo size, the pixel constants the user did not set follow the
    image (the config itself keeps the paper's values, which key the region store)."""
    scaled = apply_preset(cfg, {cfg.demo_size: demo_grouping(size)} if cfg.demo_size else {}, explicit)
    return GroupingParams(n_segments=scaled.n_segments, compactness=cfg.compactness, sigma=cfg.sigma,
                          w_ocln=cfg.w_ocln, w_sup=cfg.w_sup, bias=cfg.bias, t_e=cfg.t_e,
                          min_height=scaled.min_height, min_width=scaled.min_width, seed=cfg.seed,
                          trials=cfg.trials)


def depth_spec(cfg: RegionsConfig) -> DepthSpec:
    try:
        return parse_depth_spec(cfg.depth, cfg.dataset, cfg.depth_kind, cfg.depth_scale, cfg.device)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


def depth_rgb_params(cfg: RegionsConfig) -> DepthRgbParams:
    """depth-rgb's constants from the config: every DepthRgbParams field the config has an option for (sizes
    are in pixels at 384 rows, so no demo-size scaling); the others keep their defaults."""
    return DepthRgbParams(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(DepthRgbParams)
                             if hasattr(cfg, f.name)})


def regions_hash(cfg: RegionsConfig) -> str:
    """The store / report hash: the config's, plus depth-rgb's knobs when that is the method (so adding them
    left the hash of every other method's store as it was)."""
    extra = {"depth_rgb": dataclasses.asdict(depth_rgb_params(cfg))} if cfg.proposals == "depth-rgb" else None
    return config_hash(cfg, extra=extra)


def recorded_depth(cfg: StageConfig, proposals: str = "depth") -> tuple[str, Path] | None:
    """(depth, store): the --depth the current region store of `proposals` was built with (its saved
    config; "" is the dataset's default), so later stages can use the same source. None when no store
    is recorded or it saved no depth."""
    import json

    if not output_dir(cfg, "regions", f"{proposals}.current").is_file():
        return None
    try:
        store = read_pointer(cfg, "regions", proposals)
        saved = json.loads((store / "config.json").read_text())
    except (DataError, OSError, ValueError):
        return None
    depth = (saved.get("config") or saved).get("depth")
    return (str(depth), store) if depth is not None else None
