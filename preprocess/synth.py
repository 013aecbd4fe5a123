"""The built-in synthetic city: procedural street video with exact depth, labels, instances and poses.

Each sequence is one straight street (`preprocess.synth_scene.street`) driven along by a camera
at 1.6 m height in the right-hand lane with gentle yaw, pitch and sway; frames are ray cast with
numba (`preprocess.synth_render`). Everything derives from the seed: same seed = same bytes.

On-disk layout (read back by `shared.datasets.synthetic.read_synthetic`):

    <root>/city.json                      parameters, seed, sequences and splits; "complete": true is
                                          written LAST, after every frame file of every sequence
    <root>/<sequence>/cameras.json        intrinsics (normalised and pixel), per frame: index,
                                          cam_to_world (4x4 row-major, 16 floats), dynamic_instance_ids
    <root>/<sequence>/rgb/<index:06d>.png          uint8 RGB
    <root>/<sequence>/depth/<index:06d>.npy        float32 [H, W] metres, z in the camera frame, > 0
    <root>/<sequence>/labelIds/<index:06d>.png     uint8 Cityscapes labelIds
    <root>/<sequence>/instanceIds/<index:06d>.png  uint16 labelId*1000+k for things, labelId for stuff

Sequences are named seq00, seq01, ...; the last one is split "val" when there are two or more,
the others "train". Frames are consecutive (10 frames per second of driving at 0.8-1.2 m/frame).
Conventions (see `preprocess.synth_render`): world X along the street, Y left, Z up, road Z = 0;
camera frame x right, y down, z forward (OpenCV); square pixels, fx = 0.6 * W (about 80 deg
horizontal field of view), principal point at the image centre; the sky is a world-fixed box
about 250 m beyond the street, so depth is finite everywhere (at most about 350 m).

Moving objects (oncoming cars, a car ahead, walking people) are listed per frame in
cameras.json as `dynamic_instance_ids` (those visible in that frame) and for the whole sequence as
`moving_instance_ids`, so a photometric check can exclude them.

A killed render resumes: every file is written to a temporary name and renamed, a frame whose
four files exist is not rendered again, and city.json says "complete": false until the end.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import click
import numpy as np
from tqdm import tqdm

from shared.atomic import write_json
from shared.config import build_config, config_options, field
from shared.eta import Eta
from shared.executor import backend_field, scheduler_field
from shared.frames import DataError
from shared.datasets.synthetic import city_is_complete
from shared.imageio import read_label, write_npy, write_png
from shared.presets import apply_preset
from shared.stage import StageConfig, dataset_root

FORMAT_VERSION = 1
DEFAULT_FX = 0.6  # normalised by the width; square pixels, so fy = fx * W / H

# DEMO_SIZE -> the city's size (SynthConfig fields whose 0 / "" means "from the preset"); "" = full.
PRESETS: dict[str, dict] = {
    "": {"sequences": 8, "frames": 40, "size": "384x768"},
    "small": {"sequences": 3, "frames": 10, "size": "192x384"},
    "tiny": {"sequences": 2, "frames": 6, "size": "96x192"},
}
KINDS = ("rgb", "depth", "labelIds", "instanceIds")
SUFFIX = {"rgb": ".png", "depth": ".npy", "labelIds": ".png", "instanceIds": ".png"}


def sequence_name(s: int) -> str:
    return f"seq{s:02d}"


def frame_path(root: Path, sequence: str, kind: str, index: int) -> Path:
    return Path(root) / sequence / kind / f"{index:06d}{SUFFIX[kind]}"


def split_of(s: int, sequences: int) -> str:
    return "val" if sequences >= 2 and s == sequences - 1 else "train"


def _write_png(path: Path, arr: np.ndarray) -> None:
    """zlib level 3 encodes twice as fast as PIL's default 6 for 10 % more bytes on these noisy images."""
    write_png(path, arr, compress_level=3)


def _read_city(root: Path) -> Optional[dict]:
    p = Path(root) / "city.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _frame_done(root: Path, sequence: str, index: int) -> bool:
    return all(frame_path(root, sequence, k, index).is_file() for k in KINDS)


def _prepare_root(root: Path, params: dict) -> None:
    """Make `root` ready for a render with `params`: keep a matching partial render (resume),
    clear one made with other parameters, refuse a non-empty folder that is not a city."""
    city = _read_city(root)
    if city is None:
        if root.exists() and any(root.iterdir()):
            raise DataError(root, "folder is not empty and has no city.json; refusing to render a synthetic city into it")
    elif city.get("params") != params:
        (root / "city.json").unlink()
        for seq in city.get("sequences", []) + [{"name": sequence_name(s)} for s in range(city.get("params", {}).get("sequences", 0))]:
            d = root / seq["name"]
            if d.is_dir():
                shutil.rmtree(d)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "city.json", {"params": params, "complete": False}, indent=1)


