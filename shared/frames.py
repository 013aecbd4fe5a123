"""The frame index: one row per frame, the contract every dataset reader produces (docs/design.md#frame-index).

A row says where the image is, which sequence it belongs to and which frames are its temporal
neighbours (for depth training), the normalised intrinsics, and the label / depth files when the
dataset has them. Readers in `shared.datasets` build it; stages read it, never the raw layout.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from shared.atomic import write_text


class DataError(ValueError):
    """Bad input: always names the offending path and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuilt from its two fields when a worker process sends it back (loky, dask, ray)
        return type(self), (self.path, self.problem)


@dataclass(frozen=True)
class Frame:
    id: str  # unique within the index, filename-safe, no dots: "<sequence>_<index:06d>"-style
    image: str  # path to the RGB image (png or jpg)
    split: str  # "train" | "val" | "test"
    sequence: str  # sequence (video / snippet) id
    index: int  # position within the sequence (0-based, contiguous order of the video)
    width: int  # original image size in pixels
    height: int
    # Normalised intrinsics: fx/W, fy/H, cx/W, cy/H. Scale by any working resolution to get pixels.
    fx: float
    fy: float
    cx: float
    cy: float
    prev: Optional[str] = None  # id of the previous frame in the sequence (None at the start)
    next: Optional[str] = None  # id of the next frame in the sequence (None at the end)
    semantic: Optional[str] = None  # Cityscapes labelIds PNG (uint8), if labelled
    instance: Optional[str] = None  # Cityscapes instanceIds PNG (uint16: labelId*1000+k), if labelled
    depth: Optional[str] = None  # ground-truth depth in metres (.npy float32 or .npz), if any
    pose: Optional[tuple[float, ...]] = None  # camera-to-world 4x4, row-major (16 floats), if known

    def K(self, width: int, height: int) -> np.ndarray:
        """3x3 pixel intrinsics at a working resolution (pixel centres at integer coordinates + 0.5)."""
        return np.array([[self.fx * width, 0.0, self.cx * width],
                         [0.0, self.fy * height, self.cy * height],
                         [0.0, 0.0, 1.0]], dtype=np.float64)

    def pose_matrix(self) -> np.ndarray | None:
        return None if self.pose is None else np.asarray(self.pose, dtype=np.float64).reshape(4, 4)


WORKING_ROWS = 384  # the paper's working height
SIZE_MULTIPLE = 32  # the networks' coarsest stride: working widths are multiples of it


def aspect_size(height: int, width: int, rows: int = WORKING_ROWS) -> tuple[int, int]:
    """(rows, the width that a height x width frame's aspect gives at `rows`, rounded to a multiple of
    SIZE_MULTIPLE): 1080x1920 -> (384, 672), 1024x2048 -> (384, 768), 375x1242 -> (384, 1280). The
    rounding changes the aspect by at most half a step (16 px of ~680, 2.4%); video frames are cropped
    to the rounded aspect (shared.video), folder images keep that small residual scale, and the
    intrinsics follow each axis (Frame.K), so the 3D geometry stays exact."""
    return rows, max(SIZE_MULTIPLE, round(rows * width / height / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def link_sequences(frames: Sequence[Frame]) -> list[Frame]:
    """Fill prev/next from (sequence, index) order; neighbours must be consecutive indices."""
    by_seq: dict[str, list[Frame]] = {}
    for f in frames:
        by_seq.setdefault(f.sequence, []).append(f)
    out: list[Frame] = []
    for seq in sorted(by_seq):
        fs = sorted(by_seq[seq], key=lambda f: f.index)
        for i, f in enumerate(fs):
            prev = fs[i - 1].id if i > 0 and fs[i - 1].index == f.index - 1 else None
            nxt = fs[i + 1].id if i + 1 < len(fs) and fs[i + 1].index == f.index + 1 else None
            out.append(dataclasses.replace(f, prev=prev, next=nxt))
    return out


def odd_sized(frames: Sequence[Frame]) -> dict[str, str]:
    """frame id -> problem, for frames whose size differs from the rest of their sequence (the size
    most of its frames have; a tie goes to the first frame's). Stages skip them rather than stretch
    one frame of a video to the size of the others."""
    by_seq: dict[str, list[Frame]] = {}
    for f in frames:
        by_seq.setdefault(f.sequence, []).append(f)
    odd: dict[str, str] = {}
    for seq, fs in by_seq.items():
        counts: dict[tuple[int, int], int] = {}
        for f in sorted(fs, key=lambda f: f.index):
            counts[(f.width, f.height)] = counts.get((f.width, f.height), 0) + 1
        (w, h), n = max(counts.items(), key=lambda kv: kv[1])  # max keeps the first of equal counts
        for f in fs:
            if (f.width, f.height) != (w, h):
                odd[f.id] = (f"frame is {f.width}x{f.height}, the other {n} frame(s) of sequence {seq} are {w}x{h}: "
                             f"skipped, not stretched")
    return odd


PATH_FIELDS = ("image", "semantic", "instance", "depth")


def save_index(frames: Iterable[Frame], path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """JSON lines, one frame per line; written to a temporary name then renamed. root: the output
    root; files inside it (the synthetic city) are written relative to the index's folder, so a
    moved or copied output tree reads its own copy."""
    path = Path(path)
    folder, top = path.parent.absolute(), Path(os.path.abspath(root)) if root is not None else None

    names = [fl.name for fl in dataclasses.fields(Frame)]

    def row(f: Frame) -> dict:
        d = {k: getattr(f, k) for k in names}  # not dataclasses.asdict: its deep copy was a quarter of an index's time
        for k in PATH_FIELDS:
            if top is not None and d[k] and (top in Path(os.path.abspath(d[k])).parents):
                d[k] = os.path.relpath(os.path.abspath(d[k]), folder)
        return d

    return write_text(path, "".join(json.dumps(row(f), sort_keys=True) + "\n" for f in frames))


def load_index(path: str | os.PathLike) -> list[Frame]:
    """The frames of an index file; relative paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "frame index not found")
    folder = path.parent.absolute()
    frames = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if d.get("pose") is not None:
                d["pose"] = tuple(d["pose"])
            for k in PATH_FIELDS:
                if d.get(k) and not os.path.isabs(d[k]):
                    d[k] = os.path.normpath(folder / d[k])
            frames.append(Frame(**d))
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(path, f"line {n} is not a frame record ({e})") from e
    return frames


def by_id(frames: Iterable[Frame]) -> dict[str, Frame]:
    return {f.id: f for f in frames}
