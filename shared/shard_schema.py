"""The shard sample schema: one WebDataset sample = one copy-paste group (docs/design.md#shard-format).

A group is synthesised from M source frames and holds N = 2M images. For each image we store
what the trainer needs to find positives, compactly:

    __key__          "e{epoch:02d}_g{group:07d}"   (no dots: webdataset splits extensions at dots)
    meta.json        {"schema": 1, "height": H, "width": W, "sources": [M frame ids],
                      "images": [{"base": f, "layers": [{"source": s, "affine": [a, b, c, d, e, f]}, ...]}]}
    img00.jpg ...    RGB JPEG of each synthesised image
    reg00.png ...    uint16 PNG, region id of every pixel, unique within the group; 0 = no region
    lay00.png ...    uint8 PNG, which layer of that image each pixel shows; 255 = no source
                     (uint16 PNG with 65535 = no source when a group has an image with more than
                     254 layers: read the dtype, or use `no_layer(layers)`)

Layer 0 of every image is its background frame (`base`, identity affine); layer k >= 1 is the
k-th paste. A layer's affine maps a pixel (x = column, y = row) of the synthesised image to a
point of its source frame: sx = a*x + b*y + c, sy = d*x + e*y + f. The pixel shows source pixel
(round(sx), round(sy)) of frame `source` (colours were sampled there; nearest for the id).
round is round-half-to-even (np.rint), and the writer uses the stored numbers exactly.

Extra keys the copy-paste writer adds (readers may ignore them): images[i]["round"] (which
round the image belongs to; its base frame is untouched background once per round) and
layers[k]["region"] (the group region id the paste shows, 0 for the background layer); a
paste's scale is 1 / e (its disparity was multiplied by it) and it is mirrored when a < 0.
Only pastes with at least one visible pixel are listed as layers.

The dense source id of a pixel is source * H * W + round(sy) * W + round(sx), or -1 for none.
Pixel-level positives: pixels (in any image of the group) with equal source ids.
Region-level positives: pixels with equal region ids (> 0).
Both are exact functions of what is stored: see `decode_group` and `source_ids`.

Why layers + affines rather than a dense (frame, y, x) map: the layer maps are piecewise constant
and compress to a few kB as PNG, while a dense int32 map costs 1.2 MB per 384x768 image; the
dense map is rebuilt in a few milliseconds by `source_ids`.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from shared.jit import njit

SCHEMA_VERSION = 1
NO_LAYER = 255  # "no source" in a uint8 layer map
NO_LAYER16 = 65535  # the same in a uint16 layer map (groups whose images have > 254 layers)


def group_key(epoch: int, group: int) -> str:
    return f"e{epoch:02d}_g{group:07d}"


@dataclass
class Group:
    images: np.ndarray  # uint8 [N, H, W, 3]
    regions: np.ndarray  # uint16 [N, H, W], 0 = no region
    layers: np.ndarray  # uint8 [N, H, W], NO_LAYER = no source (uint16 / NO_LAYER16 for > 254 layers)
    meta: dict[str, Any]  # see module docstring

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])


def no_layer(layers: np.ndarray) -> int:
    """The "no source" value of a layer map: 255 for uint8, 65535 for uint16."""
    return NO_LAYER16 if layers.dtype == np.uint16 else NO_LAYER


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # compress_level 1: these maps are piecewise constant, so fast zlib already shrinks them ~100x.
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jpg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_group(key: str, g: Group, jpeg_quality: int = 90) -> dict[str, Any]:
    """A dict ready for `webdataset.TarWriter.write` (all values bytes, no pickle)."""
    if "." in key:
        raise ValueError(f"shard keys must not contain dots: {key!r}")
    n = g.n_images
    if len(g.meta["images"]) != n:
        raise ValueError(f"meta describes {len(g.meta['images'])} images, arrays hold {n}")
    meta = dict(g.meta, schema=SCHEMA_VERSION, height=int(g.images.shape[1]), width=int(g.images.shape[2]))
    lay_dtype = np.uint16 if g.layers.dtype == np.uint16 else np.uint8
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()  # compact: hundreds of layers
    sample: dict[str, Any] = {"__key__": key, "meta.json": blob}
    for i in range(n):
        sample[f"img{i:02d}.jpg"] = _jpg(g.images[i], jpeg_quality)
        sample[f"reg{i:02d}.png"] = _png(g.regions[i].astype(np.uint16))
        sample[f"lay{i:02d}.png"] = _png(g.layers[i].astype(lay_dtype))
    return sample


def decode_group(sample: dict[str, Any]) -> Group:
    """Inverse of `encode_group` for a raw webdataset sample (values are bytes)."""
    meta = json.loads(sample["meta.json"])
    if meta.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"sample {sample.get('__key__')}: schema {meta.get('schema')} != {SCHEMA_VERSION}")
    n = len(meta["images"])

    def load(name: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(sample[name])))

    images = np.stack([load(f"img{i:02d}.jpg") for i in range(n)])
    regions = np.stack([load(f"reg{i:02d}.png") for i in range(n)]).astype(np.uint16)
    lay = [load(f"lay{i:02d}.png") for i in range(n)]
    layers = np.stack(lay).astype(np.uint16 if any(a.dtype != np.uint8 for a in lay) else np.uint8)
    return Group(images, regions, layers, meta)


def source_ids(layers: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Dense source id per pixel: int64 [N, H, W]; -1 where the pixel shows no source pixel.

    layers: uint8 (or uint16) [N, H, W] as stored; meta: the group's meta.json. One pass per image
    in a numba kernel (about 1 ms for 384x768); `source_ids_reference` is the plain numpy version.
    """
    n, h, w = layers.shape
    out = np.empty((n, h, w), dtype=np.int64)
    for i, img in enumerate(meta["images"]):
        table = np.array([[float(v) for v in layer["affine"]] + [float(layer["source"])]
                          for layer in img["layers"]], dtype=np.float64).reshape(-1, 7)
        _source_ids_image(np.ascontiguousarray(layers[i]), table, out[i])
    return out


@njit(cache=True, nogil=True)
def _source_ids_image(lay: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """lay [H, W] layer index; table [K, 7] = affine (a..f) and source per layer; out int64 [H, W]."""
    h, w = lay.shape
    n_layers = table.shape[0]
    for y in range(h):
        for x in range(w):
            k = lay[y, x]
            if k >= n_layers:
                out[y, x] = -1
                continue
            # same expression and order as the numpy reference: bit-identical rounding
            sx = np.rint(table[k, 0] * x + table[k, 1] * y + table[k, 2])
            sy = np.rint(table[k, 3] * x + table[k, 4] * y + table[k, 5])
            if sx >= 0 and sx < w and sy >= 0 and sy < h:
                out[y, x] = int(table[k, 6]) * h * w + int(sy) * w + int(sx)
            else:
                out[y, x] = -1


def source_ids_reference(layers: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """`source_ids` in plain numpy, one mask per layer (the definition; slower)."""
    n, h, w = layers.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)  # [H, W] each
    out = np.full((n, h, w), -1, dtype=np.int64)
    for i, img in enumerate(meta["images"]):
        for k, layer in enumerate(img["layers"]):
            sel = layers[i] == k
            if not sel.any():
                continue
            a, b, c, d, e, f = layer["affine"]
            sx = np.rint(a * xs[sel] + b * ys[sel] + c).astype(np.int64)
            sy = np.rint(d * xs[sel] + e * ys[sel] + f).astype(np.int64)
            ok = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
            ids = np.where(ok, int(layer["source"]) * h * w + sy * w + sx, -1)
            out[i][sel] = ids
    return out
