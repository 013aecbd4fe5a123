"""The region store: per-frame depth and coherent-region maps in HDF5 chunks plus a manifest.

Layout of a store folder (written by `preprocess regions`, read by `shards` and `evaluate`):

    <store>/
      manifest.json        config, config hash, working size, chunks {name: {frames, bytes, sha256}}, skipped
      config.json          the resolved config of the run that wrote it
      chunk_00000.h5       one HDF5 file per chunk of frames, written to a temporary name then renamed
      chunk_00001.h5 ...

Inside a chunk, one group per frame id:
    /<frame_id>/depth    float16 [H, W]  depth at the working resolution (units in the manifest)
    /<frame_id>/regions  uint16  [H, W]  region ids, 0 = no region (filtered out), 1..N regions
    attrs: image (source image path; relative to the store when inside OUT), n_regions, and whatever per-frame parameters the writer adds.

Depth outside float16's normal range (above 65504, e.g. millimetres, or below 2^-14) is stored
divided by a power of two, recorded as the attribute `depth_scale` (exact: a power of two changes
no digit); a frame that even so does not fit is stored as float32. So no finite depth is stored as
inf or 0, and depth in the usual range is stored exactly as before (no attribute, same bytes).

A chunk counts as finished only when it is listed in the manifest with a matching size and sha256,
so a killed run never mistakes a half-written file for a finished one. HDF5 timestamps are off
(track_times=False) so the same inputs give byte-identical chunks.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from shared.atomic import write_bytes, write_json
from shared.frames import DataError
from shared.stage import current_out, from_portable, make_command

if TYPE_CHECKING:
    import h5py

MANIFEST = "manifest.json"
FLOAT16_MAX = 65504.0  # largest finite float16
FLOAT16_TINY = 2.0 ** -14  # smallest normal float16: below it digits are lost, then the value is 0


def encode_depth(depth: np.ndarray) -> tuple[np.ndarray, float]:
    """float32 depth [H, W] -> (what to store, scale): depth = stored * scale. float16 unscaled when
    the positive finite values fit its normal range, else float16 over a power of two (values of
    at most 2^15), else float32 (a frame spanning more than ~2.7e8 : 1)."""
    finite = depth[np.isfinite(depth) & (depth > 0)]
    if finite.size == 0:
        return depth.astype(np.float16), 1.0
    hi, lo = float(finite.max()), float(finite.min())
    if hi <= FLOAT16_MAX and lo >= FLOAT16_TINY:
        return depth.astype(np.float16), 1.0
    scale = 2.0 ** math.ceil(math.log2(hi / 2.0 ** 15))
    if lo / scale >= FLOAT16_TINY:
        return (depth / scale).astype(np.float16), scale
    return depth.astype(np.float32), 1.0


@dataclass
class RegionRecord:
    frame_id: str
    depth: np.ndarray  # float32 [H, W] when read (stored float16, see encode_depth)
    regions: np.ndarray  # uint16 [H, W], 0 = no region
    attrs: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def chunk_name(i: int) -> str:
    return f"chunk_{i:05d}.h5"


def write_chunk(path: str | os.PathLike, records: list[RegionRecord]) -> dict[str, Any]:
    """Write records to `path` via a temporary file; returns the manifest entry for the chunk.

    The HDF5 file is built in memory (HDF5's own "core" driver) and written with plain file I/O: on
    a full disk HDF5 crashes the process while closing a file it could not write (a worker
    "segmentation fault"), where a plain write raises an OSError that names the file. The core
    driver lays the file out as the disk driver does (a Python file object does not: other bytes),
    so a chunk has the bytes HDF5 writes to disk itself (tests/shared/test_region_store.py)."""
    import h5py  # here and in RegionStore, not at the top: --help of the commands stays light

    path = Path(path)
    with h5py.File(f"{path.name}.in-memory", "w", driver="core", backing_store=False, libver=("earliest", "v110"),
                   track_order=True) as h5:
        for r in records:
            g = h5.create_group(r.frame_id, track_order=True)
            depth, scale = encode_depth(r.depth)
            for name, data in (("depth", depth), ("regions", r.regions.astype(np.uint16))):
                # flush: the chunks get their file space now, not when the last reference to the dataset
                # goes; a profiler holding this frame for a moment (Dask workers sample every task's
                # stack) would otherwise reorder the file's layout, and the same data give other bytes
                g.create_dataset(name, data=data, track_times=False, compression="gzip", compression_opts=4,
                                 shuffle=True).flush()
            attrs = dict(r.attrs, depth_scale=scale) if scale != 1.0 else r.attrs
            for k, v in sorted(attrs.items()):
                g.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
        h5.flush()
        data = h5.id.get_file_image()
    write_bytes(path, data)
    return {"frames": [r.frame_id for r in records], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    p = Path(root) / MANIFEST
    if not p.is_file():
        raise DataError(p, "region store manifest not found (run `make regions` first)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(p, f"corrupt manifest ({e})") from e


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any]) -> None:
    write_json(Path(root) / MANIFEST, manifest, indent=1)


def repair_hint(manifest: dict[str, Any], root: str | os.PathLike) -> str:
    """What rewrites a damaged chunk: the regions stage of the store's own settings recomputes
    every chunk that does not match the manifest. OUT is where the store is now."""
    cfg = manifest.get("config", {})
    cfg = {**cfg, "out": current_out(cfg.get("out", ""), root)}
    return "rewrite it with " + make_command("regions", cfg) + " (chunks that do not match the manifest are recomputed)"


def chunk_is_finished(root: str | os.PathLike, name: str, manifest: dict[str, Any],
                      verify: bool = True) -> bool:
    """True when the chunk is in the manifest and the file on disk matches its size (and sha256)."""
    entry = manifest.get("chunks", {}).get(name)
    p = Path(root) / name
    if entry is None or not p.is_file() or p.stat().st_size != entry["bytes"]:
        return False
    return not verify or sha256_file(p) == entry["sha256"]


class RegionStore:
    """Read access to a finished (or partly finished) store; only manifest-listed chunks are visible.

    A chunk is verified when it is read: its bytes are read once, hashed and compared with the
    manifest's size and sha256 before HDF5 sees them (from memory), so a damaged chunk is a
    DataError naming the file and the command that rewrites it, never maps read from bad bytes.
    Up to `keep_open` chunks stay in memory (readers jump between chunks: a group's frames are
    shuffled); one evicted and read again is verified again."""

    def __init__(self, root: str | os.PathLike, keep_open: int = 8):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self._where: dict[str, str] = {}
        for name, entry in sorted(self.manifest.get("chunks", {}).items()):
            for fid in entry["frames"]:
                self._where[fid] = name
        self._open: dict[str, h5py.File] = {}  # oldest first
        self.keep_open = max(1, keep_open)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the stored maps."""
        return int(self.manifest["height"]), int(self.manifest["width"])

    def frame_ids(self) -> list[str]:
        return list(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, frame_id: str) -> bool:
        return frame_id in self._where

    def _file(self, name: str) -> h5py.File:
        if name in self._open:
            self._open[name] = self._open.pop(name)  # most recently used last
            return self._open[name]
        import h5py

        p = self.root / name
        try:
            data = p.read_bytes()
        except OSError as e:
            raise DataError(p, f"unreadable region chunk ({e.strerror or e}); {repair_hint(self.manifest, self.root)}") from e
        entry = self.manifest["chunks"][name]
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry.get("bytes") or digest != entry.get("sha256"):
            raise DataError(p, f"region chunk is damaged: {len(data)} bytes with sha256 {digest[:16]}..., the "
                               f"manifest lists {entry.get('bytes')} bytes with sha256 {str(entry.get('sha256'))[:16]}...; "
                               f"{repair_hint(self.manifest, self.root)}")
        try:
            h5 = h5py.File(io.BytesIO(data), "r")
        except OSError as e:
            raise DataError(p, f"unreadable region chunk ({e}); {repair_hint(self.manifest, self.root)}") from e
        while len(self._open) >= self.keep_open:
            self._open.pop(next(iter(self._open))).close()
        self._open[name] = h5
        return h5

    def attrs(self, frame_id: str) -> dict[str, Any]:
        """The frame's attributes (image path, n_regions, ...) without decompressing its maps."""
        if frame_id not in self._where:
            raise KeyError(f"frame {frame_id!r} is not in region store {self.root}")
        g = self._file(self._where[frame_id])[frame_id]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        if "image" in attrs:  # relative to the store when the image lies in the same output tree
            attrs["image"] = str(from_portable(attrs["image"], self.root))
        return attrs

    def read(self, frame_id: str) -> RegionRecord:
        attrs = self.attrs(frame_id)
        scale = float(attrs.pop("depth_scale", 1.0))  # how the depth was stored, not about the frame
        g = self._file(self._where[frame_id])[frame_id]
        depth = g["depth"][()].astype(np.float32)
        return RegionRecord(frame_id, depth * np.float32(scale) if scale != 1.0 else depth, g["regions"][()], attrs)

    def __iter__(self) -> Iterator[RegionRecord]:
        for fid in self._where:
            yield self.read(fid)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> "RegionStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
