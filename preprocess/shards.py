"""`python -m preprocess shards`: pre-synthesise E epochs of copy-paste groups into WebDataset shards.

Input: the region store of `--proposals` (recorded by `make regions`, or `--regions PATH`), the
source images it names, and the frame index (for the horizon row cy*H of each frame).

Per epoch e, the store's frames (sorted by id) are shuffled with seed (seed, e) and cut into
groups of M = --group-size; group g is synthesised by `preprocess.copy_paste.synthesise` with seed
(seed, e, g), so every group is a pure function of the inputs and its position, whatever the number
of workers or shards. Groups are packed in order into shards of --groups-per-shard groups (by
default as many as fit in --shard-mb, estimated from the JPEG size of the source frames, but
few enough for --min-shards shards per epoch, so that every loader worker of every rank gets
shards of its own); a shard never spans two epochs, so a trainer can take one epoch as a set of
shards (the manifest says each shard's epoch).

Output folder, keyed by the config hash (which includes a hash of the region store's content):

    <out>/<dataset>[-<demo>]/shards/<proposals>-<hash>/
      shard-000000.tar ...   one sample per group (schema: shared.shard_schema), keys e{EE}_g{GGGGGGG}
      manifest.json          config, config_hash, region_store {path, config_hash, content_hash},
                             height, width, group_size, images_per_group, n_groups, epochs,
                             shards [{name, samples, bytes, sha256, epoch, first_group}], complete
      config.json            the resolved config
    <out>/<dataset>[-<demo>]/shards/<proposals>.current   pointer read by `make train`

Tars are written with the tarfile module (fixed mtime 0, uid/gid 0, empty user names, mode 0444,
members in a fixed order) to a temporary name and renamed, then listed in the manifest with their
size and sha256: same inputs and seed give byte-identical shards; a killed run resumes with the
shards not yet listed; a listed shard whose size or checksum no longer matches is rewritten, never
used. A complete set is reused as is (after checking every checksum, unless --no-verify).

One task per shard, on local processes or a Dask / Ray cluster (`--backend`, `--scheduler`:
shared.executor; same bytes on each): a worker writes only its shard, the driver alone the manifest.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

import click
import numpy as np
from tqdm import tqdm

from preprocess.copy_paste import SYNTHESIS_VERSION, PasteParams, SourceFrame, synthesise
from shared.atomic import atomic_path, refresh_only, remove_stale_temporaries
from shared.config import build_config, config_hash, config_options, field, save_config, to_dict
from shared.eta import Eta
from shared.executor import backend_field, run_tasks, scheduler_field
from shared.faults import kill_point
from shared.frames import DataError
from shared.imageio import read_rgb
from shared.presets import apply_preset, explicit_options
from shared.region_store import RegionStore, read_manifest, sha256_file
from shared.shard_schema import encode_group, group_key
from shared.shard_set import new_manifest, write_manifest
from shared.shard_set import read_manifest as read_shard_manifest
from shared.stage import StageConfig, cached_frames, output_dir, portable_path, read_pointer, write_pointer
from shared.video import check_frames, parse_ref

PAPER = PasteParams()
PAPER_HEIGHT = 384
# DEMO_SIZE presets: fill the options the user did not set (shared.presets).
# One group per shard, so a demo set has several shards (a loader worker needs at least one): the
# synthetic city has 6 (tiny) / 20 (small) train frames -> 1 / 2 groups per epoch.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"group_size": 4, "epochs": 2, "max_groups": 2, "groups_per_shard": 1},
    # 8 epochs' worth of every frame (16 groups of M = 8): the demo trains 64 steps, and with 4 groups it
    # saw the same 64 pasted images 8 times and learnt too little to beat random init by its spread.
    "small": {"epochs": 8, "groups_per_shard": 1},
}


@dataclass
class ShardsConfig(StageConfig):
    """Copy-paste groups -> WebDataset shards (docs/design.md#shard-format, #copy-paste)."""

    proposals: str = field("depth", "which region store to paste from (the regions stage's --proposals)")
    regions: str = field("", "region store folder (empty = the one `make regions` recorded for PROPOSALS)",
                         hash=False)
    epochs: int = field(2, "pre-synthesised epochs (each uses every frame once, in a new order)", bounds="[1, inf)")
    group_size: int = field(8, "M: source frames per group; a group holds len(rounds) * M images", bounds="[1, inf)")
    rounds: tuple[float, ...] = field(PAPER.rounds, "expected pastes per region in each round "
                                                    "(the original code used 2,4; 0,0 = no copy-paste: each image "
                                                    "is paired with views of itself, the ablation's M = 0)",
                                      bounds="[0, inf)")
    min_region_height: int = field(PAPER.min_height, "paste filter: min region box height, px (scaled at demo sizes)",
                                   bounds="[0, inf)")
    min_region_width: int = field(PAPER.min_width, "paste filter: min region box width, px (scaled at demo sizes)",
                                  bounds="[0, inf)")
    scale_range: tuple[float, ...] = field(PAPER.scale_range, "paste scale range about the horizon row",
                                           bounds="(0, inf)", n=2, ordered=True)
    min_paste_size: int = field(PAPER.min_size, "a scaled paste keeps both box sides >= this, px (scaled at demo sizes)",
                                bounds="[1, inf)")
    height_tolerance: int = field(PAPER.height_tolerance, "h_t: max vertical offset from where the scaled "
                                                          "region would sit, px (scaled at demo sizes)",
                                  bounds="[0, inf)")
    flip_prob: float = field(PAPER.flip_prob, "probability of a horizontal flip per paste", bounds="[0, 1]")
    jitter: tuple[float, ...] = field(PAPER.jitter, "colour jitter strength: brightness,contrast,saturation,hue",
                                      bounds="[0, 1]", n=4)
    jitter_prob: float = field(PAPER.jitter_prob, "probability of colour jitter per paste", bounds="[0, 1]")
    gray_prob: float = field(PAPER.gray_prob, "probability of grayscale per paste", bounds="[0, 1]")
    blur_prob: float = field(PAPER.blur_prob, "probability of Gaussian blur (5 taps) per paste", bounds="[0, 1]")
    blur_sigma: tuple[float, ...] = field(PAPER.blur_sigma, "blur sigma range", bounds="(0, inf)", n=2, ordered=True)
    jpeg_quality: int = field(90, "JPEG quality of the synthesised images", bounds="[1, 100]")
    shard_mb: float = field(200.0, "largest shard size, MB (used when --groups-per-shard is 0)", bounds="(0, inf)")
    min_shards: int = field(16, "at least this many shards per epoch when there are enough groups (used when "
                                "--groups-per-shard is 0): every loader worker and rank needs its own shards",
                            bounds="[1, inf)")
    groups_per_shard: int = field(0, "groups per shard (0 = from --shard-mb and --min-shards)", bounds="[0, inf)")
    max_groups: int = field(0, "groups per epoch at most (0 = all frames / group size)", bounds="[0, inf)")
    seed: int = field(0, "synthesis seed", bounds="[0, inf)")
    splits: tuple[str, ...] = field(("train",), "frame-index splits to synthesise from (frames the index "
                                                "does not know are kept)")
    workers: int = field(os.cpu_count() or 1, "parallel worker processes (one shard per task)",
                         hash=False, bounds="[1, inf)")
    backend: str = backend_field()
    scheduler: str = scheduler_field()
    verify: bool = field(True, "check the sha256 of already written shards before reusing them", hash=False)
    strict: bool = field(False, "stop before writing anything if a source image is missing or unreadable "
                                "(default: leave its frame out and list it in the manifest)", hash=False)


# ----------------------------------------------------------------------------------------------
# pure planning

def demo_pixel_sizes(height: int) -> dict[str, int]:
    """The paper's pixel sizes (set for 384-pixel-high images) scaled to `height`: a demo preset."""
    ratio = min(height / PAPER_HEIGHT, 1.0)
    return {"min_region_height": max(2, round(PAPER.min_height * ratio)),
            "min_region_width": max(2, round(PAPER.min_width * ratio)),
            "height_tolerance": max(1, round(PAPER.height_tolerance * ratio)),
            "min_paste_size": max(2, round(PAPER.min_size * ratio))}


def paste_params(cfg: ShardsConfig, height: int, explicit: Collection[str] = ()) -> PasteParams:
    """The config's constants; at a demo size, the pixel sizes the user did not set follow the image
    height (the config itself keeps the paper's values, which key the output)."""
    scaled = apply_preset(cfg, {cfg.demo_size: demo_pixel_sizes(height)} if cfg.demo_size else {}, explicit)
    min_h, min_w = scaled.min_region_height, scaled.min_region_width
    ht, min_size = scaled.height_tolerance, scaled.min_paste_size
    if len(cfg.scale_range) != 2 or not 0 < cfg.scale_range[0] <= cfg.scale_range[1]:
        raise click.BadParameter(f"--scale-range needs two values 0 < low <= high, got {cfg.scale_range}")
    if len(cfg.jitter) != 4 or len(cfg.blur_sigma) != 2 or not cfg.rounds:
        raise click.BadParameter("--jitter needs 4 values, --blur-sigma 2, --rounds at least one")
    return PasteParams(rounds=tuple(cfg.rounds), min_height=min_h, min_width=min_w,
                       scale_range=(cfg.scale_range[0], cfg.scale_range[1]), min_size=min_size,
                       height_tolerance=ht, flip_prob=cfg.flip_prob, jitter=tuple(cfg.jitter),  # type: ignore[arg-type]
                       jitter_prob=cfg.jitter_prob, gray_prob=cfg.gray_prob, blur_prob=cfg.blur_prob,
                       blur_sigma=(cfg.blur_sigma[0], cfg.blur_sigma[1]))


def epoch_groups(frame_ids: list[str], group_size: int, epoch: int, seed: int, max_groups: int = 0
                 ) -> list[list[str]]:
    """The groups of one epoch: a seeded shuffle of the sorted ids cut into groups (remainder dropped)."""
    ids = sorted(frame_ids)
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(ids))
    n = len(ids) // group_size
    if max_groups > 0:
        n = min(n, max_groups)
    return [[ids[j] for j in order[g * group_size:(g + 1) * group_size]] for g in range(n)]


