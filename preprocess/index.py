"""`python -m preprocess index`: build the frame index of a dataset and print what was found."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import click
from shared.atomic import refresh_only
from shared.config import build_config, config_options, field, save_config
from shared.frames import DataError, Frame
from shared.stage import StageConfig, frames_for, output_dir


@dataclass
class IndexConfig(StageConfig):
    verify: bool = field(False, "decode every image fully (finds truncated files; slow on big datasets)", hash=False)
    strict: bool = field(False, "stop before writing the index if an image is unreadable (default: leave it out "
                                "and list it)", hash=False)


def _builtin_intrinsics() -> dict[tuple[float, float, float, float], tuple[str, str]]:
    """The readers' built-in intrinsics -> (what they are, how to give real ones)."""
    from shared.datasets.cityscapes import DEFAULT_INTRINSICS as CITYSCAPES
    from shared.datasets.folder import DEFAULT_INTRINSICS as FOLDER

    return {CITYSCAPES: ("Cityscapes' typical camera (no camera/*.json found)",
                         "give real ones as camera/<split>/<city>/<city>_<seq>_<frame>_camera.json (Cityscapes' "
                         "camera package) beside leftImg8bit/"),
            FOLDER: ("a KITTI-like camera (no intrinsics.json found)",
                     'give real ones as intrinsics.json {"fx", "fy", "cx", "cy"} (normalised by the image size) '
                     "in the folder (a video: <video>.intrinsics.json beside it, or intrinsics.json in its folder)")}


def default_intrinsics_note(frames: list[Frame]) -> str | None:
    """One line saying how many frames use a reader's built-in intrinsics instead of their own camera:
    which values, and how to give real ones."""
    builtin = _builtin_intrinsics()
    counts = Counter(k for f in frames if (k := (f.fx, f.fy, f.cx, f.cy)) in builtin)
    if not counts:
        return None
    k, n = counts.most_common(1)[0]
    what, how = builtin[k]
    return (f"intrinsics   {n} of {len(frames)} frames use built-in default intrinsics: {what}, normalised "
            f"fx={k[0]:.3f} fy={k[1]:.3f} cx={k[2]:.3f} cy={k[3]:.3f}; {how}")


def summarise(frames: list[Frame]) -> list[str]:
    """Human-readable summary lines: counts, splits, sizes, intrinsics, labels, neighbours."""
    seqs = Counter(f.sequence for f in frames)
    sizes = Counter(f"{f.width}x{f.height}" for f in frames)
    splits = Counter(f.split for f in frames)
    intr = Counter(f"fx={f.fx:.3f} fy={f.fy:.3f} cx={f.cx:.3f} cy={f.cy:.3f}" for f in frames)
    with_both = sum(1 for f in frames if f.prev and f.next)
    return [
        f"frames       {len(frames)}",
        f"sequences    {len(seqs)} (frames per sequence: min {min(seqs.values())}, max {max(seqs.values())})",
        f"splits       " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())),
        f"resolution   " + ", ".join(f"{k} ({v})" for k, v in sizes.most_common()),
        f"intrinsics   " + "; ".join(f"{k} ({v})" for k, v in intr.most_common(3)) + " (normalised by image size)",
        f"labels       semantic {sum(f.semantic is not None for f in frames)}, "
        f"instance {sum(f.instance is not None for f in frames)}, depth {sum(f.depth is not None for f in frames)}",
        f"neighbours   {with_both} frames have both temporal neighbours (usable as depth-training targets)",
    ] + ([note] if (note := default_intrinsics_note(frames)) else []) + crop_notes(frames)


def crop_notes(frames: list[Frame]) -> list[str]:
    """One line per crop of video frames to the working size's aspect (shared.video.aspect_crop)."""
    from shared.video import ref_crop

    crops = Counter(c for f in frames if (c := ref_crop(f.image)))
    return [f"crop         {n} video frames are read as their centre {w}x{h} ({x} px off the left and right, {y} off "
            f"the top and bottom): the working size's aspect, scaled without a stretch; intrinsics moved with it"
            for (x, y, w, h), n in crops.most_common()]


@click.command("index")
@config_options(IndexConfig)
def index(**kwargs) -> None:
    """Build the frame index of DATASET and print a summary (frames, sequences, resolution, intrinsics, labels)."""
    cfg = build_config(IndexConfig, kwargs)
    t0 = time.perf_counter()
    out = output_dir(cfg, "index.jsonl")
    before = out.read_bytes() if out.is_file() else None  # the index is rewritten only when it changes
    try:
        frames = frames_for(cfg, strict=cfg.strict, verify=cfg.verify)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    with refresh_only(click.echo):  # the index is the output; its config.json names this run's OUT
        save_config(cfg, output_dir(cfg, "index.config.json"))
    for line in summarise(frames):
        click.echo(line)
    verb = "reused" if before is not None and out.read_bytes() == before else "wrote"
    click.echo(f"index: {verb} {len(frames)} frames {'in' if verb == 'reused' else 'into'} {out} "
               f"in {time.perf_counter() - t0:.1f} s" + (" (the dataset is unchanged)" if verb == "reused" else ""))
