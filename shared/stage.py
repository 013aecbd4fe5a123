"""What every stage entry point shares: the common config fields, where a dataset lives, where
outputs go, and getting the frame index (building the synthetic city first when it is missing)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from shared.config import field
from shared.frames import DataError, Frame, load_index, save_index

DATASETS = ["synthetic", "kitti", "cityscapes", "folder", "kitti-semantic"]
DEMO_SIZES = ["", "tiny", "small"]


@dataclass
class StageConfig:
    """Fields every stage takes (the Makefile passes them as DATASET, DATA_ROOT, OUT, DEMO_SIZE)."""

    dataset: str = field("synthetic", "dataset reader", choices=DATASETS)
    data_root: str = field("", "dataset root in its official layout (synthetic: default <out>/synthetic/city-<size>)")
    out: str = field("runs", "output root; stages write under <out>/<dataset>/", hash=False)
    demo_size: str = field("", "sizing preset for quick CPU runs: tiny | small (empty = full size)", choices=DEMO_SIZES)


def dataset_root(cfg: StageConfig) -> Path:
    if cfg.data_root:
        return Path(cfg.data_root)
    if cfg.dataset == "synthetic":
        return Path(cfg.out) / "synthetic" / f"city-{cfg.demo_size or 'full'}"
    raise click.UsageError(f"DATASET={cfg.dataset} needs DATA_ROOT (the dataset in its official layout)")


def output_dir(cfg: StageConfig, *parts: str) -> Path:
    """<out>/<dataset>[-<demo_size>]/<parts...>: demo runs never mix with full-size outputs."""
    tag = cfg.dataset + (f"-{cfg.demo_size}" if cfg.demo_size else "")
    return Path(cfg.out, tag, *parts)


def ensure_synthetic_city(cfg: StageConfig) -> Path:
    """Render the built-in synthetic city for this demo size unless it is already complete."""
    root = dataset_root(cfg)
    if cfg.dataset != "synthetic" or cfg.data_root:
        return root
    from preprocess.synth import city_is_complete, generate_preset  # lazy: numba compile cost

    if city_is_complete(root):
        click.echo(f"synthetic city: reusing {root}")
    else:
        t0 = time.perf_counter()
        generate_preset(root, cfg.demo_size or "full")
        click.echo(f"synthetic city: rendered into {root} in {time.perf_counter() - t0:.1f} s")
    return root


def frames_for(cfg: StageConfig) -> list[Frame]:
    """The frame index of the configured dataset (cached as <out>/<dataset>/index.jsonl)."""
    from shared.datasets import build_index

    root = ensure_synthetic_city(cfg)
    frames = build_index(cfg.dataset, root)
    if not frames:
        raise DataError(root, f"no frames found for dataset {cfg.dataset}")
    save_index(frames, output_dir(cfg, "index.jsonl"))
    return frames


def cached_frames(cfg: StageConfig) -> list[Frame]:
    p = output_dir(cfg, "index.jsonl")
    return load_index(p) if p.is_file() else frames_for(cfg)


def write_pointer(cfg: StageConfig, stage: str, name: str, target: Path) -> Path:
    """Record `target` as the current output of `stage` (e.g. regions/depth.current), so the next
    stage finds it without recomputing the config hash: `make shards` follows regions, `make train`
    follows shards."""
    p = output_dir(cfg, stage, f"{name}.current")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(str(Path(target).resolve()) + "\n")
    tmp.replace(p)
    return p


def read_pointer(cfg: StageConfig, stage: str, name: str) -> Path:
    p = output_dir(cfg, stage, f"{name}.current")
    if not p.is_file():
        raise DataError(p, f"no {stage} output recorded yet (run `make {stage}` for this DATASET/DEMO_SIZE first)")
    target = Path(p.read_text().strip())
    if not target.exists():
        raise DataError(target, f"recorded in {p} but missing (delete {p} and rerun `make {stage}`)")
    return target
