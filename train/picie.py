"""`python -m train picie`: PiCIE (Cho et al., CVPR 2021), the paper's unsupervised peer, trained on the
same frames with the same network as our pre-training, so the two can be compared in one evaluation.

Every epoch, with the network as it stands at the epoch's start:
  1. views: each frame gets two photometric draws P1, P2 (colour jitter, grayscale, blur) and one
     geometric draw G (random resized crop + flip), fixed for the epoch:
        view 1 = G(P1(frame))  -> network -> f1
        view 2 = P2(frame) at view size -> network -> G(feature map) -> f2
     so f1 and f2 show the same crop of the frame, cell for cell (train/picie_losses.py).
  2. cluster: mini-batch k-means over sampled pixel features of each view -> centroids c1, c2
  3. label: every feature cell of every frame's two views -> its nearest centroid, y1 and y2
  4. train: Adam steps on PiCIE's within-view + cross-view cross-entropy with distance-to-centroid logits
After the last step, k-means on the un-augmented frames gives K centroids that are stored as the
network's prototypes, so `evaluate unsupervised` loads and clusters a PiCIE run like one of ours.

The network is ours (shared/nets/semantic_fpn.py: ResNet + FPN + semantic-FPN head + projection to
128-d, unit features: the paper's "equivalent setting"); PiCIE's own is a ResNet-18 with a lighter
FPN. The frames are the frame index's training split at the working size of our regions (no
regions, no copy-paste). Everything lives in <out>/<dataset>[-<demo>]/picie/<run>/:

    config.json          the resolved config
    checkpoint.pt        model, optimizer, step, RNG states, the epoch's centroids and labels (atomic; resumed from)
    log.jsonl            one JSON line per logged step: loss terms, k-means loss, clusters used, images/s, ETA
    backbone_<arch>.pth  the backbone in torchvision ResNet keys

and picie/model.current points at the checkpoint. Single device (CPU, or one GPU with bf16 autocast).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from shared.checkpoint import SaveClock, clear_stale_saves
from shared.config import check_config, config_hash, save_config
from shared.device import pick_device
from shared.eta import Eta, gpu_recipe_warning
from shared.faults import kill_point
from shared.frames import DataError, Frame
from shared.imageio import read_rgb
from shared.photometric import apply_photometric
from shared.nets.semantic_fpn import DenseSwAVNet, load_backbone_weights, normalize_images
from shared.regions.config import working_size
from shared.stage import cached_frames, output_dir, write_pointer
from train.picie_config import PRESETS, PicieConfig  # noqa: F401  (re-exported)
from train.picie_losses import (PicieTerms, cluster_weights, equivariant_crop, grayscale, kmeans_plus_plus, lloyd,
                                minibatch_update, nearest_centroid, picie_loss)
from train.loop import (NonFiniteLoss, RunLog, capped_steps_note, export_backbone, load_run_checkpoint,  # noqa: F401
                        progress_bar, require_finite, restore, save_run_checkpoint, seed_everything, tune_cuda)


# The options and presets live in train/picie_config.py, which does not import torch.


@dataclass(frozen=True)
class Photometric:
    """PiCIE's invariance transforms, each drawn independently per view (MoCo v2's, at PiCIE's strengths)."""

    p_jitter: float = 0.8  # probability of each of brightness, contrast, saturation and hue
    brightness: float = 0.3  # factor in 1 +- 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.1  # rotation in +-0.1 turns
    p_gray: float = 0.2  # MoCo v2's value; PiCIE's script asks for it (--grey) though its code tests 'gray'
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels of the working-size frame


PHOTOMETRIC = Photometric()


@dataclass
class EpochViews:
    """Every frame's two views for one epoch, indexed by frame position (not by step order)."""

    order: np.ndarray  # int64 [N]: frame positions in this epoch's step order
    boxes: torch.Tensor  # float32 [N, 4]: view 1's crop (y0, x0, y1, x1) as fractions of the frame
    flips: torch.Tensor  # bool [N]
    photometric: torch.Tensor  # float32 [N, 2, 5]: shared/photometric.py parameters of view 1 and view 2
    gray: torch.Tensor  # bool [N, 2]

    def to(self, device: torch.device) -> "EpochViews":
        """On the training device once per epoch: indexing there by step needs no blocking copy."""
        return EpochViews(self.order, self.boxes.to(device), self.flips.to(device), self.photometric.to(device),
                          self.gray.to(device))


