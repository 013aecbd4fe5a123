"""Depth from a trained monocular depth checkpoint (`train depth`), one frame or a whole dataset.

Units: relative depth, one unknown global scale (shared/nets/depth_predictor.py says why and what
that means for the stages that read it).

    DepthPredictor(ckpt).predict(rgb uint8 [H,W,3]) -> float32 [H,W]   (shared/nets/depth_predictor.py)
    python -m preprocess depth-infer ...  -> <out>/<dataset>[-<demo>]/depth/pred-<hash>/<frame id>.npy

The command fans out over CPU processes (torch threads = 1 in each, one model per task), local or on
a Dask / Ray cluster (`--backend`, `--scheduler`: shared.executor), or batches frames on one CUDA
device (`--device cuda`). Files are written to a temporary
name and renamed, so a killed run resumes and skips the frames already written.
"""
from __future__ import annotations

import dataclasses
import hashlib
from itertools import groupby
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from shared.config import build_config, config_options, field, save_config
from shared.eta import Eta
from shared.executor import backend_field, run_tasks, scheduler_field
from shared.frames import DataError, Frame, odd_sized
from shared.stage import UNLABELLED, StageConfig, frames_for, output_dir, portable_path, read_pointer

# torch and the network are imported where they are used: `--help` stays light (docs/design.md#command-line)

# The working resolution of the regions stage (docs/design.md#constants); other datasets keep the image size.
WORKING_SIZE = {"cityscapes": (384, 768), "kitti": (384, 1280)}


# ----------------------------------------------------------------------------------------------
# `python -m preprocess depth`


@dataclass
class DepthInferConfig(StageConfig):
    checkpoint: str = field("", "depth checkpoint (default: the current `make depth` model of this DATASET/DEMO_SIZE)")
    height: int = field(0, "output height (0 = working size: cityscapes 384, kitti 384, folder/video the regions' "
                           "(384 rows, the frames' aspect), else the image's)",
                        bounds="[0, inf)")
    width: int = field(0, "output width (0 = working size: cityscapes 768, kitti 1280, folder/video the regions', "
                          "else the image's)",
                       bounds="[0, inf)")
    split: str = field("", "only frames of this split (empty = all)")
    device: str = field("auto", "auto = cuda when available; cpu = joblib worker processes; cuda = batches on one GPU",
                        choices=["auto", "cpu", "cuda"], hash=False)
    batch_size: int = field(16, "frames per batch on CUDA", hash=False, bounds="[1, inf)")
    workers: int = field(2, "CPU worker processes (torch threads = 1 each; on a cluster: its cores, for the "
                            "number of tasks)", hash=False, bounds="[1, inf)")
    backend: str = backend_field()
    scheduler: str = scheduler_field()
    strict: bool = field(False, "stop before writing anything if a frame is unreadable or of another size than its "
                                "sequence (default: skip it and list it)", hash=False)


def output_size(cfg: DepthInferConfig, frame: Frame) -> tuple[int, int]:
    if cfg.height and cfg.width:
        return cfg.height, cfg.width
    if cfg.dataset in UNLABELLED:  # the user's footage: the regions' size, which follows the frame's aspect
        from shared.regions.config import DEMO_DIVISOR, aspect_size

        h, w = aspect_size(frame.height, frame.width)
        return h // DEMO_DIVISOR[cfg.demo_size], w // DEMO_DIVISOR[cfg.demo_size]
    return WORKING_SIZE.get(cfg.dataset, (frame.height, frame.width))


def _infer_chunk(ckpt: str, jobs: list[tuple[str, str, tuple[int, int]]]) -> tuple[int, list[dict[str, str]]]:
    """One worker: load the model once, then (image, output path, size) -> .npy; returns how many
    were written and the unreadable images ({"path", "problem"}), which are skipped."""
    import torch

    from shared.imageio import read_rgb, write_npy
    from shared.nets.depth_predictor import DepthPredictor

    torch.set_num_threads(1)
    predictor = DepthPredictor(ckpt, "cpu")
    bad = []
    for image, out, size in jobs:
        try:
            rgb = read_rgb(image, size=size)
        except DataError as e:
            bad.append({"path": e.path, "problem": e.problem})
            continue
        write_npy(out, predictor.predict(rgb))
    return len(jobs) - len(bad), bad


