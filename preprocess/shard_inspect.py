"""`python -m preprocess inspect`: one copy-paste group of a shard set as a PNG contact sheet.

Layout: one pair of rows per round: the round's M synthesised images, then their region maps
(each group region id in its own random colour, the same colour wherever the region appears; black
= no region). Coloured lines join a few source pixels that were pasted, through every image that
shows them (a dot marks the pixel in each image): if the correspondences are right, each line's
dots sit on the same piece of scene. The sheet is read back through the same schema functions as
the trainer uses (`decode_group`, `source_ids`), so it checks the shards, not the synthesis code.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw

from shared.config import build_config, config_options, field
from shared.frames import DataError
from shared.imageio import write_png
from shared.reuse import done_key, manifest_stamp, mark_done, reuse
from shared.shard_schema import Group, decode_group, group_key, source_ids
from shared.shard_set import MANIFEST, tar_samples
from shared.shard_set import read_manifest as read_shard_manifest
from shared.stage import StageConfig, read_pointer


@dataclass
class InspectConfig(StageConfig):
    proposals: str = field("depth", "which shard set (the shards stage's --proposals)")
    shards: str = field("", "shard folder (empty = the one `make shards` recorded for PROPOSALS)")
    key: str = field("", "group key, e.g. e00_g0000003 (empty = the first group)")
    lines: int = field(8, "correspondence lines to draw", bounds="[0, inf)")
    tile_width: int = field(384, "width of each image in the sheet, px", bounds="[8, inf)")
    seed: int = field(0, "which correspondences and colours are picked", bounds="[0, inf)")
    output: str = field("", "PNG path (empty = <shards>/inspect/<key>.png)")
    force: bool = field(False, "draw the sheet again even when the config and the shard set did not change", hash=False,
                        rerun=False)


def region_colours(ids: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [..., 3] colour per region id: a fixed pseudo-random colour per id, black for 0."""
    lut_size = int(ids.max()) + 1 if ids.size else 1
    lut = np.random.default_rng(seed).integers(40, 256, (lut_size, 3)).astype(np.uint8)
    lut[0] = 0
    return lut[ids]


def pick_correspondences(sid: np.ndarray, layers: np.ndarray, n: int, seed: int) -> list[list[tuple[int, float, float]]]:
    """Up to n tracks [(image, x, y), ...] of source pixels that were pasted and appear in several images.

    sid: int64 [N, H, W] dense source ids; layers: [N, H, W]. Pixels are taken from pastes (layer > 0);
    the tracks that reach the most images win."""
    N, H, W = sid.shape
    rng = np.random.default_rng(seed)
    pasted = np.flatnonzero((layers > 0).ravel() & (sid.ravel() >= 0))
    if pasted.size == 0 or n <= 0:
        return []
    cand = np.unique(sid.ravel()[rng.choice(pasted, size=min(400, pasted.size), replace=False)])
    per_image = [np.unique(sid[i]) for i in range(N)]
    present = np.stack([np.isin(cand, u) for u in per_image])  # [N, n_cand]
    order = np.argsort(-present.sum(0), kind="stable")
    tracks = []
    for c in order[:n]:
        if present[:, c].sum() < 2:
            break
        track = []
        for i in np.flatnonzero(present[:, c]):
            ys, xs = np.nonzero(sid[i] == cand[c])
            track.append((int(i), float(xs.mean()), float(ys.mean())))
        tracks.append(track)
    return tracks


