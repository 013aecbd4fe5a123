"""`python -m train depth-train`: self-supervised monocular depth from video (Monodepth2, docs/design.md#depth).

No labels, stereo or LiDAR: for every target frame t with both temporal neighbours, the depth
network predicts t's disparity, the pose network the motion t->t-1 and t->t+1, and the neighbours
are warped into t. The loss is the per-pixel minimum photometric error (0.85 SSIM + 0.15 L1) over
the two warps, auto-masked where an unwarped neighbour already matches (static camera, objects
moving with it), plus edge-aware smoothness 1e-3 / 2^scale, averaged over 4 scales (each
disparity upsampled to the input size before warping).

Data path: frames are decoded once, resized to the training resolution, into a uint8 memmap cache
(resumable, built by joblib workers); every step gathers its triplets from it in a background
thread, so the step loop never decodes JPEG/PNG. Flip and colour augmentation run batched on the
training device; colour changes only the network inputs, the losses see the original pixels.

Outputs under <out>/<dataset>[-<demo>]/depth/run-<config hash>/: checkpoint.pt (model, optimizer,
step, config, RNG, written atomically; an existing one is resumed automatically), config.json,
log.jsonl (one JSON object per log step, with images/s), images/step-XXXXXX.png (target, disparity,
auto-mask), and once finished depth_net.pt (the depth encoder + decoder only), which is recorded as
the stage's current model (depth/model.current).
"""
from __future__ import annotations

import errno
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
import torch.nn.functional as F

from shared.camera_torch import pose_from_axis_angle, warp
from shared.checkpoint import SaveClock, clear_stale_saves, code_version, rng_state, save_checkpoint, set_rng_state
from shared.atomic import write_json
from shared.config import config_hash, save_config, to_dict
from shared.eta import eta_line as shared_eta_line
from shared.device import pick_device
from shared.eta import gpu_recipe_warning
from shared.faults import kill_point
from shared.frames import DataError, Frame, by_id
from shared.nets.depth_net import NUM_SCALES, DepthModel, disp_to_depth
from shared.nets.depth_predictor import load_depth_checkpoint
from shared.photometric import colour_jitter
from shared.stage import frames_for, output_dir, write_pointer
from train.depth_config import PRESETS, DepthTrainConfig, resolved  # noqa: F401  (PRESETS: re-exported)
from train.depth_losses import min_reprojection, photometric_error, smoothness
from train.loop import RunLog, progress_bar, require_finite, seed_everything

# The options and presets live in train/depth_config.py, which does not import torch.


# ----------------------------------------------------------------------------------------------
# Training triplets from the frame index


def training_triplets(frames: list[Frame], split: str, on_bad: str = "error") -> tuple[list[tuple[str, str, str]], list[str]]:
    """(prev, target, next) ids of every frame of `split` with both neighbours, and the problems skipped.

    Problems (sequence of fewer than 3 frames, neighbour missing from the index, neighbour of a
    different size) raise DataError naming the frames when on_bad == "error".
    """
    index = by_id(frames)
    chosen = [f for f in frames if f.split == split]
    problems: list[tuple[str, str]] = []  # (file, what is wrong)
    seqs: dict[str, list[Frame]] = {}
    for f in chosen:
        seqs.setdefault(f.sequence, []).append(f)
    for seq, fs in sorted(seqs.items()):
        if len(fs) < 3:
            ids = ", ".join(sorted(f.id for f in fs))
            problems.append((fs[0].image, f"sequence {seq} has {len(fs)} frame(s) ({ids}); depth training needs 3 consecutive frames"))
    triplets = []
    for f in chosen:
        if not f.prev or not f.next:
            continue
        bad = False
        for nid in (f.prev, f.next):
            n = index.get(nid)
            if n is None:
                problems.append((f.image, f"neighbour {nid} of frame {f.id} is not in the frame index"))
                bad = True
            elif (n.width, n.height) != (f.width, f.height):
                problems.append((n.image, f"frame {n.id} is {n.width}x{n.height} but its neighbour {f.id} is {f.width}x{f.height}"))
                bad = True
        if not bad:
            triplets.append((f.prev, f.id, f.next))
    if problems and on_bad == "error":
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DataError(problems[0][0], problems[0][1] + more + "; --on-bad skip trains on the other frames")
    if not triplets:
        where = chosen[0].image if chosen else "frame index"
        why = "; ".join(f"{path}: {what}" for path, what in problems[:3])
        raise DataError(where, f"no frame of split {split!r} has both temporal neighbours "
                               f"({len(chosen)} frames in that split): nothing to train depth on"
                               + (f" (skipped: {why})" if why else ""))
    return triplets, [f"{path}: {what}" for path, what in problems]