def infer_dataset(cfg: DepthInferConfig, frames: list[Frame], ckpt: Path, out_dir: Path, echo=click.echo
                  ) -> tuple[int, list[dict[str, str]]]:
    """Write <out_dir>/<frame id>.npy for every frame not done yet; returns how many were written
    and the frames skipped ({"path", "problem"}: unreadable, or of another size than their sequence)."""
    from tqdm import tqdm

    from shared.imageio import read_rgb, write_npy
    from shared.nets.depth_predictor import DepthPredictor

    out_dir.mkdir(parents=True, exist_ok=True)
    odd = odd_sized(frames)
    skipped = [{"path": f.image, "problem": odd[f.id]} for f in frames if f.id in odd]
    todo = [(f.image, str(out_dir / f"{f.id}.npy"), output_size(cfg, f)) for f in frames
            if f.id not in odd and not (out_dir / f"{f.id}.npy").is_file()]
    if len(todo) + len(skipped) < len(frames):
        echo(f"depth inference: {len(frames) - len(todo) - len(skipped)} frames already done in {out_dir}")
    if not todo:
        return 0, skipped
    sizes = sorted({f"{h}x{w}" for _, _, (h, w) in todo})
    how = f"batches of {cfg.batch_size}" if cfg.device == "cuda" else f"{cfg.workers} worker process(es), {cfg.backend}"
    echo(f"depth inference: plan: {len(todo)} frames at {', '.join(sizes[:3])}{' ...' if len(sizes) > 3 else ''} "
         f"with {ckpt} on {cfg.device} ({how}); the time estimate follows the first frames")
    eta = Eta("depth inference", len(todo), "frame", echo)
    bar = tqdm(total=len(todo), desc="depth inference", unit="img")
    written = 0
    if cfg.device == "cuda":
        predictor = DepthPredictor(ckpt, "cuda")
        todo.sort(key=lambda j: j[2])  # equal output sizes side by side: a batch is one tensor
        for _, same in groupby(todo, key=lambda j: j[2]):
            same = list(same)
            for s in range(0, len(same), cfg.batch_size):
                group, rgbs = [], []
                for job in same[s:s + cfg.batch_size]:
                    try:
                        rgbs.append(read_rgb(job[0], size=job[2]))
                        group.append(job)
                    except DataError as e:
                        skipped.append({"path": e.path, "problem": e.problem})
                if group:
                    for (_, out, _), d in zip(group, predictor.predict_batch(np.stack(rgbs))):
                        write_npy(out, d)
                written += len(group)
                bar.update(len(same[s:s + cfg.batch_size]))
                eta.update(len(same[s:s + cfg.batch_size]))
    else:
        n_chunks = max(1, min(len(todo), cfg.workers * 4))
        chunks = [todo[i::n_chunks] for i in range(n_chunks)]
        # one worker with loky: the chunks run in this process, one after another
        for n, bad in run_tasks(_infer_chunk, [(str(ckpt), c) for c in chunks], cfg.backend, cfg.scheduler,
                                cfg.workers, desc="depth"):
            written += n
            skipped += bad
            bar.update(n + len(bad))
            eta.update(n + len(bad))
    bar.close()
    return written, skipped


@click.command("depth")
@config_options(DepthInferConfig)
def depth(**kwargs) -> None:
    """Predict relative depth for every frame of DATASET with a trained depth checkpoint (.npy per frame)."""
    import torch

    cfg = build_config(DepthInferConfig, kwargs)
    if cfg.device == "auto":
        cfg = dataclasses.replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    try:
        ckpt = Path(cfg.checkpoint) if cfg.checkpoint else read_pointer(cfg, "depth", "model")
        if not ckpt.is_file():
            raise DataError(ckpt, "depth checkpoint not found")
        frames = [f for f in frames_for(cfg, strict=cfg.strict) if not cfg.split or f.split == cfg.split]
        if not frames:
            raise DataError(cfg.data_root or cfg.dataset, f"no frames of split {cfg.split!r}")
        odd = odd_sized(frames)
        if odd and cfg.strict:
            raise DataError(next(f.image for f in frames if f.id in odd),
                            f"--strict: {len(odd)} frame(s) of another size than their sequence, nothing written: "
                            + "; ".join(odd.values()))
        st = ckpt.stat()
        # the checkpoint's path inside the output tree is relative to it: a moved tree finds its maps
        where = portable_path(ckpt.resolve(), Path(cfg.out).resolve(), Path(cfg.out).resolve())
        key = hashlib.sha256(f"{where}:{st.st_size}:{st.st_mtime_ns}:{cfg.height}x{cfg.width}".encode()).hexdigest()[:12]
        out_dir = output_dir(cfg, "depth", f"pred-{key}")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise click.UsageError("--device cuda but no CUDA device is available")
        n, skipped = infer_dataset(cfg, frames, ckpt, out_dir)
        save_config(cfg, out_dir / "config.json", extra={"checkpoint": str(ckpt), "skipped": skipped,
                                                         "units": "relative depth (one unknown global scale)"})
        done = len(list(out_dir.glob("*.npy")))
        if not done:  # produced nothing: an error, with the reasons
            raise DataError(out_dir, f"every frame was skipped ({len(skipped)}), no depth map written:\n"
                            + "\n".join(f"  {s['path']}: {s['problem']}" for s in skipped[:10]))
    except DataError as e:
        raise click.ClickException(str(e)) from e
    if skipped:
        click.echo(f"depth inference: skipped {len(skipped)} frame(s) (listed in {out_dir / 'config.json'}):\n"
                   + "\n".join(f"    {s['path']}: {s['problem']}" for s in skipped[:10]))
    click.echo(f"depth inference: wrote {n} depth maps (float32 .npy, relative depth) to {out_dir} "
               f"in {time.perf_counter() - t0:.1f} s")