def draw_epoch_views(n: int, seed: int, epoch: int, crop_scale: tuple[float, ...], flip: float,
                     ph: Photometric = PHOTOMETRIC) -> EpochViews:
    """The epoch's views, a function of (seed, epoch) only: a resumed run draws the same ones."""
    rng = np.random.default_rng([seed, epoch, 0x91C1E])
    order = rng.permutation(n)
    side = rng.uniform(crop_scale[0], crop_scale[1], n)  # [N] box side as a share of the frame's
    y0, x0 = rng.random(n) * (1 - side), rng.random(n) * (1 - side)
    boxes = np.stack([y0, x0, y0 + side, x0 + side], axis=1)
    flips = rng.random(n) < flip
    u = rng.random((n, 2, 8))  # a fixed number of draws per view, whichever transforms fire
    on = u[..., :4] < ph.p_jitter
    params = np.stack([
        np.where(on[..., 0], 1 - ph.brightness + 2 * ph.brightness * u[..., 4], 1.0),
        np.where(on[..., 1], 1 - ph.contrast + 2 * ph.contrast * u[..., 5], 1.0),
        np.where(on[..., 2], 1 - ph.saturation + 2 * ph.saturation * u[..., 6], 1.0),
        np.where(on[..., 3], -ph.hue + 2 * ph.hue * u[..., 7], 0.0),
        np.zeros((n, 2)),
    ], axis=-1)  # [N, 2, 5]
    v = rng.random((n, 2, 3))
    params[..., 4] = np.where(v[..., 0] < ph.p_blur, ph.blur_sigma[0] + (ph.blur_sigma[1] - ph.blur_sigma[0]) * v[..., 1], 0.0)
    gray = v[..., 2] < ph.p_gray
    return EpochViews(order.astype(np.int64), torch.from_numpy(boxes).float(), torch.from_numpy(flips),
                      torch.from_numpy(params).float(), torch.from_numpy(gray))


@dataclass
class EpochState:
    """What an epoch's clustering produced; checkpointed, so a resumed epoch keeps its targets."""

    epoch: int
    centroids: torch.Tensor  # float32 [2, K, D]: view 1's and view 2's
    labels: torch.Tensor  # uint8/int16 [N, 2, h, w]: each frame's feature cells' clusters, per view
    weights: torch.Tensor | None  # float32 [2, K] cross-entropy weights (None: unweighted)
    kmeans_loss: list[float]  # per view: mean squared distance to the nearest centroid when fitted
    clusters_used: list[int]  # per view: clusters holding at least one label


class FrameImages(Dataset):
    """(position, uint8 [3, H, W]) of each frame at the working size."""

    def __init__(self, frames: list[Frame], size: tuple[int, int]):
        self.paths, self.size = [f.image for f in frames], size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, torch.from_numpy(np.array(read_rgb(self.paths[i], self.size))).permute(2, 0, 1).contiguous()