# ----------------------------------------------------------------------------------------------
# Decoded-frame cache: uint8 [N, H, W, 3] memmap at the training resolution


def _decode_chunk(path: str, shape: tuple[int, int, int, int], rows: list[int], images: list[str],
                  sizes: list[tuple[int, int]], done_marker: str, skip_bad: bool = False) -> int:
    """Decode `images` into rows of the cache; the done marker lists the rows left black
    ({"row", "path", "problem"}: unreadable, or not the size the index says) when skip_bad, else
    the first such image is a DataError."""
    from shared.imageio import image_size, read_rgb

    cache = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    bad = []
    for r, img, (w, h) in zip(rows, images, sizes):
        try:
            if image_size(img) != (h, w):
                raise DataError(img, f"image is {image_size(img)[1]}x{image_size(img)[0]} but the frame index says {w}x{h}")
            cache[r] = read_rgb(img, size=shape[1:3])
        except DataError as e:
            if not skip_bad:
                raise
            bad.append({"row": r, "path": e.path, "problem": e.problem})
    cache.flush()
    Path(done_marker).write_text(json.dumps(bad))
    return len(rows)


def _allocate(path: Path, size: int) -> None:
    """A file of `size` bytes whose blocks the filesystem has reserved: a memmap over a sparse file
    kills the process with SIGBUS when the disk fills up while it is written, where reserving the
    space first fails at once with an OSError naming the file."""
    with open(path, "wb") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate: sparse, as before
                fh.truncate(size)
            else:
                raise OSError(e.errno, e.strerror, str(path)) from e