def sequence_world(params: dict, s: int):
    """(camera-to-world poses, speed in m/frame, World) of sequence `s`: a pure function of the
    city parameters, so a test can cast extra rays into exactly the scene that was rendered."""
    from preprocess.synth_scene import drive, street

    rng = np.random.default_rng([params["seed"], s])
    poses, speed = drive(rng, params["frames"])
    world = street(rng, length=speed * params["frames"] + float(rng.uniform(60.0, 90.0)), speed=speed,
                   seed=int(params["seed"]) * 7919 + s)
    return poses, speed, world


def render_sequence(root: Path, s: int, params: dict, on_frame: Callable[[], None] = lambda: None) -> dict:
    """Render (or resume) sequence `s` of the city described by `params`; returns its summary."""
    from preprocess.synth_render import render
    from preprocess.synth_scene import pixel_K

    H, W = params["size"]
    frames = params["frames"]
    name = sequence_name(s)
    poses, speed, world = sequence_world(params, s)
    K = pixel_K((H, W), params["fx"])
    moving = world.dynamic_instances()
    cams = []
    rendered = 0
    for i in range(frames):
        pose = poses[i]
        if _frame_done(root, name, i):
            inst = read_label(frame_path(root, name, "instanceIds", i))
        else:
            # nothing entirely behind the camera can be seen (z < 0): skip it
            out = render(world.scene_at(i, behind_x=pose[0, 3] - 3.0), K, pose, (H, W))
            inst = out["instance"]
            _write_png(frame_path(root, name, "rgb", i), out["rgb"])
            write_npy(frame_path(root, name, "depth", i), out["depth"])
            _write_png(frame_path(root, name, "labelIds", i), out["label"])
            _write_png(frame_path(root, name, "instanceIds", i), inst.astype(np.uint16))
            rendered += 1
        present = set(np.unique(inst).tolist())
        cams.append({"index": i, "cam_to_world": [float(v) for v in pose.reshape(-1)],
                     "dynamic_instance_ids": [int(m) for m in moving if m in present]})
        on_frame()
    fx = params["fx"]
    fy = fx * W / H
    write_json(root / name / "cameras.json", {
        "sequence": name, "split": split_of(s, params["sequences"]), "width": W, "height": H,
        "fx": fx, "fy": fy, "cx": 0.5, "cy": 0.5, "K": pixel_K((H, W), fx).tolist(),
        "speed_m_per_frame": speed, "moving_instance_ids": [int(m) for m in moving], "frames": cams,
    }, indent=1)
    return {"name": name, "split": split_of(s, params["sequences"]), "frames": frames, "rendered": rendered}


def generate(out: str | os.PathLike, sequences: int, frames: int, size: tuple[int, int] = (384, 768),
             seed: int = 0, fx: float = DEFAULT_FX, progress: bool = True, workers: int = 1,
             backend: str = "loky", scheduler: str = "", echo: Callable[[str], None] | None = None) -> dict:
    """Render a city of `sequences` streets x `frames` frames at size (H, W) into `out`.

    Resumes a killed render with the same parameters; a finished city with the same parameters is
    left as it is. `workers` > 1 renders sequences in parallel processes, one task per sequence, on
    `backend` (shared.executor: loky, dask, ray; same bytes as one worker). `echo`: where the plan
    line and the time estimate go (None: silent). Returns a summary: root, frames, rendered (newly),
    seconds, reused."""
    root = Path(out)
    if sequences < 1 or frames < 1:
        raise ValueError(f"need at least one sequence and one frame, got {sequences} x {frames}")
    if not 0 <= seed < 2 ** 31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    H, W = (int(size[0]), int(size[1]))
    if H < 8 or W < 8:
        raise ValueError(f"image size {H}x{W} is too small")
    params = {"sequences": int(sequences), "frames": int(frames), "size": [H, W], "seed": int(seed),
              "fx": float(fx), "format": FORMAT_VERSION}
    t0 = time.perf_counter()
    if city_is_complete(root) and (_read_city(root) or {}).get("params") == params:
        return {"root": str(root), "frames": sequences * frames, "rendered": 0, "seconds": 0.0, "reused": True}
    _prepare_root(root, params)
    summaries = []
    jobs = min(workers, sequences) if backend != "loky" or (workers > 1 and sequences > 1) else 1
    if echo is not None:
        echo(f"synthetic city: plan: {sequences} sequences x {frames} frames = {sequences * frames} frames at {H}x{W} "
             f"(seed {seed}) into {root}, {jobs} worker(s) on the CPU ({backend}); the time estimate follows the "
             "first frames")
    eta = Eta("synthetic city", sequences * frames, "frame", echo or (lambda line: None))
    with tqdm(total=sequences * frames, desc="synthetic city", unit="frame", disable=not progress) as bar:
        if jobs == 1 and backend == "loky":
            for s in range(sequences):
                summaries.append(render_sequence(root, s, params, on_frame=lambda: (bar.update(1), eta.update(1))))
        else:
            from shared.executor import run_tasks

            tasks = [(root, s, params) for s in range(sequences)]
            for res in run_tasks(render_sequence, tasks, backend, scheduler, jobs, desc="synth"):
                summaries.append(res)
                bar.update(frames)
                eta.update(frames)
            summaries.sort(key=lambda m: m["name"])
    write_json(root / "city.json", {
        "params": params, "sequences": [{k: v for k, v in m.items() if k != "rendered"} for m in summaries],
        "conventions": {
            "world": "X along the street, Y left, Z up, metres; road plane Z = 0",
            "camera": "x right, y down, z forward (OpenCV); pose = camera-to-world 4x4 row-major",
            "depth": "float32 z in the camera frame, metres; sky is a world-fixed box about 250 m beyond the street",
            "pixels": "centre of pixel (row i, column j) at (j + 0.5, i + 0.5)",
        },
        "complete": True,
    }, indent=1)
    seconds = time.perf_counter() - t0
    return {"root": str(root), "frames": sequences * frames, "rendered": sum(m["rendered"] for m in summaries),
            "seconds": seconds, "reused": False}


