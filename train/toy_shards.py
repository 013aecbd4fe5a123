"""A toy shard set with KNOWN correspondences, for tests, benchmarks and quick checks of the trainer.

Each group has M textured source frames (smooth colour fields, so JPEG keeps colours close) cut
into a grid of regions. Image i shows source i % M as background, and a region of another source
pasted at an offset, mirrored in odd rounds; a strip at the bottom shows no source. Since images
are built by sampling the sources through the stored affines, two pixels with equal source ids
show the same source colour and the same region: the tests check the loader against that.
Written in the shard set layout of the shards stage (tar shards + manifest.json).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from shared.shard_schema import NO_LAYER, Group, encode_group, group_key


def _source_frames(rng: np.random.Generator, m: int, h: int, w: int, block: tuple[int, int]):
    """source images uint8 [M, H, W, 3], regions uint16 [M, H, W] (a grid of blocks, ids unique)"""
    imgs, regs = [], []
    by, bx = block
    for s in range(m):
        coarse = rng.uniform(0, 255, size=(h // 8 + 1, w // 8 + 1, 3))
        yy = np.linspace(0, coarse.shape[0] - 1, h)
        xx = np.linspace(0, coarse.shape[1] - 1, w)
        y0, x0 = np.floor(yy).astype(int), np.floor(xx).astype(int)
        y1, x1 = np.minimum(y0 + 1, coarse.shape[0] - 1), np.minimum(x0 + 1, coarse.shape[1] - 1)
        fy, fx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
        img = ((1 - fy) * ((1 - fx) * coarse[y0][:, x0] + fx * coarse[y0][:, x1])
               + fy * ((1 - fx) * coarse[y1][:, x0] + fx * coarse[y1][:, x1]))
        imgs.append(img.astype(np.uint8))
        gy, gx = np.mgrid[0:h, 0:w]
        n_bx = -(-w // bx)
        regs.append((s * 1000 + (gy // by) * n_bx + gx // bx + 1).astype(np.uint16))
    return np.stack(imgs), np.stack(regs)


def make_group(seed: int, m: int = 2, h: int = 64, w: int = 128) -> tuple[Group, np.ndarray, np.ndarray]:
    """(group, source images uint8 [M, H, W, 3], source regions uint16 [M, H, W])."""
    rng = np.random.default_rng(seed)
    src_img, src_reg = _source_frames(rng, m, h, w, (16, 32))
    n = 2 * m
    images = np.zeros((n, h, w, 3), np.uint8)
    regions = np.zeros((n, h, w), np.uint16)
    layers = np.full((n, h, w), NO_LAYER, np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    meta_images = []
    for i in range(n):
        base, other = i % m, (i + 1) % m
        flip = (i // m) % 2 == 1
        dy, dx = int(rng.integers(-8, 9)), int(rng.integers(-16, 17))
        # paste layer: target (x, y) shows source (a*x + c, y + f)
        a, c = (-1.0, float(w - 1 + dx)) if flip else (1.0, float(dx))
        paste = [a, 0.0, c, 0.0, 1.0, float(dy)]
        lay_list = [{"source": base, "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]},
                    {"source": other, "affine": paste}]
        sx = np.rint(a * xs + c).astype(int)
        sy = ys + dy
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
        pick_region = int(src_reg[other][h // 2, w // 2])
        on_paste = inside & (src_reg[other][sy.clip(0, h - 1), sx.clip(0, w - 1)] == pick_region)
        lay = np.where(on_paste, 1, 0).astype(np.uint8)
        lay[h - 4:] = NO_LAYER  # a strip that shows no source pixel
        img = src_img[base].copy()
        reg = src_reg[base].copy()
        img[on_paste] = src_img[other][sy[on_paste], sx[on_paste]]
        reg[on_paste] = src_reg[other][sy[on_paste], sx[on_paste]]
        img[lay == NO_LAYER] = 0
        reg[lay == NO_LAYER] = 0
        images[i], regions[i], layers[i] = img, reg, lay
        meta_images.append({"base": base, "layers": lay_list})
    meta = {"sources": [f"f{seed}_{s}" for s in range(m)], "images": meta_images}
    return Group(images, regions, layers, meta), src_img, src_reg


def build_shard_set(root: Path, n_groups: int = 4, n_shards: int = 2, m: int = 2, h: int = 64, w: int = 128,
                    seed: int = 0) -> Path:
    """Write n_groups groups round-robin into n_shards tar shards plus manifest.json."""
    root.mkdir(parents=True, exist_ok=True)
    per: list[list] = [[] for _ in range(n_shards)]
    for g in range(n_groups):
        per[g % n_shards].append(g)
    shards = []
    for s, groups in enumerate(per):
        name = f"shard-{s:06d}.tar"
        with wds.TarWriter(str(root / name)) as sink:
            for g in groups:
                group, _, _ = make_group(seed * 100003 + g, m, h, w)
                sink.write(encode_group(group_key(0, g), group, jpeg_quality=95))
        data = (root / name).read_bytes()
        shards.append({"name": name, "samples": len(groups), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"config_hash": f"test{seed}", "height": h, "width": w, "group_size": m, "images_per_group": 2 * m,
                "n_groups": n_groups, "shards": shards}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root