def build_frame_cache(frames: list[Frame], height: int, width: int, cache_dir: Path, workers: int,
                      chunk: int = 64, skipped: list[dict[str, Any]] | None = None) -> np.ndarray:
    """Decode `frames` (in order) into a read-only memmap; resumes a killed build chunk by chunk.
    skipped: where frames that cannot be decoded are listed ({"row", "path", "problem"}; their rows
    stay black and must not be trained on); None: such a frame is a DataError."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    import hashlib
    key = hashlib.sha256(json.dumps([[f.image, f.width, f.height] for f in frames] + [height, width]).encode()).hexdigest()[:12]
    final = cache_dir / f"frames-{height}x{width}-{key}.u8"
    bad_list = final.with_name(final.name + ".bad.json")  # rows left black, beside a finished cache
    shape = (len(frames), height, width, 3)
    if not final.is_file():
        # Not shared.atomic's temporary: this one outlives a killed build, which resumes it chunk by
        # chunk; the marks say which chunks it holds, and only a whole cache gets the final name.
        tmp = final.with_name(final.name + ".tmp")
        marks = final.with_name(final.name + ".chunks")
        marks.mkdir(parents=True, exist_ok=True)
        if not tmp.is_file() or tmp.stat().st_size != int(np.prod(shape)):
            _allocate(tmp, int(np.prod(shape)))
        jobs = []
        for c, start in enumerate(range(0, len(frames), chunk)):
            mark = marks / f"{c}.done"
            if mark.is_file():
                continue
            part = frames[start:start + chunk]
            jobs.append(delayed(_decode_chunk)(str(tmp), shape, list(range(start, start + len(part))),
                                               [f.image for f in part], [(f.width, f.height) for f in part], str(mark),
                                               skipped is not None))
        if jobs:
            with tqdm(total=sum(len(j[1][2]) for j in jobs), desc="decode frames", unit="img") as bar:
                if len(jobs) == 1 or workers <= 1:  # process start-up costs more than one chunk
                    results = (fn(*args, **kw) for fn, args, kw in jobs)
                else:
                    results = Parallel(n_jobs=workers, return_as="generator_unordered")(jobs)
                for n in results:
                    bar.update(n)
        bad = [b for m in sorted(marks.iterdir()) for b in json.loads(m.read_text() or "[]")]
        if bad and skipped is None:  # a cache built while skipping, finished by a strict run
            raise DataError(bad[0]["path"], bad[0]["problem"])
        write_json(bad_list, sorted(bad, key=lambda b: b["row"]))
        os.replace(tmp, final)
        for m in marks.iterdir():
            m.unlink()
        marks.rmdir()
    bad = json.loads(bad_list.read_text()) if bad_list.is_file() else []
    if bad and skipped is None:
        raise DataError(bad[0]["path"], bad[0]["problem"])
    if skipped is not None:
        skipped.extend(bad)
    return np.memmap(final, dtype=np.uint8, mode="r", shape=shape)


class TripletBatches:
    """Step s -> uint8 batch [B, 3 frames (t, t-1, t+1), H, W, 3] and target rows, deterministic in (seed, s).

    The order is an endless concatenation of per-epoch permutations of the targets, so a resumed
    run continues exactly where the killed one stopped.
    """

    def __init__(self, cache: np.ndarray, rows: np.ndarray, batch_size: int, seed: int):
        self.cache, self.rows, self.batch_size, self.seed = cache, rows, batch_size, seed  # rows [N,3]
        self._perms: dict[int, np.ndarray] = {}

    def _order(self, start: int, count: int) -> np.ndarray:
        n = len(self.rows)
        out = []
        for k in range(start, start + count):
            epoch, pos = divmod(k, n)
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
            out.append(self._perms[epoch][pos])
        return np.asarray(out)

    def __call__(self, step: int) -> tuple[torch.Tensor, np.ndarray]:
        targets = self._order(step * self.batch_size, self.batch_size)
        rows = self.rows[targets]  # [B,3]
        batch = np.asarray(self.cache[rows.reshape(-1)]).reshape(len(targets), 3, *self.cache.shape[1:])
        return torch.from_numpy(batch), targets


# ----------------------------------------------------------------------------------------------
# Augmentation on the training device


def augment(images: torch.Tensor, K: torch.Tensor, gen: torch.Generator, color_p: float, flip_p: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images [B,F,3,H,W] float in [0,1], K [B,3,3] pixels.

    Returns (images flipped, network inputs flipped and colour-jittered, K of the flipped views).
    A triplet shares one flip and one jitter so the frames stay photometrically comparable; the
    jitter is shared.photometric's (hue: a rotation of YIQ's chroma plane).
    """
    B, device = images.shape[0], images.device
    rand = torch.rand(B, 2, generator=gen, device=gen.device).to(device)
    flip = rand[:, 0] < flip_p
    images = torch.where(flip[:, None, None, None, None], images.flip(-1), images)
    K = K.clone()
    W = images.shape[-1]
    K[:, 0, 2] = torch.where(flip, W - K[:, 0, 2], K[:, 0, 2])
    jitter = (rand[:, 1] < color_p)[:, None]
    u = torch.rand(B, 4, generator=gen, device=gen.device).to(device) * 2.0 - 1.0  # [-1, 1)
    bright, contrast, sat = [torch.where(jitter[:, 0], 1.0 + 0.2 * u[:, i], torch.ones_like(u[:, i])) for i in range(3)]
    hue = torch.where(jitter[:, 0], 0.1 * u[:, 3], torch.zeros_like(u[:, 3]))  # turns
    frames = images.shape[1]
    params = torch.stack([bright, contrast, sat, hue], 1).repeat_interleave(frames, 0)  # [B*F,4]
    x = colour_jitter(images.reshape(B * frames, *images.shape[2:]), params).view(images.shape)
    # untouched samples stay bit-exact (the YIQ round trip is only identity up to rounding)
    return images, torch.where(jitter[:, :, None, None, None], x, images), K


# ----------------------------------------------------------------------------------------------
# The loss of one batch