def city_preset(name: str) -> tuple[int, int, tuple[int, int]]:
    """(sequences, frames per sequence, (H, W)) of the `tiny`, `small` or `full` city."""
    demo = "" if name == "full" else name
    if demo not in PRESETS:
        raise ValueError(f"unknown synthetic city preset {name!r}; choose one of tiny, small, full")
    cfg = resolved(SynthConfig(demo_size=demo))
    return cfg.sequences, cfg.frames, parse_size(cfg.size)


def generate_preset(root: str | os.PathLike, name: str, workers: int = 1) -> None:
    """Render the `tiny` (2 x 6 @ 96x192), `small` (3 x 10 @ 192x384) or `full` (8 x 40 @ 384x768)
    city with seed 0 into `root` (resuming / reusing what is there)."""
    sequences, frames, size = city_preset(name)
    generate(root, sequences, frames, size, seed=0, progress=True, workers=workers)


# ---------------------------------------------------------------------------------------------
# CLI


def parse_size(text: str) -> tuple[int, int]:
    """'384x768' -> (384, 768) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HEIGHTxWIDTH, e.g. 384x768") from None
    return h, w


@dataclass
class SynthConfig(StageConfig):
    """Render the built-in synthetic city (DATASET=synthetic). Unset sizes come from the preset
    named by --demo-size (tiny | small; empty = full)."""

    sequences: int = field(0, "number of streets (0 = from the preset)", bounds="[0, inf)")
    frames: int = field(0, "frames per street (0 = from the preset)", bounds="[0, inf)")
    size: str = field("", "image size HEIGHTxWIDTH, e.g. 384x768 (empty = from the preset)")
    seed: int = field(0, "random seed: same seed, same bytes", bounds="[0, inf)")
    fx: float = field(DEFAULT_FX, "focal length normalised by the image width (square pixels)", bounds="(0, inf)")
    workers: int = field(1, "parallel processes (one sequence each); output is the same for any number",
                         hash=False, bounds="[1, inf)")
    backend: str = backend_field()
    scheduler: str = scheduler_field()


def resolved(cfg: SynthConfig) -> SynthConfig:
    """The preset of cfg.demo_size in the fields left at 0 / "" (a field the caller set is kept)."""
    return apply_preset(cfg, PRESETS, explicit=())


@click.command("synth")
@config_options(SynthConfig)
def synth(**kwargs) -> None:
    """Render the synthetic city: RGB, depth, labelIds, instanceIds, poses.

    Writes into --data-root when given, else <out>/synthetic/city-<demo-size or full>."""
    cfg = build_config(SynthConfig, kwargs)
    if cfg.dataset != "synthetic":
        raise click.UsageError(f"synth renders the synthetic city; --dataset {cfg.dataset} makes no sense here")
    cfg = resolved(cfg)
    sequences, frames, size = cfg.sequences, cfg.frames, parse_size(cfg.size)
    root = dataset_root(cfg)
    res = generate(root, sequences, frames, size, seed=cfg.seed, fx=cfg.fx, workers=cfg.workers,
                   backend=cfg.backend, scheduler=cfg.scheduler, echo=click.echo)
    if res["reused"]:
        click.echo(f"synthetic city: {root} is already complete ({res['frames']} frames), nothing to do")
        return
    rate = res["rendered"] / res["seconds"] if res["seconds"] > 0 else float("inf")
    click.echo(f"synthetic city: wrote {res['rendered']} frames ({res['frames'] - res['rendered']} already there) "
               f"into {root} in {res['seconds']:.1f} s ({rate:.2f} frames/s); index it with "
               f"`python -m preprocess index --data-root {root}`")