@dataclass(frozen=True)
class ShardPlan:
    name: str
    epoch: int
    first_group: int
    groups: tuple[tuple[str, ...], ...]  # frame ids of each group


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def plan_shards(frame_ids: list[str], group_size: int, epochs: int, seed: int, max_groups: int,
                groups_per_shard: int) -> list[ShardPlan]:
    plans: list[ShardPlan] = []
    for e in range(epochs):
        groups = epoch_groups(frame_ids, group_size, e, seed, max_groups)
        for first in range(0, len(groups), groups_per_shard):
            chunk = tuple(tuple(g) for g in groups[first:first + groups_per_shard])
            plans.append(ShardPlan(shard_name(len(plans)), e, first, chunk))
    return plans


def region_store_key(manifest: dict[str, Any]) -> str:
    """Content hash of a region store: its config hash and every chunk's checksum."""
    chunks = {k: v.get("sha256") for k, v in sorted(manifest.get("chunks", {}).items())}
    blob = json.dumps({"config_hash": manifest.get("config_hash"), "chunks": chunks}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# writing

def write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Deterministic tar (fixed metadata) via a temporary name; returns {samples, bytes, sha256}."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, \
            tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
            n += 1
    return {"samples": n, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def load_source(store: RegionStore, frame_id: str, horizon_frac: float, image: str) -> SourceFrame:
    rec = store.read(frame_id)
    h, w = rec.regions.shape
    return SourceFrame(frame_id, read_rgb(image, (h, w)), rec.depth, rec.regions, horizon_frac * h)


def write_shard(store_root: str, out_dir: str, plan: ShardPlan, horizons: dict[str, float], params: PasteParams,
                seed: int, jpeg_quality: int, images: dict[str, str]) -> dict[str, Any]:
    """Synthesise and write one shard (a worker task); returns its manifest entry and timings."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    times = {"read": 0.0, "synthesise": 0.0, "encode": 0.0}

    def samples() -> Iterable[dict[str, Any]]:
        with RegionStore(store_root) as store:
            for k, ids in enumerate(plan.groups):
                t0 = time.perf_counter()
                frames = [load_source(store, fid, horizons[fid], images[fid]) for fid in ids]
                t1 = time.perf_counter()
                g = plan.first_group + k
                syn = synthesise(frames, [seed, plan.epoch, g], params)
                t2 = time.perf_counter()
                sample = encode_group(group_key(plan.epoch, g), syn.group, jpeg_quality)
                times["read"] += t1 - t0
                times["synthesise"] += t2 - t1
                times["encode"] += time.perf_counter() - t2
                yield sample
                kill_point()  # tests: killed with a tar half written

    entry = write_tar(Path(out_dir) / plan.name, samples())
    entry.update(name=plan.name, epoch=plan.epoch, first_group=plan.first_group)
    return {"entry": entry, "times": times}


def estimate_group_bytes(store: RegionStore, frame_ids: list[str], n_images: int, jpeg_quality: int,
                         images: dict[str, str]) -> float:
    """Bytes of one encoded group, from the JPEG size of up to 4 source frames (pastes add a little)."""
    from shared.shard_schema import _jpg, _png  # the schema's own encoders: same sizes as in the shards

    sizes = []
    for fid in sorted(frame_ids)[:4]:
        rec = store.read(fid)
        img = read_rgb(images[fid], rec.regions.shape)
        sizes.append(len(_jpg(img, jpeg_quality)) + 2 * len(_png(rec.regions)) + len(_png(rec.regions > 0)))
    return 1.2 * n_images * float(np.mean(sizes))


def shard_is_finished(out_dir: Path, entry: dict[str, Any] | None, verify: bool) -> bool:
    if entry is None:
        return False
    p = out_dir / entry["name"]
    if not p.is_file() or p.stat().st_size != entry["bytes"]:
        return False
    return not verify or sha256_file(p) == entry["sha256"]


# ----------------------------------------------------------------------------------------------
# the stage

def check_images(images: dict[str, str]) -> list[dict[str, str]]:
    """{"frame", "path", "problem"} for every source image that is missing or does not decode (a
    worker task: synthesis must not meet a bad frame halfway through a shard). Video frames are checked
    by one straight decode of each video, not a seek each."""
    problems = []
    frames_of = {path: fid for fid, path in images.items() if parse_ref(path)}
    for ref, problem in check_frames(list(frames_of)).items():
        problems.append({"frame": frames_of[ref], "path": ref, "problem": problem})
    for fid, path in images.items():
        if path in frames_of:
            continue
        try:
            if not path:
                raise DataError(fid, "the region store names no source image for this frame")
            read_rgb(path)  # a full decode finds a truncated file; resizing it would find nothing more
        except DataError as e:
            problems.append({"frame": fid, "path": e.path, "problem": e.problem})
    return sorted(problems, key=lambda p: p["frame"])


def source_exists(path: str) -> bool:
    """The source image is there (a video frame: its video file)."""
    ref = parse_ref(path) if path else None
    return bool(path) and Path(ref[0] if ref else path).is_file()


def shard_set_hash(cfg: ShardsConfig, store_key: str, horizons: dict[str, float]) -> tuple[str, str]:
    """(the shard set's hash, its horizons' hash). The horizons (and the split filter's result) come from
    the frame index, not the config: they key the output too."""
    horizon_key = hashlib.sha256(json.dumps(horizons, sort_keys=True).encode()).hexdigest()[:16]
    return config_hash(cfg, extra={"region_store": store_key, "horizons": horizon_key,
                                   "synthesis": SYNTHESIS_VERSION}), horizon_key


def finished_set(cfg: ShardsConfig, store_key: str, horizons: dict[str, float]) -> tuple[Path, dict] | None:
    """(folder, manifest) of a complete shard set for these settings and frames that left no source out,
    every shard matching its size (and checksum, with --verify); None: plan and write as usual. Checked
    before the sources are decoded: a finished set does not need them (one decode each is hours at the
    size of Cityscapes)."""
    h, _ = shard_set_hash(cfg, store_key, horizons)
    out_dir = output_dir(cfg, "shards", f"{cfg.proposals}-{h}")
    try:
        manifest = read_shard_manifest(out_dir)
    except DataError:  # none, or one that does not parse
        return None
    if manifest.get("config_hash") != h or manifest.get("complete") is not True \
            or manifest.get("skipped") or not manifest.get("shards"):
        return None
    if sum(e.get("samples", 0) for e in manifest["shards"]) != manifest.get("n_groups"):
        return None
    if not all(shard_is_finished(out_dir, e, cfg.verify) for e in manifest["shards"]):
        return None  # the usual path names and rewrites the damaged ones
    return out_dir, manifest


def reuse_finished(cfg: ShardsConfig, found: tuple[Path, dict], store_root: Path, height: int,
                   explicit: Collection[str], echo: Callable[[str], None]) -> Path:
    out_dir, manifest = found
    with refresh_only(echo):
        save_config(cfg, out_dir / "config.json", extra={"params": asdict(paste_params(cfg, height, explicit)),
                    "region_store": portable_path(store_root.resolve(), out_dir.resolve(), Path(cfg.out).resolve())})
        write_pointer(cfg, "shards", cfg.proposals, out_dir)
    total = sum(e["bytes"] for e in manifest["shards"])
    echo(f"shards: reusing {out_dir} ({len(manifest['shards'])} shards, {manifest['n_groups']} groups of "
         f"{manifest['images_per_group']} images, {total / 1e6:.1f} MB; checksums "
         f"{'verified' if cfg.verify else 'not checked'})")
    return out_dir


def store_depth(store: Path) -> str:
    """The depth source the region store was built from, as its saved config names it."""
    try:
        saved = json.loads((store / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown: the store has no readable config.json"
    depth = (saved.get("config") or saved).get("depth")
    return "unknown" if depth is None else depth or "the dataset's default (exact depth on the synthetic city)"


def resolve_store(cfg: ShardsConfig) -> Path:
    return Path(cfg.regions) if cfg.regions else read_pointer(cfg, "regions", cfg.proposals)


def frame_info(cfg: ShardsConfig, frame_ids: list[str], echo: Callable[[str], None]
               ) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """(horizon row as a fraction of the height (cy), split, image path) per frame from the frame
    index; 0.5, "" and "" where the index does not know the frame."""
    try:
        index = {f.id: f for f in cached_frames(cfg)}
    except (DataError, click.UsageError) as e:
        echo(f"shards: no frame index ({e}); horizon at mid-height and no split filter for every frame")
        index = {}
    missing = [fid for fid in frame_ids if fid not in index]
    if missing and index:
        echo(f"shards: {len(missing)} frames not in the frame index; horizon at mid-height for them, "
             f"and they pass the split filter")
    return ({fid: float(index[fid].cy) if fid in index else 0.5 for fid in frame_ids},
            {fid: index[fid].split if fid in index else "" for fid in frame_ids},
            {fid: index[fid].image if fid in index else "" for fid in frame_ids})


def _check_sources(cfg: ShardsConfig, images: dict[str, str]) -> list[dict[str, str]]:
    """check_images over the workers (one decode of every source image: regions read them, but an
    image can go missing or be damaged since)."""
    ids = sorted(images)
    n = max(1, min(cfg.workers, len(ids) // 16))  # a process costs more than a few decodes
    parts = [ids[i::n] for i in range(n)]
    found = run_tasks(check_images, [({f: images[f] for f in part},) for part in parts], cfg.backend,
                      cfg.scheduler, n, desc="check sources")
    return sorted((p for ps in found for p in ps), key=lambda p: p["frame"])


@dataclass
class ShardSources:
    """The frames a shard set is made of, their source images, and how its groups are laid out."""
    frame_ids: list[str]
    horizons: dict[str, Any]
    images: dict[str, str]
    skipped: list[dict[str, Any]]  # frames left out: source image missing or unreadable
    size: tuple[int, int]  # (H, W) of the region store
    store_key: str
    params: PasteParams
    n_images: int  # images per group
    groups_per_shard: int


def shard_sources(cfg: ShardsConfig, store_root: Path, store_manifest: dict[str, Any], explicit: Collection[str],
                  echo: Callable[[str], None]) -> ShardSources | Path:
    """The store's frames of the chosen splits whose source images read, and the group layout; or the
    folder of a finished shard set of the same settings and store (its sources are not read at all)."""
    with RegionStore(store_root) as store:
        frame_ids = sorted(store.frame_ids())
        horizons, splits, indexed = frame_info(cfg, frame_ids, echo)
        # pre-training sees the chosen splits only (frames the index does not know are kept)
        frame_ids = [f for f in frame_ids if not splits[f] or splits[f] in cfg.splits]
        H, W = store.size
        store_key = region_store_key(store_manifest)
        reused = finished_set(cfg, store_key, {f: horizons[f] for f in frame_ids})
        if reused is not None:
            return reuse_finished(cfg, reused, store_root, H, explicit, echo)
        # the index's path follows a moved output tree; the store's is where the image was (read from the
        # chunks only for frames whose indexed source is gone: listing every chunk's attributes reads the store)
        stored = {f: str(store.attrs(f).get("image", "")) for f in frame_ids if not source_exists(indexed[f])}
        images = {f: next((c for c in (indexed[f], stored.get(f, "")) if c and source_exists(c)),
                          indexed[f] or stored.get(f, "")) for f in frame_ids}
        skipped = _check_sources(cfg, images)
        if skipped:
            lines = [f"  {s['path']}: {s['problem']}" for s in skipped]
            if cfg.strict:
                raise DataError(skipped[0]["path"], f"--strict: {len(skipped)} bad source image(s), nothing "
                                                    "written:\n" + "\n".join(lines))
            echo(f"shards: left out {len(skipped)} frame(s) whose source image is missing or unreadable (listed "
                 "in the manifest):\n" + "\n".join(lines[:10]))
            frame_ids = [f for f in frame_ids if f not in {s["frame"] for s in skipped}]
        if len(frame_ids) < cfg.group_size:
            raise DataError(store_root, f"{len(frame_ids)} frames of split {','.join(cfg.splits)} in the region "
                                        f"store" + (f" ({len(skipped)} left out)" if skipped else "")
                                        + f", fewer than --group-size {cfg.group_size}; pass a smaller "
                                        f"--group-size (or other --splits)")
        params = paste_params(cfg, H, explicit)
        n_images = len(params.rounds) * cfg.group_size
        gps = cfg.groups_per_shard
        if gps <= 0:
            by_size = int(cfg.shard_mb * 1e6 // estimate_group_bytes(store, frame_ids, n_images, cfg.jpeg_quality,
                                                                      images))
            per_epoch = len(epoch_groups(frame_ids, cfg.group_size, 0, cfg.seed, cfg.max_groups))
            gps = max(1, min(by_size, math.ceil(per_epoch / max(1, cfg.min_shards))))
    return ShardSources(frame_ids, {f: horizons[f] for f in frame_ids}, {f: images[f] for f in frame_ids}, skipped,
                        (H, W), store_key, params, n_images, gps)


def finished_shards(plans: list[ShardPlan], old: dict[str, dict[str, Any]], out_dir: Path, verify: bool,
                    echo: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The planned shards already written whole (manifest entry for the same groups, bytes as recorded);
    one whose bytes do not match is said and left to be rewritten."""
    done: dict[str, dict[str, Any]] = {}
    rewrite = []
    for p in plans:
        e = old.get(p.name)
        if e is not None and e.get("epoch") == p.epoch and e.get("first_group") == p.first_group \
                and e.get("samples") == len(p.groups):
            if shard_is_finished(out_dir, e, verify):
                done[p.name] = e
            else:
                rewrite.append(p.name)
    for name in rewrite:
        echo(f"shards: {out_dir / name} does not match its manifest checksum (truncated or corrupt); rewriting it")
    return done


def write_pending(cfg: ShardsConfig, store_root: Path, out_dir: Path, pending: list[ShardPlan], src: ShardSources,
                  done: dict[str, dict[str, Any]], save: Callable[[bool], None],
                  echo: Callable[[str], None]) -> tuple[dict[str, float], int]:
    """Write the pending shards on the workers, listing each in the manifest as it lands; returns the
    workers' seconds per part (read, synthesise, encode) and the number of workers."""
    n_todo = sum(len(p.groups) for p in pending)
    eta = Eta("shards", n_todo, "group", echo, after=max(1, min(3, n_todo // 4)))
    times = {"read": 0.0, "synthesise": 0.0, "encode": 0.0}
    n_jobs = max(1, min(cfg.workers, len(pending)))
    tasks = [(str(store_root), str(out_dir), p, {f: src.horizons[f] for g in p.groups for f in g}, src.params,
              cfg.seed, cfg.jpeg_quality, {f: src.images[f] for g in p.groups for f in g}) for p in pending]
    with tqdm(total=n_todo, unit="group", desc="shards") as bar:
        for res in run_tasks(write_shard, tasks, cfg.backend, cfg.scheduler, n_jobs, desc="shards"):
            e = res["entry"]
            done[e["name"]] = e
            save(False)  # after the rename: a listed shard is a finished shard
            for k, v in res["times"].items():
                times[k] += v
            bar.update(e["samples"])
            eta.update(e["samples"])
    return times, n_jobs


def run_shards(cfg: ShardsConfig, echo: Callable[[str], None] = click.echo,
               explicit: Collection[str] = ()) -> Path:
    """Run the stage; returns the shard folder (also recorded as shards/<proposals>.current).
    explicit: the options the user typed (demo-size scaling leaves them alone)."""
    t_start = time.perf_counter()
    store_root = resolve_store(cfg)
    store_manifest = read_manifest(store_root)
    src = shard_sources(cfg, store_root, store_manifest, explicit, echo)
    if isinstance(src, Path):  # a finished set: nothing to write
        return src
    (H, W), n_images, gps = src.size, src.n_images, src.groups_per_shard
    h, horizon_key = shard_set_hash(cfg, src.store_key, src.horizons)
    out_dir = output_dir(cfg, "shards", f"{cfg.proposals}-{h}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_shards(src.frame_ids, cfg.group_size, cfg.epochs, cfg.seed, cfg.max_groups, gps)
    if not plans:
        raise DataError(store_root, "no groups to write (check --epochs and --max-groups)")
    n_groups = sum(len(p.groups) for p in plans)

    try:
        manifest = read_shard_manifest(out_dir)
    except DataError:  # none yet, or a damaged one: every shard is checked against the plan and rewritten
        manifest = {}
    old = {e["name"]: e for e in manifest.get("shards", [])} if manifest.get("config_hash") == h else {}
    store_path = portable_path(store_root.resolve(), out_dir.resolve(), Path(cfg.out).resolve())
    manifest = new_manifest(
        to_dict(cfg), h, {"path": store_path, "config_hash": store_manifest.get("config_hash"),
                          "content_hash": src.store_key},
        horizon_key, H, W, cfg.group_size, n_images, cfg.epochs, n_groups, gps, asdict(src.params), src.skipped)
    t_check = time.perf_counter()
    done = finished_shards(plans, old, out_dir, cfg.verify, echo)
    pending = [p for p in plans if p.name not in done]

    def save(complete: bool) -> None:
        write_manifest(out_dir, manifest, [done[p.name] for p in plans if p.name in done], complete)

    def finish(note: str) -> Path:
        with refresh_only(echo) if not pending else contextlib.nullcontext():
            save(True)
            save_config(cfg, out_dir / "config.json", extra={"params": asdict(src.params), "region_store": store_path})
            write_pointer(cfg, "shards", cfg.proposals, out_dir)
        echo(note)
        return out_dir

    total_bytes = lambda: sum(e["bytes"] for e in done.values())  # noqa: E731
    if not pending:
        return finish(f"shards: reusing {out_dir} ({len(done)} shards, {n_groups} groups of {n_images} images, "
                      f"{total_bytes() / 1e6:.1f} MB; checksums {'verified' if cfg.verify else 'not checked'} "
                      f"in {time.perf_counter() - t_check:.1f} s)")

    remove_stale_temporaries(out_dir)  # what killed writers left
    save(False)
    n_new = sum(len(p.groups) for p in pending)
    echo(f"shards: plan: {n_new} groups ({n_new * n_images} images) in {len(pending)} shards to write "
         f"({len(done)} shards already done) from {len(src.frame_ids)} frames, {cfg.epochs} epochs x "
         f"{n_groups // cfg.epochs} groups, M={cfg.group_size} -> {n_images} images per group at {H}x{W}, "
         f"{gps} groups per shard, workers={cfg.workers} (CPU), backend={cfg.backend}, from {store_root} "
         f"(regions and depth built from depth {store_depth(store_root)}); the time "
         "estimate follows the first shards")
    t_write = time.perf_counter()
    times, n_jobs = write_pending(cfg, store_root, out_dir, pending, src, done, save, echo)
    wall = time.perf_counter() - t_write
    cpu = sum(times.values())
    # the rates first, the summary (what was written where, how long it took) last
    lines = [f"shards: {n_new * n_images / wall:.1f} images/s with {n_jobs} workers; per worker: "
             + ", ".join(f"{k} {v / max(n_new, 1):.2f} s" for k, v in times.items())
             + f" per group ({n_new * n_images / max(cpu, 1e-9):.1f} images/s per core); "
             f"{total_bytes() / 1e6:.1f} MB in {len(done)} shards, "
             f"{total_bytes() / max(n_groups * n_images, 1) / 1e3:.0f} kB per image",
             f"shards: wrote {len(pending)} shards ({n_new} groups, {n_new * n_images} images) into {out_dir} "
             f"in {time.perf_counter() - t_start:.1f} s"]
    return finish("\n".join(lines))


@click.command("shards")
@config_options(ShardsConfig)
def shards(**kwargs) -> None:
    """Pre-synthesise E epochs of copy-paste groups from the region store into WebDataset shards.

    Reuses a complete shard set for the same config and region store; resumes a killed run;
    rewrites shards whose checksum does not match."""
    explicit = explicit_options()
    cfg = apply_preset(build_config(ShardsConfig, kwargs), PRESETS, explicit, click.echo, "shards")
    try:
        run_shards(cfg, explicit=explicit)
    except DataError as e:
        raise click.ClickException(str(e)) from e