def depth_losses(model: DepthModel, images: torch.Tensor, inputs: torch.Tensor, K: torch.Tensor,
                 cfg: DepthTrainConfig, gen: torch.Generator | None, autocast: torch.autocast | None = None,
                 disparities_fn=None, pose_fn=None, memory_format: torch.memory_format = torch.contiguous_format,
                 inv_K: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """images / inputs [B,3,3,H,W] (frames t, t-1, t+1; original / augmented), K [B,3,3] -> (loss, parts).

    inv_K: K's inverse [B,3,3] (default: computed here; the trainer passes one computed on the host,
    since inverting on a GPU is a solver call that may wait for it).
    parts: "disp" (finest disparity [B,1,H,W]), "automask" ([B,1,H,W] bool), "photometric", "smooth".
    """
    disparities_fn = disparities_fn or model.disparities
    pose_fn = pose_fn or model.pose
    target, prev, nxt = images[:, 0], images[:, 1], images[:, 2]
    ctx = autocast if autocast is not None else torch.autocast("cpu", enabled=False)
    net_t, net_p, net_n = (inputs[:, i].contiguous(memory_format=memory_format) for i in range(3))
    with ctx:
        disps = disparities_fn(net_t)
        aa_p, t_p = pose_fn(net_p, net_t)  # motion t-1 -> t
        aa_n, t_n = pose_fn(net_t, net_n)  # motion t -> t+1
    # Both poses map target-camera points into the source camera.
    poses = [pose_from_axis_angle(aa_p.float(), t_p.float(), invert=True),
             pose_from_axis_angle(aa_n.float(), t_n.float(), invert=False)]
    sources = [prev, nxt]
    inv_K = torch.linalg.inv(K) if inv_K is None else inv_K
    H, W = target.shape[-2:]

    identity = None
    if cfg.automask:
        identity = torch.cat([photometric_error(s, target, cfg.ssim_weight) for s in sources], 1)  # [B,2,H,W]
    noise = None
    if identity is not None:
        noise = torch.randn(identity.shape, generator=gen, device=gen.device).to(identity.device) * 1e-5 if gen is not None \
            else torch.randn_like(identity) * 1e-5
    photo_total = torch.zeros((), device=target.device)
    smooth_total = torch.zeros((), device=target.device)
    mask0 = None
    for s in range(NUM_SCALES):
        disp = disps[s].float()
        disp_full = disp if s == 0 else F.interpolate(disp, (H, W), mode="bilinear", align_corners=False)
        depth = disp_to_depth(disp_full, cfg.min_depth, cfg.max_depth)
        reproj = torch.cat([photometric_error(warp(src, depth, T, K, inv_K)[0], target, cfg.ssim_weight)
                            for src, T in zip(sources, poses)], 1)  # [B,2,H,W]
        if cfg.min_reprojection:
            per_pixel, mask = min_reprojection(reproj, identity, noise)
        else:
            per_pixel, mask = reproj.mean(1, keepdim=True), torch.ones_like(reproj[:, :1], dtype=torch.bool)
            if identity is not None:
                mask = reproj.mean(1, keepdim=True) < identity.mean(1, keepdim=True)
                per_pixel = per_pixel * mask
        if s == 0:
            mask0 = mask
        photo_total = photo_total + per_pixel.mean()
        small_target = target if s == 0 else F.interpolate(target, disp.shape[-2:], mode="area")
        smooth_total = smooth_total + cfg.smoothness * smoothness(disp, small_target) / (2 ** s)
    loss = (photo_total + smooth_total) / NUM_SCALES
    return loss, {"disp": disps[0].detach(), "automask": mask0, "photometric": photo_total.detach() / NUM_SCALES,
                  "smooth": smooth_total.detach() / NUM_SCALES}


# ----------------------------------------------------------------------------------------------
# Snapshots and checkpoints


def colorize(x: np.ndarray) -> np.ndarray:
    """float [H,W] -> uint8 RGB with a dark-blue -> magenta -> yellow ramp (near = bright)."""
    anchors = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float32)
    lo, hi = np.percentile(x, 1), np.percentile(x, 99)
    t = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1) * (len(anchors) - 1)
    i = np.minimum(t.astype(int), len(anchors) - 2)
    f = (t - i)[..., None]
    return (anchors[i] * (1 - f) + anchors[i + 1] * f).astype(np.uint8)


def write_snapshot(path: Path, image: torch.Tensor, disp: torch.Tensor, mask: torch.Tensor) -> None:
    """image [3,H,W], disp [1,H,W], mask [1,H,W] -> one PNG: input above disparity above auto-mask."""
    from shared.imageio import write_png

    rgb = (image.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    d = colorize(disp[0].float().cpu().numpy())
    m = np.repeat((mask[0].cpu().numpy() * 255).astype(np.uint8)[..., None], 3, -1)
    write_png(path, np.concatenate([rgb, d, m], 0))


def _checkpoint(path: Path, model: DepthModel, opt: torch.optim.Optimizer, step: int,
                cfg: DepthTrainConfig, extra: dict) -> None:
    save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "config": to_dict(cfg), "config_class": type(cfg).__name__, "code_version": code_version(),
                     "rng": rng_state(), **extra}, path)




