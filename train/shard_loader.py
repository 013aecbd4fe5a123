"""Streaming the shard set into training batches (docs/design.md#shard-format, #performance).

One step consumes `groups_per_step` copy-paste groups (the paper: 1 group = 16 images). Each group
is decoded and augmented in a DataLoader worker: every image gets its own random resized crop and
flip, applied to its region map and its source-id map too (maps sampled nearest at the centre of
each 4x4 feature cell), then colour jitter and blur on the image alone (drawn in the worker, applied
there or, on CUDA, batched on the GPU: see shared/photometric.py). The worker also draws the
positive samples (train/positives.py), so the step receives uint8 images plus small index tensors.

Order and resumption. The shard shuffle and the split by node and by worker are done here, from
the manifest, rather than by webdataset's splitters: that makes the whole epoch's stream a pure
function of (seed, epoch), so a resumed run can rebuild it and skip exactly what was consumed.
  - epoch e: shards shuffled with seed (seed, e); rank r takes every world-th shard, and the
    rank's W logical workers every W-th of those. An epoch has W * (fewest batches any logical
    worker of any rank holds) steps, so all ranks take the same number of steps.
  - step p of an epoch comes from logical worker p % W (the DataLoader serves workers round robin).
    After a restart at step c, physical worker q plays logical worker (q + c) % W and skips its
    first (q + c) // W batches (raw tar records, before the shuffle buffer's output is decoded).
  - each worker shuffles its samples through a buffer seeded by (seed, epoch, rank, logical
    worker), and every sample's augmentation is seeded by (seed, epoch, key): nothing depends on
    what the process did before.
Shards are read by train/shard_reader.py, from a folder, an http(s) URL or a pipe: command.

Integrity. Every shard is hashed as it is read (`HashingReader`, no second pass) and its groups
are handed on only after its sha256 matched the manifest (`verified_samples`), so a damaged shard
stops the run with the shard named and the command that rewrites it, and none of its groups is
trained on. A worker holds one shard's raw bytes at a time for this (shards are at most
--shard-mb). Errors in a DataLoader worker travel to the main process as a batch
{"data_error": [path, problem]} and are raised there as the DataError they were (`check_batch`).
"""
from __future__ import annotations

import hashlib
import random
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shared.frames import DataError
from shared.stage import make_command
from shared.photometric import IDENTITY, apply_photometric, draw_params, to_uint8
from shared.shard_schema import decode_group, source_ids
from shared.shard_set import MANIFEST, images_per_group, parse_manifest, shards_digest, tar_samples
from train.positives import feature_budget, pixel_keys, region_keys, sample_groups, split_budget
from train.shard_reader import is_remote, open_url, read_bytes, shard_url

GROUP_KEY_OFFSET = 1 << 40  # keeps keys of different groups in one step apart


@dataclass(frozen=True)
class ShardSet:
    root: str  # where the set lives: a folder, an http(s) URL or a pipe: command (train/shard_reader.py)
    height: int
    width: int
    images_per_group: int  # 2M
    n_groups: int
    config_hash: str
    shards: tuple[tuple[str, int], ...]  # (file name, samples)
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> its sha256 in the manifest
    digest: str = ""  # of the manifest's shard list (names, sizes, checksums): what a run trained on
    repair: str = ""  # the command that rewrites a damaged shard of this set


def open_shard_set(path: str | Path) -> ShardSet:
    """Read and check a shard set: manifest.json and its tar files, in a folder, under an http(s)
    URL or through a pipe: command (the shards themselves are checked as they stream)."""
    root = str(path)
    mpath = shard_url(root, MANIFEST)
    if not is_remote(root) and not Path(mpath).is_file():
        raise DataError(mpath, "shard set has no manifest.json (incomplete or not a shard set folder)")
    m = parse_manifest(read_bytes(mpath), mpath)
    shards = tuple((str(s["name"]), int(s["samples"])) for s in m["shards"])
    info = (int(m["height"]), int(m["width"]), images_per_group(m), int(m["n_groups"]))
    if not shards:
        raise DataError(mpath, "manifest lists no shards")
    if m.get("complete") is False:
        raise DataError(mpath, "shard set is incomplete (its `make shards` run is still going or was killed: rerun it)")
    repair = make_command("shards", m.get("config", {}))
    for s in m["shards"]:
        if not s.get("sha256"):
            raise DataError(mpath, f"lists no sha256 for {s['name']}, so it cannot be verified; rewrite the set "
                                   f"with {repair}")
    for s in m["shards"] if not is_remote(root) else ():  # remote sizes are checked while streaming
        p = Path(root) / s["name"]
        if not p.is_file():
            raise DataError(p, f"shard listed in the manifest is missing; rewrite it with {repair}")
        if "bytes" in s and p.stat().st_size != int(s["bytes"]):
            raise DataError(p, f"shard has {p.stat().st_size} bytes, manifest says {s['bytes']} (truncated?); "
                               f"rewrite it with {repair}")
    return ShardSet(root, *info, config_hash=str(m.get("config_hash", "")), shards=shards,
                    sha256={s["name"]: s["sha256"] for s in m["shards"]}, digest=shards_digest(m), repair=repair)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    steps: int  # steps in this epoch (same on every rank)
    worker_shards: tuple[tuple[str, ...], ...]  # this rank's shard paths per logical worker
    groups_used: int  # groups this rank consumes in the epoch
    groups_available: int  # groups this rank's shards hold
    sha256: dict[str, str] = field(default_factory=dict)  # shard path -> sha256 the manifest lists
    repair: str = ""  # the command that rewrites a damaged shard