class Runtime:
    """The fixed parts every pass uses: device, autocast, view size, frame loader."""

    def __init__(self, cfg: PicieConfig, frames: list[Frame], size: tuple[int, int], device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (self.cuda and cfg.amp) else nullcontext
        self.size, self.view_size = size, view_size(size, cfg.view_scale)
        self.images, self.workers, self.batch = FrameImages(frames, size), cfg.workers, cfg.batch_size

    def batches(self, positions: np.ndarray, desc: str = "", progress: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(positions int64 [B], images uint8 [B, 3, H, W] on the device) in the given order."""
        chunks = [positions[i:i + self.batch].tolist() for i in range(0, len(positions), self.batch)]
        loader = DataLoader(self.images, batch_sampler=chunks, num_workers=self.workers, pin_memory=self.cuda,
                            generator=torch.Generator())  # its own generator: the global RNG stays untouched
        from tqdm import tqdm

        for pos, imgs in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
            yield pos, imgs.to(self.device, non_blocking=True)


def view_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of the views: scale x the working size, rounded down to multiples of 16 (at least 32), so
    the stride-4 feature map covers exactly the view."""
    return tuple(max(32, int(s * scale) // 16 * 16) for s in size)  # type: ignore[return-value]


def make_views(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, photometric: torch.Tensor,
               gray: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames [B, 3, H, W] -> (view 1, view 2), each float [B, 3, h, w] ImageNet-normalised:
    view 1 = G(P1(frame)), view 2 = P2(frame) resized; G is applied to view 2's features later."""
    p1 = grayscale(apply_photometric(images, photometric[:, 0], PHOTOMETRIC.blur_sigma[1]), gray[:, 0])
    p2 = grayscale(apply_photometric(images, photometric[:, 1], PHOTOMETRIC.blur_sigma[1]), gray[:, 1])
    v1 = equivariant_crop(p1, boxes, flips, size)
    v2 = F.interpolate(p2, size=size, mode="bilinear", align_corners=False, antialias=True)
    return normalize_images(v1), normalize_images(v2)


def embed(model: DenseSwAVNet, x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Unnormalised projected features [B, D, h/4, w/4] in fp32."""
    if rt.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        return model.embed(x).float()


def view_features(model: DenseSwAVNet, images: torch.Tensor, views: EpochViews, pos: torch.Tensor,
                  rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(f1, f2), unit features [B, D, h, w] of the frames at `pos` in view 1 and view 2, aligned cell for cell."""
    pos = pos.to(views.boxes.device, non_blocking=True)
    boxes, flips = views.boxes[pos], views.flips[pos]
    x1, x2 = make_views(images, boxes, flips, views.photometric[pos], views.gray[pos], rt.view_size)
    f1 = embed(model, x1, rt)
    e2 = embed(model, x2, rt)
    f2 = equivariant_crop(e2, boxes, flips, (e2.shape[2], e2.shape[3]))
    return F.normalize(f1, dim=1), F.normalize(f2, dim=1)


def images_seen(step: int, per_epoch: int, n: int, batch: int) -> int:
    """View images through forward and backward after `step` steps (an epoch's last batch may be short)."""
    epochs, rest = divmod(step, per_epoch)
    return 2 * (epochs * n + min(rest * batch, n))


def _cells(f: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] -> [B*h*w, D], index order b, y, x (the order labels are stored in)."""
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


def _sample(f: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """[B, D, h, w] -> [B * per_image, D]: the same random cells of every image (all when per_image = 0)."""
    cells = f.permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1])  # [B, h*w, D]
    if per_image <= 0 or per_image >= cells.shape[1]:
        return cells.reshape(-1, f.shape[1])
    idx = torch.randperm(cells.shape[1], generator=gen)[:per_image].to(f.device)
    return cells[:, idx].reshape(-1, f.shape[1])


def stream_kmeans(batches: Iterable[tuple[int, list[torch.Tensor]]], k: int, init_images: int, batch_images: int,
                  iterations: int, gen: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """PiCIE's mini-batch k-means, one per stream: batches yield (images, [V] sampled features [M, D]);
    the first `init_images` images are clustered in full (k-means++ seeds, Lloyd), every later
    `batch_images` images update the centroids. Returns (centroids [V, K, D], mean squared distance
    of the points to their centroid when they were used, per stream)."""
    pending: list[list[torch.Tensor]] = []
    n_pending, cents, counts = 0, None, None
    loss_sum, loss_n = None, 0

    def flush() -> None:
        nonlocal cents, counts, pending, n_pending, loss_sum, loss_n
        xs = [torch.cat([p[v] for p in pending]) for v in range(len(pending[0]))]
        if cents is None:
            if xs[0].shape[0] < k:
                raise ValueError(f"k-means of {k} clusters got only {xs[0].shape[0]} pixel features; "
                                 f"use more frames, more --kmeans-pixels or fewer --num-clusters")
            fits = [lloyd(x, kmeans_plus_plus(x, k, gen), iterations) for x in xs]
            cents, counts = [c for c, _ in fits], [n for _, n in fits]
        else:
            ups = [minibatch_update(cents[v], counts[v], x) for v, x in enumerate(xs)]
            cents, counts = [c for c, _ in ups], [n for _, n in ups]
        d = torch.stack([nearest_centroid(x, c)[1].sum() for x, c in zip(xs, cents)])
        loss_sum = d if loss_sum is None else loss_sum + d
        loss_n += xs[0].shape[0]
        pending, n_pending = [], 0

    for n, feats in batches:
        pending.append(feats)
        n_pending += n
        if n_pending >= (init_images if cents is None else batch_images):
            flush()
    if pending:
        flush()
    if cents is None or loss_sum is None:
        raise ValueError("k-means got no features (no frames?)")
    return torch.stack(cents), (loss_sum / max(loss_n, 1)).tolist()


@torch.no_grad()
def prepare_epoch(model: DenseSwAVNet, views: EpochViews, epoch: int, cfg: PicieConfig, rt: Runtime,
                  progress: bool) -> EpochState:
    """Steps 2 and 3 of an epoch: centroids of each view's features, then every frame's labels."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)

    def sampled() -> Iterator[tuple[int, list[torch.Tensor]]]:
        for pos, images in rt.batches(views.order, f"epoch {epoch}: k-means", progress):
            f1, f2 = view_features(model, images, views, pos, rt)
            yield len(pos), [_sample(f1, cfg.kmeans_pixels, gen), _sample(f2, cfg.kmeans_pixels, gen)]

    centroids, km_loss = stream_kmeans(sampled(), cfg.num_clusters, cfg.kmeans_init_images, cfg.kmeans_batch_images,
                                       cfg.kmeans_iterations, gen)  # [2, K, D]
    labels: torch.Tensor | None = None
    dtype = torch.uint8 if cfg.num_clusters <= 256 else torch.int16
    for pos, images in rt.batches(views.order, f"epoch {epoch}: labels", progress):
        f1, f2 = view_features(model, images, views, pos, rt)
        if labels is None:
            labels = torch.zeros(len(views.order), 2, *f1.shape[2:], dtype=dtype, device=rt.device)
        for v, f in enumerate((f1, f2)):
            labels[pos.to(rt.device, non_blocking=True), v] = nearest_centroid(_cells(f), centroids[v])[0].view(len(pos), *f.shape[2:]).to(dtype)
    assert labels is not None
    counts = torch.stack([torch.bincount(labels[:, v].reshape(-1).long(), minlength=cfg.num_clusters)
                          for v in range(2)])  # [2, K]
    weights = torch.stack([cluster_weights(c) for c in counts]) if cfg.cluster_weighting == "share" else None
    return EpochState(epoch, centroids, labels, weights, km_loss, (counts > 0).sum(1).tolist())


def train_step(model: DenseSwAVNet, opt: torch.optim.Optimizer, images: torch.Tensor, pos: torch.Tensor,
               views: EpochViews, state: EpochState, rt: Runtime) -> PicieTerms:
    """One optimiser step on a batch of frames: both views forward, PiCIE's loss against the epoch's
    centroids and labels, backward, Adam."""
    f1, f2 = view_features(model, images, views, pos, rt)
    y = state.labels[pos.to(rt.device, non_blocking=True)].long()  # [B, 2, h, w]
    w = state.weights if state.weights is not None else [None, None]
    terms = picie_loss(_cells(f1), _cells(f2), y[:, 0].reshape(-1), y[:, 1].reshape(-1),
                       state.centroids[0], state.centroids[1], w[0], w[1])
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    opt.step()
    return terms


@torch.no_grad()
def final_centroids(model: DenseSwAVNet, cfg: PicieConfig, rt: Runtime, progress: bool) -> torch.Tensor:
    """[K, D] k-means centroids of the trained network's features on the un-augmented frames at the
    working size (PiCIE's evaluation clusters fresh features the same way): the prototypes a
    PiCIE checkpoint carries, so prototype-based evaluation works for it as for our runs."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 999_983)

    def sampled() -> Iterator[tuple[int, list[torch.Tensor]]]:
        for _, images in rt.batches(np.arange(len(rt.images)), "final k-means", progress):
            f = F.normalize(embed(model, normalize_images(images), rt), dim=1)
            yield images.shape[0], [_sample(f, cfg.kmeans_pixels, gen)]

    model.eval()  # the evaluation's features: BatchNorm's running statistics, not the batch's
    try:
        return stream_kmeans(sampled(), cfg.num_clusters, cfg.kmeans_init_images, cfg.kmeans_batch_images,
                             cfg.kmeans_iterations, gen)[0][0]
    finally:
        model.train()


def training_frames(cfg: PicieConfig) -> list[Frame]:
    frames = [f for f in cached_frames(cfg) if f.split in cfg.splits]
    if not frames:
        raise DataError(output_dir(cfg, "index.jsonl"), f"no frames of split {','.join(cfg.splits)} to train on")
    return sorted(frames, key=lambda f: f.id)


def train(cfg: PicieConfig) -> Path:
    """Train (or resume) the PiCIE run of `cfg` (presets already applied); returns the run folder."""
    t_start = time.time()
    device = pick_device(cfg.device)
    tune_cuda(device)
    check_config(cfg)  # each option's bounds, as the command checks them, for callers that build a config

    # ---- data, schedule, run folder, model, optimiser, resume
    frames = training_frames(cfg)
    size = working_size(cfg, frames)  # type: ignore[arg-type]  # reads size, dataset and demo_size only
    rt = Runtime(cfg, frames, size, device)
    n = len(frames)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch if cfg.max_steps <= 0 else min(cfg.max_steps, cfg.epochs * per_epoch)
    if total <= 0:
        raise click.UsageError("--epochs and --max-steps leave no step to train")
    run_key = config_hash(cfg, extra={"frames": [f.id for f in frames]})
    run_dir = output_dir(cfg, "picie", cfg.run or run_key)
    ckpt_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    clear_stale_saves(run_dir)
    seed_everything(cfg.seed)
    model = DenseSwAVNet(cfg.backbone, num_prototypes=cfg.num_clusters)
    if cfg.init_weights:
        load_backbone_weights(model, cfg.init_weights)
    model.prototypes.weight.requires_grad_(False)  # PiCIE learns no prototypes: they hold the final centroids
    model.to(device).train()
    if rt.cuda:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    ckpt = load_run_checkpoint(ckpt_path, run_key, "settings or frames differ")
    start = restore(ckpt, model, opt)
    state = _state_from(ckpt.get("epoch_state") if ckpt else None, device)
    _announce(cfg, rt, n, run_dir, start, total, per_epoch)

    # ---- the step loop: an epoch starts with its clustering, then steps through its frame order
    bar = progress_bar(total, start, cfg.progress)
    eta = Eta("picie", total - start if cfg.stop_after <= 0 else min(total - start, cfg.stop_after), "step", click.echo)
    step, step_log, t_log, last_good, stopped = start, start, time.time(), start, False
    clock = SaveClock(cfg.checkpoint_minutes)
    sums = torch.zeros(3, device=device)  # loss, within, across since the last log line
    with RunLog(log_path, start) as log:
        while step < total:
            epoch, first = divmod(step, per_epoch)
            views = draw_epoch_views(n, cfg.seed, epoch, cfg.crop_scale, cfg.flip).to(device)
            if state is None or state.epoch != epoch:
                state = prepare_epoch(model, views, epoch, cfg, rt, cfg.progress)
            for pos, images in rt.batches(views.order[first * cfg.batch_size:]):
                terms = train_step(model, opt, images, pos, views, state, rt)
                sums += torch.stack([terms.total.detach(), terms.within.detach(), terms.across.detach()])
                step += 1
                bar.update(1)
                eta.update(1)  # (an epoch's clustering falls between steps: the first epoch's is not in the rate)
                kill_point()  # tests: killed between steps
                if step % cfg.log_every == 0 or step == total:
                    k = step - step_log
                    mean = (sums / k).tolist()  # the one host sync per log interval
                    require_finite(mean, f"in steps {step_log + 1}..{step}; the last checkpoint (step {last_good}) "
                                         f"is intact. Try a lower --lr or --no-amp.")
                    now = time.time()
                    rec = _log_record(cfg, state, mean, (step_log, step), now - t_log, total, per_epoch, n)
                    log.write(rec)
                    bar.set_postfix(loss=f"{mean[0]:.3f}", ips=f"{rec['images_per_s']:.1f}")
                    sums.zero_()
                    t_log, step_log = now, step
                stopped = cfg.stop_after > 0 and step - start >= cfg.stop_after
                if step % cfg.checkpoint_every == 0 or step == total or stopped or clock.due():
                    if step != step_log:
                        require_finite(sums.tolist(), f"before step {step}; the last checkpoint (step {last_good}) "
                                                      f"is intact. Try a lower --lr or --no-amp.")
                    _checkpoint(ckpt_path, model, opt, step, cfg, run_key, state)
                    clock.saved()
                    last_good = step
                if step >= total or stopped:
                    break
            if stopped:
                break
    bar.close()
    _finish(cfg, model, opt, rt, run_dir, run_key, state, (start, step, total), t_start)
    return run_dir


def _announce(cfg: PicieConfig, rt: Runtime, n: int, run_dir: Path, start: int, total: int, per_epoch: int) -> None:
    """Save the resolved config and say what this invocation will do, and where."""
    (h, w), (vh, vw) = rt.size, rt.view_size
    save_config(cfg, run_dir / "config.json", extra={"frames": n, "size": [h, w], "view_size": [vh, vw],
                                                    "total_steps": total, "steps_per_epoch": per_epoch})
    where = (f"complete ({total} steps), reusing {run_dir}" if start >= total else
             f"resuming {run_dir} at step {start}/{total}" if start else
             f"starting, {total} steps{capped_steps_note(cfg.max_steps, cfg.epochs, cfg.epochs * per_epoch)}, "
             f"new run {run_dir}")
    click.echo(f"picie: {where}; {n} frames ({','.join(cfg.splits)}) at {h}x{w}, views {vh}x{vw}, {cfg.backbone}, "
               f"K={cfg.num_clusters}, {2 * cfg.batch_size} images/step, device {rt.device}"
               + ("; the time estimate follows the first steps" if start < total else ""))
    warning = gpu_recipe_warning("picie", rt.device.type, vh * vw * 2 * cfg.batch_size,
                                 f"{2 * cfg.batch_size} views of {vh}x{vw} per step", "make picie DEMO_SIZE=small (ResNet-18)")
    if warning and start < total:
        click.echo(warning)


def _log_record(cfg: PicieConfig, state: EpochState, mean: list[float], steps: tuple[int, int], seconds: float,
                total: int, per_epoch: int, n: int) -> dict[str, Any]:
    """The log line of the steps (after steps[0], up to steps[1]) whose mean loss terms are `mean`."""
    seen = images_seen(steps[1], per_epoch, n, cfg.batch_size)
    ips = (seen - images_seen(steps[0], per_epoch, n, cfg.batch_size)) / max(seconds, 1e-9)
    return {"step": steps[1], "epoch": state.epoch, "loss": mean[0], "loss_within": mean[1], "loss_across": mean[2],
            "lr": cfg.lr, "images_seen": seen, "images_per_s": ips,
            "eta_s": (images_seen(total, per_epoch, n, cfg.batch_size) - seen) / max(ips, 1e-9),
            "kmeans_loss": state.kmeans_loss, "clusters_used": state.clusters_used}


def _finish(cfg: PicieConfig, model: DenseSwAVNet, opt: torch.optim.Optimizer, rt: Runtime, run_dir: Path,
            run_key: str, state: EpochState | None, steps: tuple[int, int, int], t_start: float) -> None:
    """A finished run: the final centroids as prototypes, the backbone export, the pointer; the last line.
    steps: (this invocation's first step, its last, the run's total)."""
    start, step, total = steps
    ckpt_path = run_dir / "checkpoint.pt"
    wrote = [ckpt_path, run_dir / "log.jsonl", run_dir / "config.json"]
    export = run_dir / f"backbone_{cfg.backbone}.pth"
    # The export is written after the final centroids' checkpoint: a finished run that has it is left as
    # it is (rewriting the checkpoint would make `make eval` score it again).
    finished_before = start >= total and export.is_file()
    if step >= total and not finished_before:
        # the evaluation's prototypes: centroids of the trained network on plain frames
        with torch.no_grad():
            model.prototypes.weight.copy_(F.normalize(final_centroids(model, cfg, rt, cfg.progress), dim=1))
        _checkpoint(ckpt_path, model, opt, step, cfg, run_key, state)
        export_backbone(model, export)
    if step >= total:
        wrote.append(export)
        write_pointer(cfg, "picie", "model", ckpt_path)
    names = ", ".join(p.name for p in wrote)
    if finished_before:
        click.echo(f"picie: nothing to do in {time.time() - t_start:.1f} s; the finished run is {names} in {run_dir}")
    else:
        done = "finished" if step >= total else f"stopped at step {step}/{total} (rerun to resume)"
        click.echo(f"picie: {done} in {time.time() - t_start:.1f} s; wrote {names} into {run_dir}")


def _checkpoint(path: Path, model: DenseSwAVNet, opt: torch.optim.Optimizer, step: int, cfg: PicieConfig,
                run_key: str, state: EpochState | None) -> None:
    epoch_state = None if state is None else {
        "epoch": state.epoch, "centroids": state.centroids.cpu(), "labels": state.labels.cpu(),
        "weights": None if state.weights is None else state.weights.cpu(),
        "kmeans_loss": torch.tensor(state.kmeans_loss), "clusters_used": torch.tensor(state.clusters_used)}
    save_run_checkpoint(path, model, opt, step, cfg, run_key, net_args=model.net_args, method="picie",
                        epoch_state=epoch_state)


def _state_from(d: dict[str, Any] | None, device: torch.device) -> EpochState | None:
    if d is None:
        return None
    return EpochState(int(d["epoch"]), d["centroids"].to(device), d["labels"].to(device),
                      None if d["weights"] is None else d["weights"].to(device),
                      d["kmeans_loss"].tolist(), d["clusters_used"].tolist())