INFERENCE_FILE = "depth_net.pt"  # beside checkpoint.pt: what the predictor needs, without pose net and Adam state


def write_inference_weights(ckpt_path: Path) -> Path:
    """Write the depth encoder + decoder of a finished run (with its config and step) to a slim file beside
    the training checkpoint; the model pointer names it, so readers never load the pose network and the
    optimizer state. The training checkpoint stays, so the run can still be extended."""
    slim = ckpt_path.with_name(INFERENCE_FILE)
    state = load_depth_checkpoint(ckpt_path, "cpu")
    keep = ("depth_encoder.", "depth_decoder.")
    save_checkpoint({"model": {k: v.clone() for k, v in state["model"].items() if k.startswith(keep)},
                     **{k: state[k] for k in ("step", "config", "config_class", "code_version") if k in state},
                     "inference_only": True}, slim)
    return slim


def lr_at(step: int, total: int, cfg: DepthTrainConfig) -> float:
    """Step decay at epoch lr_decay_epochs of epochs (15 of 20), i.e. at the same fraction of a
    --max-steps run, so a short run is not spent mostly at the decayed rate."""
    return cfg.lr * (cfg.lr_decay if step >= round(total * cfg.lr_decay_epochs / cfg.epochs) else 1.0)


# ----------------------------------------------------------------------------------------------
# The step loop


def camera_tensors(K: torch.Tensor, width: int) -> torch.Tensor:
    """K [N,3,3] of each target (pixels, at the training size) -> [N, 3, 3, 3]: K, its inverse, and
    the inverse of its mirror image (principal point at width - cx, as `augment` flips it). Inverted
    once, on the host: on a GPU an inverse is a solver call that may wait for the device."""
    flipped = K.clone()
    flipped[:, 0, 2] = width - K[:, 0, 2]
    return torch.stack([K, torch.linalg.inv(K), torch.linalg.inv(flipped)], 1)


@dataclass(frozen=True)
class StepSetup:
    """What every step uses and no step changes, built once before the loop (`step_setup`)."""

    cfg: DepthTrainConfig
    device: torch.device
    memory_format: torch.memory_format  # of the network inputs and weights
    autocast: Any  # bf16 autocast on CUDA with --bf16; None on the CPU
    disparities_fn: Callable[[torch.Tensor], list[torch.Tensor]]  # the model's, compiled with --compile
    pose_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def step_setup(model: DepthModel, cfg: DepthTrainConfig, device: torch.device) -> StepSetup:
    """The device settings, the model's memory layout and compilation (its weights final), and
    the step's constants on the device."""
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda  # fixed input size: let cuDNN pick the fastest kernels once
    memfmt = torch.channels_last if (cuda and cfg.channels_last) else torch.contiguous_format
    model.to(memory_format=memfmt)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16) if cuda else None
    disparities_fn, pose_fn = model.disparities, model.pose
    if cfg.compile:
        disparities_fn, pose_fn = torch.compile(model.disparities), torch.compile(model.pose)
    return StepSetup(cfg, device, memfmt, autocast, disparities_fn, pose_fn)