def plan_epoch(ss: ShardSet, epoch: int, seed: int, groups_per_step: int, workers: int,
               rank: int = 0, world: int = 1) -> EpochPlan:
    """Which shards each rank and logical worker reads in `epoch`, and how many steps it lasts."""
    n_logical = max(1, workers)
    need = world * n_logical
    if len(ss.shards) < need:
        raise DataError(ss.root, f"{len(ss.shards)} shards for {world} rank(s) x {n_logical} loader worker(s): "
                                 f"every worker needs at least one shard; use --workers "
                                 f"{max(0, len(ss.shards) // world)} or write more, smaller shards")
    order = list(range(len(ss.shards)))
    random.Random(f"{seed}:{epoch}:shards").shuffle(order)
    fewest = None
    mine: list[list[int]] = []
    for r in range(world):
        per_rank = order[r::world]
        for v in range(n_logical):
            idx = per_rank[v::n_logical]
            batches = sum(ss.shards[i][1] for i in idx) // groups_per_step
            fewest = batches if fewest is None else min(fewest, batches)
            if r == rank:
                mine.append(idx)
    steps = n_logical * int(fewest or 0)
    available = sum(ss.shards[i][1] for w in mine for i in w)
    paths = tuple(tuple(shard_url(ss.root, ss.shards[i][0]) for i in w) for w in mine)
    sha256 = {shard_url(ss.root, name): ss.sha256[name] for name, _ in ss.shards if name in ss.sha256}
    return EpochPlan(epoch, steps, paths, steps * groups_per_step, available, sha256, ss.repair)


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of one synthesised image (and its maps)."""

    height: int  # output size; multiple of 32
    width: int
    scale: tuple[float, float] = (0.5, 1.0)  # crop area / image area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect / output aspect
    flip: float = 0.5
    jitter: float = 0.8  # probability of colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    blur: float = 0.5  # probability of Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    stride: int = 4  # the network's output stride
    pixel_cell: int = 4  # source-grid cell size of a pixel key
    photometric_in_worker: bool = True  # jitter + blur in the loader (else on the training device)


def crop_box(rng: np.random.Generator, h: int, w: int, aug: Augment) -> tuple[int, int, int, int]:
    """(y0, x0, crop h, crop w) of a random resized crop, torchvision's rule with the aspect
    ratio taken relative to the output's, so wide frames are not squeezed."""
    area = h * w
    target = aug.width / aug.height
    for _ in range(10):
        a = area * rng.uniform(*aug.scale)
        r = target * float(np.exp(rng.uniform(np.log(aug.ratio[0]), np.log(aug.ratio[1]))))
        cw, ch = int(round(np.sqrt(a * r))), int(round(np.sqrt(a / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    # fall back to the largest centred crop of the output's aspect
    ch, cw = (h, min(w, round(h * target))) if w / h >= target else (min(h, round(w / target)), w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def augment_image(image: np.ndarray, src: np.ndarray, reg: np.ndarray, rng: np.random.Generator,
                  aug: Augment) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """image uint8 [H, W, 3], src int64 [H, W] source ids, reg [H, W] region ids ->
    (image uint8 [3, Ho, Wo] cropped, scaled and flipped, src int64 [Ho/s, Wo/s], reg int64 [Ho/s, Wo/s],
     colour jitter + blur parameters [5] for shared/photometric.py).

    The maps are sampled at the output pixel that each feature cell is centred on, through the
    same crop, scale and flip as the image (nearest), so they say what each feature location sees.
    """
    h, w = image.shape[:2]
    y0, x0, ch, cw = crop_box(rng, h, w, aug)
    flip = rng.random() < aug.flip
    s = aug.stride
    oy = torch.arange(aug.height // s) * s + s // 2  # output rows that feature cells sample
    ox = torch.arange(aug.width // s) * s + s // 2
    if flip:
        ox = aug.width - 1 - ox
    # pixel centre o + 0.5 of the output lands at (o + 0.5) * crop / out in the crop: nearest = floor
    my = (y0 + ((oy + 0.5) * ch / aug.height).floor().long()).clamp(0, h - 1)
    mx = (x0 + ((ox + 0.5) * cw / aug.width).floor().long()).clamp(0, w - 1)
    src_f = torch.from_numpy(src)[my[:, None], mx[None, :]]
    reg_f = torch.from_numpy(reg.astype(np.int64))[my[:, None], mx[None, :]]

    # uint8 in, uint8 out, channels-last: torch's fast path for images, several times the float one
    x = torch.from_numpy(np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw])).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(aug.height, aug.width), mode="bilinear", align_corners=False,
                      antialias=(ch > aug.height or cw > aug.width))
    img = x[0].contiguous()  # [3, Ho, Wo] uint8
    if flip:
        img = img.flip(-1)
    params = draw_params(rng, aug.jitter, aug.brightness, aug.contrast, aug.saturation, aug.hue, aug.blur,
                         aug.blur_sigma)
    return img, src_f, reg_f, params


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def prepare_group(sample: dict[str, Any], aug: Augment, rng: np.random.Generator) -> dict[str, Any]:
    """A raw webdataset sample -> augmented group at feature resolution: images uint8 [N, 3, Ho, Wo]
    (jittered and blurred if aug.photometric_in_worker), photometric float32 [N, 5] (identity rows
    if already applied), pixel_keys / region_keys int64 [N, Ho/s, Wo/s] (-1 = none)."""
    try:
        g = decode_group(sample)
        src = source_ids(g.layers, g.meta)  # int64 [N, H, W]
    except Exception as e:  # name the sample: a bad record in a 10 GB shard set is otherwise a hunt
        raise DataError(f"{sample.get('__url__', '?')}#{sample.get('__key__', '?')}", f"undecodable group ({e!r})") from e
    h, w = g.images.shape[1:3]
    out = [augment_image(g.images[i], src[i], g.regions[i], rng, aug) for i in range(g.n_images)]
    srcf = torch.stack([o[1] for o in out])
    images = torch.stack([o[0] for o in out])  # [N, 3, Ho, Wo]
    params_np = np.stack([o[3] for o in out])  # [N, 5]
    params = torch.from_numpy(params_np)
    if aug.photometric_in_worker:
        max_sigma = aug.blur_sigma[1] if (params_np[:, 4] > 0).any() else 0.0  # 0: no image blurred, skip
        images = to_uint8(apply_photometric(images, params, max_sigma))
        params = torch.tensor([IDENTITY] * len(out), dtype=torch.float32)
    return {
        "key": sample["__key__"],
        "images": images,
        "photometric": params,
        "pixel_keys": pixel_keys(srcf, h, w, aug.pixel_cell),
        "region_keys": region_keys(torch.stack([o[2] for o in out])),
    }


def collate_groups(groups: list[dict[str, Any]], features_per_step: int, lam: float,
                   generator: torch.Generator, keep_keys: bool = False) -> dict[str, Any]:
    """Groups of one step -> the step's batch: images uint8 [B, 3, Ho, Wo] and, for each level,
    `<level>_index` int64 [m] (rows of the step's features [B * h * w, D], flattened b, y, x),
    `<level>_group` int64 [m] and `<level>_groups` (count)."""
    off = [torch.full_like(g["pixel_keys"], i * GROUP_KEY_OFFSET) for i, g in enumerate(groups)]
    pk = torch.cat([torch.where(g["pixel_keys"] >= 0, g["pixel_keys"] + o, g["pixel_keys"]) for g, o in zip(groups, off)])
    rk = torch.cat([torch.where(g["region_keys"] >= 0, g["region_keys"] + o, g["region_keys"]) for g, o in zip(groups, off)])
    n_pix, n_reg = split_budget(feature_budget(features_per_step, pk.numel()), lam)
    pi, pg, npg = sample_groups(pk.flatten(), n_pix, generator)
    ri, rg, nrg = sample_groups(rk.flatten(), n_reg, generator)
    batch = {
        "keys": [g["key"] for g in groups],
        "locations": pk.numel(),  # B * h * w: the feature rows the indices refer to
        "images": torch.cat([g["images"] for g in groups]),
        "photometric": torch.cat([g["photometric"] for g in groups]),  # [B, 5], see shared/photometric.py
        "pixel_index": pi, "pixel_group": pg, "pixel_groups": npg,
        "region_index": ri, "region_group": rg, "region_groups": nrg,
    }
    if keep_keys:
        batch["pixel_keys"], batch["region_keys"] = pk, rk
    return batch


class HashingReader:
    """A binary stream that hashes every byte read from `stream`; `verify()` reads what the tar
    reader left (end-of-archive padding) and compares size and sha256 with the manifest's."""

    def __init__(self, stream: IO[bytes], name: str, sha256: str, repair: str = ""):
        self.stream, self.name, self.expected, self.repair = stream, name, sha256, repair
        self.hash, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def verify(self) -> None:
        while self.read(1 << 20):
            pass
        got = self.hash.hexdigest()
        if got != self.expected:
            raise DataError(self.name, f"shard is damaged: its {self.size} bytes have sha256 {got[:16]}..., the "
                                       f"manifest lists {self.expected[:16]}...; none of its groups was trained on. "
                                       f"Rewrite it with {self.repair or '`make shards`'} (shards that do not match "
                                       "their checksum are rewritten), then rerun: training resumes from its last "
                                       "checkpoint")


def verified_samples(shards: Iterable[tuple[str, str]], repair: str = "",
                     open_stream: Callable[[str], IO[bytes]] = lambda url: open(url, "rb")) -> Iterator[dict[str, Any]]:
    """The samples ({"__key__", "__url__", ext: bytes}) of each (url, sha256) tar shard in order,
    a shard's samples released only once its bytes matched `sha256`; `open_stream` opens a url."""
    for url, sha256 in shards:
        try:
            with open_stream(url) as fh:
                reader = HashingReader(fh, url, sha256, repair)
                samples = list(tar_samples(reader, url))
                reader.verify()
        except (tarfile.TarError, EOFError) as e:  # a shard damaged beyond the checksum: not a tar at all
            raise DataError(url, f"shard is damaged, not a readable tar ({e}); rewrite it with "
                                 f"{repair or '`make shards`'}") from e
        yield from samples


def check_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A loader batch, or the DataError a worker sent in its place (module docstring)."""
    if "data_error" in batch:
        raise DataError(*batch["data_error"])
    return batch


class ShardStream(IterableDataset):
    """One epoch of batches for this rank, resumable at any step (see the module docstring)."""

    def __init__(self, plan: EpochPlan, start_step: int, seed: int, groups_per_step: int, aug: Augment,
                 features_per_step: int, lam: float, shuffle_buffer: int = 64, rank: int = 0):
        super().__init__()
        self.plan, self.start, self.seed, self.gps = plan, start_step, seed, groups_per_step
        self.aug, self.fps, self.lam, self.buffer, self.rank = aug, features_per_step, lam, shuffle_buffer, rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._batches()
        except DataError as e:  # sent as data: a DataLoader worker's exception would lose its fields
            yield {"data_error": [e.path, e.problem]}

    def _batches(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        q, n_phys = (info.id, info.num_workers) if info is not None else (0, 1)
        n_logical = len(self.plan.worker_shards)
        assert n_phys == n_logical, "the epoch plan was made for a different number of workers"
        v = (q + self.start) % n_logical
        skip = (q + self.start) // n_logical  # batches logical worker v already delivered
        total = self.plan.steps // n_logical
        shards = [(u, self.plan.sha256.get(u, "")) for u in self.plan.worker_shards[v]]
        raw = verified_samples(shards, self.plan.repair, open_stream=open_url)  # any folder, URL or pipe:
        if self.buffer > 1:
            raw = wds.shuffle(self.buffer, initial=self.buffer,
                              seed=zlib.crc32(f"{self.seed}:{self.plan.epoch}:{self.rank}:{v}".encode()))(raw)
        batch: list[dict[str, Any]] = []
        done = 0
        for sample in raw:
            if done >= total:
                return
            if done < skip:  # consumed before the restart: count it, never decode it
                batch.append(sample)
                if len(batch) == self.gps:
                    batch, done = [], done + 1
                continue
            rng = sample_rng(self.seed, self.plan.epoch, sample["__key__"])
            batch.append(prepare_group(sample, self.aug, rng))
            if len(batch) == self.gps:
                gen = torch.Generator().manual_seed(
                    zlib.crc32(f"{self.seed}:{self.plan.epoch}:{':'.join(b['key'] for b in batch)}".encode()))
                yield collate_groups(batch, self.fps, self.lam, gen)
                batch, done = [], done + 1


def _worker_init(_: int) -> None:
    # Workers decode and augment with numpy/PIL/torch on the CPU: one thread each, many workers.
    torch.set_num_threads(1)


def make_loader(stream: ShardStream, workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_init if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False)
