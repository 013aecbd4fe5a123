"""What every stage entry point shares: the common config fields, where a dataset lives, where
outputs go, and getting the frame index (building the synthetic city first when it is missing)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from shared.atomic import write_json, write_text
from shared.config import field
from shared.frames import DataError, Frame, link_sequences, load_index, save_index

DATASETS = ["synthetic", "kitti", "cityscapes", "folder", "kitti-semantic", "video"]
DEMO_SIZES = ["", "tiny", "small"]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StageConfig:
    """Fields every stage takes (the Makefile passes them as DATASET, DATA_ROOT, OUT, DEMO_SIZE)."""

    dataset: str = field("synthetic", "dataset reader", choices=DATASETS)
    data_root: str = field("", "dataset root in its official layout (synthetic: default <out>/synthetic/city-<size>)")
    out: str = field("runs", "output root; stages write under <out>/<dataset>[-<demo-size>]/", hash=False)
    demo_size: str = field("", "sizing preset for quick CPU runs: tiny | small (empty = full size)", choices=DEMO_SIZES)
    # DATASET=video's frame selection; hashed only when set, so the other datasets' output names stay as they were
    stride: int = field(1, "video: keep every N-th frame (1 = all)", bounds="[1, inf)", hash="set")
    fps: float = field(0.0, "video: keep the first frame at or after each 1/FPS s, by timestamp (0 = use --stride)",
                       bounds="[0, inf)", hash="set")
    start: float = field(0.0, "video: first second kept", bounds="[0, inf)", hash="set")
    end: float = field(0.0, "video: keep frames before this second (0 = to the end)", bounds="[0, inf)", hash="set")


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


# this process's fault injection (shared/faults.py): a stage started from here never inherits it
_OWN_ENV = ("CPCDR_KILL_AT", "CPCDR_KILL_COUNT")


def run_stage(package: str, command: str, args: list[str], about: str | os.PathLike, log: Path | None = None,
              echo=None) -> None:
    """Run `python -m <package> <command> <args>` in a fresh interpreter from the project root.

    The one way a stage starts another where an import cannot do it: shared/ imports no stage and a stage
    no other stage (docs/design.md#layering), and the ablation runs every cell's training in a process of
    its own. Output goes to `log` (appended, after the command line) or to this terminal; `echo` shows
    the command first. A non-zero exit raises DataError naming `about` (what the command was to make), the
    command and the log."""
    cmd = [sys.executable, "-m", package, command, *args]
    shown = "python -m " + " ".join(cmd[2:])
    if echo is not None:
        echo("  $ " + shown)
    env = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
    if log is None:
        code = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env).returncode
    else:
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            code = subprocess.run(cmd, cwd=PROJECT_ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise DataError(about, f"`{shown}` exited {code}" + (f"; its output is in {log}" if log else ""))


def ensure_synthetic_city(cfg: StageConfig) -> Path:
    """Render the built-in synthetic city for this demo size unless it is already complete.

    Rendering is the `preprocess synth` stage's job: it runs as that command (its public interface),
    so shared/ never imports a stage."""
    root = dataset_root(cfg)
    if cfg.dataset != "synthetic" or cfg.data_root:
        return root
    from shared.datasets.synthetic import city_is_complete

    if city_is_complete(root):
        click.echo(f"synthetic city: reusing {root}")
        return root
    t0 = time.perf_counter()
    run_stage("preprocess", "synth", ["--dataset", "synthetic", "--out", str(Path(cfg.out).resolve()),
                                      "--demo-size", cfg.demo_size], root)
    if not city_is_complete(root):
        raise DataError(root, "rendering the synthetic city left it incomplete")
    click.echo(f"synthetic city: rendered into {root} in {time.perf_counter() - t0:.1f} s")
    return root


UNLABELLED = ("folder", "video")  # the user's own footage: the readers find no labels


def no_labels(cfg: StageConfig, what: str) -> str:
    """Why a stage that scores against ground truth cannot run on DATASET, in one line."""
    return (f"DATASET={cfg.dataset} has no labels, and {what} needs them (DATASET=cityscapes, kitti-semantic or "
            "synthetic have them); index, depth, depth-infer, regions, shards, train and eval's feature pictures run "
            "without labels")


def video_options(cfg: StageConfig) -> dict[str, float]:
    """The video reader's frame selection; the other readers take none (and refuse one that is set)."""
    chosen = {k: getattr(cfg, k) for k in ("stride", "fps", "start", "end")}
    if cfg.dataset == "video":
        if cfg.stride != 1 and cfg.fps > 0:
            raise click.UsageError("give --stride or --fps, not both")
        return chosen
    typed = [f"--{k}" for k, v in chosen.items() if v != (1 if k == "stride" else 0)]
    if typed:
        raise click.UsageError(f"{', '.join(typed)}: only for DATASET=video")
    return {}


def frames_for(cfg: StageConfig, strict: bool = False, verify: bool = False, echo=click.echo) -> list[Frame]:
    """The frame index of the configured dataset (cached as <out>/<dataset>/index.jsonl). Images
    that cannot be read are left out, listed (echo, and index.skipped.json beside the index); with
    `strict` they stop the stage before anything is written. The readers look at image headers;
    `verify` also decodes every image (finds truncated files)."""
    from shared.datasets import build_index

    root = ensure_synthetic_city(cfg)
    skipped: list[dict[str, str]] = []
    frames = build_index(cfg.dataset, root, skipped=skipped, **video_options(cfg))
    if verify:
        from tqdm import tqdm

        from shared.imageio import read_rgb

        bad = set()
        for f in tqdm(frames, desc="verify images", unit="img"):
            try:
                read_rgb(f.image)
            except DataError as e:
                skipped.append({"path": e.path, "problem": e.problem})
                bad.add(f.id)
        if bad:  # neighbours of a left-out frame are linked again: a gap ends a run of frames
            frames = link_sequences([dataclasses.replace(f, prev=None, next=None) for f in frames if f.id not in bad])
    if skipped:
        lines = [f"  {s['path']}: {s['problem']}" for s in skipped]
        if strict:
            raise DataError(skipped[0]["path"], f"--strict: {len(skipped)} unreadable image(s), nothing written:\n"
                                                + "\n".join(lines))
        echo(f"index: left out {len(skipped)} unreadable image(s) (listed in "
             f"{output_dir(cfg, 'index.skipped.json')}):\n" + "\n".join(lines[:10])
             + (f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""))
    if not frames:
        raise DataError(root, f"no frames found for dataset {cfg.dataset}"
                              + (f" ({len(skipped)} unreadable images left out)" if skipped else ""))
    save_index(frames, output_dir(cfg, "index.jsonl"), root=cfg.out)
    write_json(output_dir(cfg, "index.skipped.json"), skipped)
    return frames


def cached_frames(cfg: StageConfig) -> list[Frame]:
    p = output_dir(cfg, "index.jsonl")
    return load_index(p) if p.is_file() else frames_for(cfg)


def make_command(target: str, config: dict, **variables: str) -> str:
    """The `make` line that runs `target` for the dataset, demo size and output root of a saved
    config (`config.json` / a manifest's config): what a message tells the user to run."""
    parts = [f"make {target}", f"DATASET={config.get('dataset', 'synthetic')}"]
    for key, var in (("data_root", "DATA_ROOT"), ("demo_size", "DEMO_SIZE"), ("out", "OUT")):
        if config.get(key):
            parts.append(f"{var}={config[key]}")
    if config.get("proposals", "depth") != "depth":
        parts.append(f"PROPOSALS={config['proposals']}")
    parts += [f"{k}={v}" for k, v in variables.items()]
    return "`" + " ".join(parts) + "`"


def current_out(recorded: str, folder: str | os.PathLike) -> str:
    """The OUT a message about a stage's output folder <out>/<dataset>[-<demo>]/<stage>/<name> names: the
    OUT its config recorded while that still holds the folder (as the user typed it, often relative),
    else the root the folder lies in now (the tree was moved or copied)."""
    parents = Path(os.path.abspath(folder)).parents
    here = parents[min(2, len(parents) - 1)]
    return recorded if recorded and Path(recorded).resolve() == here.resolve() else str(here)


def portable_path(target: str | os.PathLike, folder: str | os.PathLike, root: str | os.PathLike) -> str:
    """How a file in `folder` records `target`: relative to `folder` when the target lies inside
    the output root `root` (so a moved or copied output tree still finds it, in its new place),
    else absolute (a dataset outside the tree does not move with it)."""
    target, folder, root = (Path(os.path.abspath(p)) for p in (target, folder, root))
    if target == root or root in target.parents:
        return os.path.relpath(target, folder)
    return str(target)


def from_portable(text: str, folder: str | os.PathLike) -> Path:
    """The path a `portable_path` text in `folder` names (absolute texts, as older files hold, as they are)."""
    return Path(os.path.normpath(Path(folder).absolute() / text))


def write_pointer(cfg: StageConfig, stage: str, name: str, target: Path) -> Path:
    """Record `target` as the current output of `stage` (e.g. regions/depth.current), so the next
    stage finds it without recomputing the config hash: `make shards` follows regions, `make train`
    follows shards. The pointer holds the path relative to its own folder (docs/design.md#pointers)."""
    p = output_dir(cfg, stage, f"{name}.current")
    return write_text(p, portable_path(Path(target).resolve(), p.parent.resolve(), Path(cfg.out).resolve()) + "\n")


def read_pointer(cfg: StageConfig, stage: str, name: str) -> Path:
    p = output_dir(cfg, stage, f"{name}.current")
    if not p.is_file():
        raise DataError(p, f"no {stage} output recorded yet (run `make {stage}` for this DATASET/DEMO_SIZE first)")
    target = from_portable(p.read_text().strip(), p.parent.resolve())
    if not target.exists():
        raise DataError(target, f"recorded in {p} but missing (delete {p} and rerun `make {stage}`)")
    return target