def train_step(model: DepthModel, frames: torch.Tensor, cams: torch.Tensor, index: int, opt: torch.optim.Optimizer,
               run: StepSetup) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step. frames uint8 [B, 3 (t, t-1, t+1), H, W, 3], cams [B, 3, 3, 3] (camera_tensors
    of the targets), index: the step's number from 0, which seeds its augmentation.

    Returns (loss, parts) still on the device: depth_losses' parts and "image", the first target
    [3, H, W] as the losses saw it. Nothing here waits for the device; the loop reads back once per
    log line.
    """
    cfg, device = run.cfg, run.device
    x = frames.to(device, non_blocking=True).permute(0, 1, 4, 2, 3).float().div_(255.0)  # [B,3,3,H,W]
    K, inv_K, inv_K_mirrored = cams.to(device, non_blocking=True).unbind(1)  # [B,3,3] each
    # One generator per step: a resumed run draws exactly what the killed one would have.
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + index)
    images, inputs, K_seen = augment(x, K, gen, cfg.color_aug, cfg.flip)
    # Flipped triplets had their principal point mirrored: theirs is the mirrored inverse (a point
    # mirrored onto itself leaves K, and so the inverse, unchanged).
    inv_K = torch.where((K_seen[:, 0, 2] != K[:, 0, 2])[:, None, None], inv_K_mirrored, inv_K)
    loss, parts = depth_losses(model, images, inputs, K_seen, cfg, gen, run.autocast, run.disparities_fn, run.pose_fn,
                               run.memory_format, inv_K)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), {**parts, "image": images[0, 0]}


class LogWindow:
    """The steps since the last log line: their loss summed on the device, their waits for data on
    the host; read back once per log line (or checkpoint)."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.n, self.wait, self.t0 = 0, 0.0, time.perf_counter()

    def add(self, loss: torch.Tensor, wait: float) -> None:
        self.loss_sum += loss
        self.n, self.wait = self.n + 1, self.wait + wait

    def mean_loss(self, step: int, ckpt_path: Path) -> float:
        """One host sync. Checked before any checkpoint is written, so a diverged run never
        overwrites a good one."""
        mean = float(self.loss_sum) / self.n
        require_finite([mean], f"(depth) before step {step}; last checkpoint {ckpt_path} is kept")
        return mean

    def close(self, step: int, lr: float, parts: dict[str, torch.Tensor], batch_size: int, ckpt_path: Path,
              t_start: float) -> dict[str, Any]:
        """The log record of the window (reads the device back), and a new window."""
        now = time.perf_counter()
        rec = {"step": step, "loss": self.mean_loss(step, ckpt_path), "lr": lr,
               "photometric": float(parts["photometric"]), "smooth": float(parts["smooth"]),
               "automask_used": float(parts["automask"].float().mean()),
               "images_per_s": self.n * batch_size / (now - self.t0), "data_wait_s": self.wait / self.n,
               "elapsed_s": now - t_start}
        self.loss_sum.zero_()
        self.n, self.wait, self.t0 = 0, 0.0, time.perf_counter()
        return rec


# What a CPU should run instead of a GPU-sized step (shared.eta.GPU_SIZED_PIXELS_PER_STEP).
CPU_RECIPE = ('docs/depth.md, "Why training sat on a plateau": DEPTH_ARGS="--recipe cpu --height 64 --width 128 '
              '--batch-size 4 --max-steps 400", or DEMO_SIZE=tiny|small')


def plan_lines(cfg: DepthTrainConfig, device: torch.device, targets: int, frames: int, start: int,
               total: int) -> list[str]:
    """What a run is about to do, said before it starts: frames, size, device, steps; a GPU-sized recipe
    on a CPU warns and names the CPU recipe."""
    lines = [f"depth: plan: {targets} targets from {frames} frames at {cfg.width}x{cfg.height}, batch "
             f"{cfg.batch_size}, steps {start + 1}..{total} on {device.type}, a checkpoint every "
             f"{cfg.ckpt_every} steps" + (f" or {cfg.ckpt_minutes:g} min" if cfg.ckpt_minutes > 0 else "")
             + "; the time estimate follows the first steps"]
    warning = gpu_recipe_warning("depth", device.type, cfg.width * cfg.height * cfg.batch_size,
                                 f"{cfg.width}x{cfg.height} x batch {cfg.batch_size}", CPU_RECIPE)
    return lines + ([warning] if warning else [])


def eta_line(seconds: float, steps_done: int, steps_left: int) -> str:
    return shared_eta_line("depth", seconds, steps_done, steps_left, "step")  # every stage's wording


def run_dir(cfg: DepthTrainConfig) -> Path:
    return output_dir(cfg, "depth", f"run-{config_hash(cfg)}")


@dataclass
class TrainingData:
    """What the step loop reads: the frames decoded once, and for each target its rows and camera."""
    triplets: list[tuple[str, str, str]]  # (t-1, t, t+1) frame ids
    frames: int  # distinct frames in the cache
    batches: TripletBatches
    cams: torch.Tensor  # [N, 3, 3, 3]: K, K^-1, mirrored K^-1 of each target