def contact_sheet(g: Group, key: str, n_lines: int, tile_width: int, seed: int) -> np.ndarray:
    """uint8 [rows, cols, 3]: image rows and region-map rows per round, with correspondence lines."""
    N, H, W = g.layers.shape
    rounds = sorted({m.get("round", 0) for m in g.meta["images"]}) or [0]
    per_round = [[i for i, m in enumerate(g.meta["images"]) if m.get("round", 0) == r] for r in rounds]
    cols = max(len(r) for r in per_round)
    s = tile_width / W
    tw, th = tile_width, max(1, round(H * s))
    gap, head, title = 4, 14, 16
    sheet = Image.new("RGB", (cols * (tw + gap) + gap, title + len(rounds) * 2 * (th + gap + head) + gap),
                      (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    colours = region_colours(g.regions, seed)
    origin: dict[int, tuple[int, int]] = {}
    for r, idx in enumerate(per_round):
        for c, i in enumerate(idx):
            x0 = gap + c * (tw + gap)
            y_img = title + gap + r * 2 * (th + gap + head) + head
            y_reg = y_img + th + gap + head
            sheet.paste(Image.fromarray(g.images[i]).resize((tw, th), Image.BILINEAR), (x0, y_img))
            sheet.paste(Image.fromarray(colours[i]).resize((tw, th), Image.NEAREST), (x0, y_reg))
            meta = g.meta["images"][i]
            draw.text((x0, y_img - head + 1), f"#{i} base {g.meta['sources'][meta['base']]} "
                                              f"+{len(meta['layers']) - 1} pastes", fill=(220, 220, 220))
            draw.text((x0, y_reg - head + 1), f"#{i} regions", fill=(220, 220, 220))
            origin[i] = (x0, y_img)
    tracks = pick_correspondences(source_ids(g.layers, g.meta), g.layers, n_lines, seed)
    palette = np.random.default_rng(seed + 1).integers(80, 256, (max(len(tracks), 1), 3))
    for t, track in enumerate(tracks):
        colour = tuple(int(v) for v in palette[t])
        pts = [(origin[i][0] + (x + 0.5) * s, origin[i][1] + (y + 0.5) * s) for i, x, y in track]
        draw.line(pts, fill=colour, width=2)
        for px, py in pts:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], outline=colour, width=2)
    draw.text((gap, 2), f"{key}: {N} images, {len(tracks)} correspondence tracks", fill=(255, 255, 255))
    return np.asarray(sheet)


def shard_for_key(shard_dir: Path, key: str) -> tuple[Path, str]:
    """(the shard holding `key`, the key) from the manifest; an empty key means the first group of
    the first shard (a shard starts with its first group)."""
    p = shard_dir / MANIFEST
    shards = read_shard_manifest(shard_dir)["shards"]
    if not shards:
        raise DataError(p, "the manifest lists no finished shard")
    if not key:
        return shard_dir / shards[0]["name"], group_key(shards[0].get("epoch", 0), shards[0].get("first_group", 0))
    m = re.fullmatch(r"e(\d+)_g(\d+)", key)
    if not m:
        raise click.BadParameter(f"--key {key!r} is not like e00_g0000003")
    epoch, group = int(m.group(1)), int(m.group(2))
    for s in shards:
        if s.get("epoch") == epoch and s["first_group"] <= group < s["first_group"] + s["samples"]:
            return shard_dir / s["name"], key
    raise DataError(p, f"no finished shard holds group {key}")


def read_group(shard: Path, key: str) -> tuple[str, Group]:
    if not shard.is_file():
        raise DataError(shard, "shard listed in the manifest is missing")
    with open(shard, "rb") as fh:
        for sample in tar_samples(fh, str(shard)):
            if not key or sample["__key__"] == key:
                return sample["__key__"], decode_group(sample)
    raise DataError(shard, f"group {key} not found in this shard")


@click.command("inspect")
@config_options(InspectConfig)
def inspect(**kwargs) -> None:
    """Render one copy-paste group of the shards as a PNG contact sheet (images, region maps, correspondences)."""
    cfg = build_config(InspectConfig, kwargs)
    t0 = time.perf_counter()
    try:
        shard_dir = Path(cfg.shards) if cfg.shards else read_pointer(cfg, "shards", cfg.proposals)
        shard, key = shard_for_key(shard_dir, cfg.key)
        out = Path(cfg.output) if cfg.output else shard_dir / "inspect" / f"{key}.png"
        # the shard set's identity: its config hash and the checksums of its shards
        inputs = {"shards": manifest_stamp(read_shard_manifest(shard_dir), "shards")}
        done = done_key(cfg, inputs)
        if reuse(out.with_suffix(".done.json"), done, "inspect", out, cfg.force, click.echo):
            return
        key, group = read_group(shard, key)
    except DataError as e:
        raise click.ClickException(str(e)) from e
    sheet = contact_sheet(group, key, cfg.lines, cfg.tile_width, cfg.seed)
    write_png(out, sheet)
    mark_done(out.with_suffix(".done.json"), done, "inspect", cfg, inputs, [out])
    click.echo(f"inspect: {key} from {shard.name}: {group.n_images} images -> {out} "
               f"({sheet.shape[1]}x{sheet.shape[0]}) in {time.perf_counter() - t0:.1f} s")