def training_data(cfg: DepthTrainConfig, frames: list[Frame], triplets: list[tuple[str, str, str]],
                  skipped: list[str], echo) -> TrainingData:
    """Decode the frames the triplets use into the cache. A frame that does not decode is skipped with
    its triplets (--on-bad skip; appended to `skipped`) or stops the run before training (--on-bad error)."""
    index = by_id(frames)
    used = sorted({i for t in triplets for i in t})
    row_of = {fid: r for r, fid in enumerate(used)}
    undecodable: list[dict[str, Any]] = []
    cache = build_frame_cache([index[i] for i in used], cfg.height, cfg.width, output_dir(cfg, "depth", "cache"),
                              cfg.workers, skipped=undecodable if cfg.on_bad == "skip" else None)
    if undecodable:
        black = {used[b["row"]] for b in undecodable}
        skipped += [f"{b['path']}: {b['problem']}" for b in undecodable]
        for b in undecodable[:10]:
            echo(f"skipped: {b['path']}: {b['problem']} (and the targets next to it)")
        triplets = [t for t in triplets if not black & set(t)]
        if not triplets:
            raise DataError(undecodable[0]["path"], f"every training target touches an undecodable frame "
                                                    f"({len(undecodable)} of them): nothing to train depth on")
    rows = np.array([[row_of[t], row_of[p], row_of[n]] for p, t, n in triplets], dtype=np.int64)  # [N,3]: t, t-1, t+1
    K_all = torch.tensor(np.stack([index[t].K(cfg.width, cfg.height) for _, t, _ in triplets]), dtype=torch.float32)
    return TrainingData(triplets, len(used), TripletBatches(cache, rows, cfg.batch_size, cfg.seed),
                        camera_tensors(K_all, cfg.width))


def publish(cfg: DepthTrainConfig, ckpt_path: Path) -> None:
    """Point `depth/model.current` at a finished run's inference weights (written first where a run
    finished before the inference file existed)."""
    slim = ckpt_path.with_name(INFERENCE_FILE)
    if not slim.is_file():
        write_inference_weights(ckpt_path)
    write_pointer(cfg, "depth", "model", slim)


def step_loop(cfg: DepthTrainConfig, model: DepthModel, opt: torch.optim.Optimizer, data: TrainingData,
              device: torch.device, ckpt_path: Path, start: int, total: int, last: int, stop: int,
              t_start: float, echo) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps start+1 .. stop: lr from the schedule, one step, a log line every log_every steps (the one
    read back from the device), a snapshot every image_every, a checkpoint every ckpt_every and at
    `last` (the run's end or --stop-after's). Returns the first and the last step's loss."""
    out = ckpt_path.parent
    run = step_setup(model, cfg, device)
    cuda = device.type == "cuda"

    def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch_u8, targets = data.batches(i)
        cams = data.cams[targets]
        return (batch_u8.pin_memory(), cams.pin_memory()) if cuda else (batch_u8, cams)

    log = RunLog(out / "log.jsonl", start)  # steps after the checkpoint are redone; a torn last line goes
    pool = ThreadPoolExecutor(1)  # gathers (and pins) the next batch while this step runs
    pending = pool.submit(fetch, start)
    model.train()
    bar = progress_bar(total, start, cfg.progress, "depth train")
    window = LogWindow(device)
    first_loss = loss = None
    clock = SaveClock(cfg.ckpt_minutes)  # a slow (CPU) run also saves by wall time
    try:
        for step in range(start + 1, stop + 1):  # step: steps done after this one
            t0 = time.perf_counter()
            frames_u8, cams = pending.result()
            wait = time.perf_counter() - t0
            if step < total:
                pending = pool.submit(fetch, step)
            for g in opt.param_groups:
                g["lr"] = lr_at(step - 1, total, cfg)
            loss, parts = train_step(model, frames_u8, cams, step - 1, opt, run)
            window.add(loss, wait)
            bar.update(1)
            kill_point()  # tests: killed between steps
            if first_loss is None:
                first_loss = loss  # read back at the end
                t_first = time.perf_counter()  # the first step pays start-up costs: timed from after it
            elif step == start + 4 and step < total:
                echo(eta_line(time.perf_counter() - t_first, step - start - 1, total - step))
            if step % cfg.log_every == 0 or step == total:
                rec = window.close(step, opt.param_groups[0]["lr"], parts, cfg.batch_size, ckpt_path, t_start)
                log.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['images_per_s']:.1f}")
            save = step % cfg.ckpt_every == 0 or step == last or clock.due()
            if save and step % cfg.log_every != 0 and step != total:
                window.mean_loss(step, ckpt_path)
            if (cfg.image_every and step % cfg.image_every == 0) or step == total:
                write_snapshot(out / "images" / f"step-{step:06d}.png", parts["image"], parts["disp"][0],
                               parts["automask"][0])
            if save:
                _checkpoint(ckpt_path, model, opt, step, cfg, {"targets": len(data.triplets), "total": total})
                clock.saved()
    finally:
        bar.close()
        log.close()
        pool.shutdown(wait=True)
    return first_loss, loss  # type: ignore[return-value]


def train(cfg: DepthTrainConfig, frames: list[Frame] | None = None, echo=click.echo,
          kill_after: int | None = None) -> Path:
    """Train (or resume, or reuse) the run of `cfg`; returns the checkpoint path.

    frames: the frame index (default: the configured dataset's). kill_after: leave the loop after
    this step as a killed run would (tests of resuming), the last checkpoint is what survives.
    cfg.stop_after, by contrast, checkpoints where it stops.
    """
    cfg = resolved(cfg)
    t_start = time.perf_counter()
    out = run_dir(cfg)
    ckpt_path = out / "checkpoint.pt"
    clear_stale_saves(out)
    frames = frames if frames is not None else frames_for(cfg, strict=cfg.on_bad == "error", echo=echo)
    triplets, skipped = training_triplets(frames, cfg.split, cfg.on_bad)
    for p in skipped[:10]:
        echo(f"skipped: {p}")
    if len(skipped) > 10:
        echo(f"skipped: ... and {len(skipped) - 10} more")

    state = load_depth_checkpoint(ckpt_path, "cpu") if ckpt_path.is_file() else None  # RNG states stay on the CPU
    if state is not None and "total" in state and int(state["step"]) >= int(state["total"]):
        echo(f"depth: reusing finished run {ckpt_path} ({state['step']} steps)")
        publish(cfg, ckpt_path)
        return ckpt_path

    data = training_data(cfg, frames, triplets, skipped, echo)
    total = cfg.max_steps or cfg.epochs * math.ceil(len(data.triplets) / cfg.batch_size)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    model = DepthModel(cfg.init_weights or None, cfg.pose_translation_scale, cfg.pose_forward_init).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if step < total:
            if "python" not in state["rng"]:
                raise DataError(ckpt_path, "written by an older trainer that did not save every RNG state; "
                                           "move it away to start over")
            set_rng_state(state["rng"])
        echo(f"depth: resuming {ckpt_path} at step {step}/{total}" if step < total
             else f"depth: reusing finished run {ckpt_path} ({step} steps)")
    if step >= total:
        publish(cfg, ckpt_path)
        return ckpt_path

    for line in plan_lines(cfg, device, len(data.triplets), data.frames, step, total):
        echo(line)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json", extra={"targets": len(data.triplets), "frames": data.frames,
                                                 "steps": total, "skipped": skipped})
    last = total if cfg.stop_after <= 0 else min(total, step + cfg.stop_after)  # this invocation's, checkpointed
    stop = last if kill_after is None else min(last, max(kill_after, step + 1))  # at least one step
    first_loss, last_loss = step_loop(cfg, model, opt, data, device, ckpt_path, step, total, last, stop, t_start, echo)
    if kill_after is not None and kill_after <= stop:
        return ckpt_path  # left the loop as a killed run would: the last checkpoint is what survives
    if last < total:  # --stop-after: checkpointed above
        echo(f"depth: stopped at step {last}/{total} (rerun to resume) in {time.perf_counter() - t_start:.1f} s; "
             f"wrote {ckpt_path}, {out / 'log.jsonl'}")
        return ckpt_path
    slim = write_inference_weights(ckpt_path)
    write_pointer(cfg, "depth", "model", slim)
    echo(f"depth: {len(data.triplets)} targets, {total} steps of {cfg.batch_size} at {cfg.width}x{cfg.height}, "
         f"loss {float(first_loss):.4f} -> {float(last_loss):.4f}")
    echo(f"depth: wrote {slim} ({slim.stat().st_size / 1e6:.0f} MB, inference), {ckpt_path} "
         f"({ckpt_path.stat().st_size / 1e6:.0f} MB, to extend the run), {out / 'log.jsonl'}, {out / 'images'} in {time.perf_counter() - t_start:.1f} s")
    return ckpt_path
