"""Where the regions stage gets each frame's depth (`--depth`):

    gt            ground-truth metric depth of the frame (Frame.depth: .npy float32 metres, or .npz);
                  the synthetic city has it
    files:DIR     one map per frame in DIR (searched recursively), named <frame id>, <image stem> or
                  <image stem with leftImg8bit -> disparity or depth>, as .npy, .npz or 8/16-bit .png;
                  value = raw / --depth-scale, read as depth or as disparity (--depth-kind)
    model:CKPT    the trained monocular depth network (shared.nets.depth_predictor.DepthPredictor)

The grouping only needs depth up to scale (it normalises X, Y, Z by their spread), so a disparity
map of unknown baseline or a relative-depth prediction are both fine; the unit is recorded in the
store manifest. Maps are resized to the working size with NEAREST: bilinear would blend the two
sides of an occlusion boundary into a surface that is not there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from shared.frames import DataError, Frame
from shared.imageio import read_depth_map, resize_nearest


@dataclass(frozen=True)
class DepthSpec:
    kind: str  # "gt" | "files" | "model"
    arg: str = ""  # folder or checkpoint
    depth_kind: str = "depth"  # files: "depth" | "disparity"
    scale: float = 1.0  # files: value = raw / scale
    device: str = "cpu"  # model

    @property
    def units(self) -> str:
        if self.kind == "gt":
            return "metres (ground truth)"
        if self.kind == "model":
            return f"relative depth (up to scale) from {self.arg}"
        unit = "depth" if self.depth_kind == "depth" else "depth = 1 / disparity"
        return f"{unit}, raw file values / {self.scale:g} ({self.arg})"


def parse_depth_spec(text: str, dataset: str, depth_kind: str = "depth", scale: float = 1.0,
                     device: str = "cpu") -> DepthSpec:
    """`--depth` text -> DepthSpec; empty means gt for the synthetic city and is an error elsewhere."""
    text = (text or "").strip()
    if not text:
        if dataset == "synthetic":
            return DepthSpec("gt")
        raise ValueError(f"DATASET={dataset} has no ground-truth depth: pass --depth files:DIR "
                         f"(depth or disparity maps) or --depth model:CKPT (make regions DEPTH=...)")
    if text == "gt":
        return DepthSpec("gt")
    kind, sep, arg = text.partition(":")
    if not sep or kind not in ("files", "model") or not arg:
        raise ValueError(f"--depth {text!r}: expected gt, files:DIR or model:CKPT")
    if depth_kind not in ("depth", "disparity"):
        raise ValueError(f"--depth-kind {depth_kind!r}: expected depth or disparity")
    if not scale > 0:
        raise ValueError(f"--depth-scale must be > 0, got {scale}")
    if kind == "files" and not Path(arg).is_dir():
        raise DataError(arg, "depth folder not found (--depth files:DIR)")
    if kind == "model" and not Path(arg).is_file():
        raise DataError(arg, "depth checkpoint not found (--depth model:CKPT)")
    if kind == "model" and device == "auto":  # the local processes are fresh (loky), so CUDA is safe in them
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DepthSpec(kind, arg, depth_kind, float(scale), device)


# files: a depth map whose aspect ratio is within this of the working size's is resized to it
ASPECT_TOLERANCE = 0.02
# The widest span of valid depth in one frame: 1 mm to 1 km is 1e6, in any unit. A map spanning
# more holds something else (sky or "no return" encoded as a huge value, a unit mix-up).
MAX_DEPTH_RATIO = 1e6


def check_depth(depth: np.ndarray, path: str, max_invalid: float = 0.0) -> np.ndarray:
    """Reject (DataError naming `path`) a map with NaN/inf/non-positive values beyond a `max_invalid`
    fraction, or whose valid values span more than MAX_DEPTH_RATIO : 1; a tolerated few invalid
    pixels are filled from the nearest valid pixel."""
    bad = ~np.isfinite(depth) | (depth <= 0)
    if not bad.all():
        lo, hi = float(depth[~bad].min()), float(depth[~bad].max())
        if hi > MAX_DEPTH_RATIO * lo:
            raise DataError(path, f"valid depth spans {lo:.3g} to {hi:.3g} ({hi / lo:.2g} : 1), more than a camera "
                                  f"sees in any unit ({MAX_DEPTH_RATIO:.0g} : 1, 1 mm to 1 km): are sky or missing "
                                  "values encoded as huge numbers? Write them as 0 or NaN (invalid) and allow them "
                                  "with --max-invalid-depth")
    if not bad.any():
        return depth
    frac = float(bad.mean())
    if frac > max_invalid or bad.all():
        kinds = []
        if np.isnan(depth).any():
            kinds.append("NaN")
        if np.isinf(depth).any():
            kinds.append("inf")
        if (depth <= 0).any():
            kinds.append("zero/negative")
        raise DataError(path, f"{100 * frac:.2f}% of depth pixels are invalid ({', '.join(kinds)}); "
                              f"allowed: {100 * max_invalid:.2f}% (--max-invalid-depth)")
    from scipy import ndimage  # here, not at the top: --help of the commands stays light

    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return depth[tuple(idx)]


DEPTH_SUFFIXES = (".npy", ".npz", ".png")


def candidate_stems(frame: Frame) -> list[str]:
    """The file names (without suffix) a `files:DIR` source accepts for a frame, in the order tried:
    the frame id, the image's stem, and the stem with Cityscapes' `leftImg8bit` -> `disparity` / `depth`."""
    stem = Path(frame.image).stem
    keys = [frame.id, stem, stem.replace("leftImg8bit", "disparity"), stem.replace("leftImg8bit", "depth")]
    return list(dict.fromkeys(keys))  # unique, order kept


class DepthSource:
    """Gives the depth of a frame at the working size; errors name the file."""

    def __init__(self, spec: DepthSpec, max_invalid: float = 0.0):
        self.spec = spec
        self.max_invalid = max_invalid
        self._files: dict[str, Path] | None = None
        self._predictor = None

    def _file_index(self) -> dict[str, Path]:
        if self._files is None:
            files: dict[str, Path] = {}
            for p in sorted(Path(self.spec.arg).rglob("*")):
                if p.suffix in DEPTH_SUFFIXES and p.is_file():
                    files.setdefault(p.stem, p)
            self._files = files
        return self._files

    def path_for(self, frame: Frame) -> Path:
        if self.spec.kind == "gt":
            if not frame.depth:
                raise DataError(frame.image, "frame has no ground-truth depth (use --depth files:DIR or model:CKPT)")
            return Path(frame.depth)
        files = self._file_index()
        keys = candidate_stems(frame)
        for key in keys:
            if key in files:
                return files[key]
        tried = ", ".join(f"{k}{ext}" for k in keys for ext in DEPTH_SUFFIXES)
        raise DataError(Path(self.spec.arg) / f"{frame.id}.npy",
                        f"no depth map for frame {frame.id} in {self.spec.arg} or its subfolders "
                        f"(looked for {tried})")

    def _model(self):
        if self._predictor is None:
            try:
                from shared.nets.depth_predictor import DepthPredictor  # lazy: torch import cost
            except ImportError as e:
                raise RuntimeError("--depth model:CKPT needs shared/nets/depth_predictor.py (DepthPredictor), "
                                   f"which is not available in this checkout ({e})") from e
            try:
                self._predictor = DepthPredictor(self.spec.arg, device=self.spec.device)
            except DataError as e:  # a bad checkpoint is not one bad frame: stop the run
                raise click.ClickException(f"cannot load the depth model: {e}") from e
        return self._predictor

    def load(self, frame: Frame, size: tuple[int, int], rgb: np.ndarray | None = None) -> np.ndarray:
        """float32 [H, W] depth (> 0, finite) at `size` = (H, W). `rgb` (uint8 at `size`) is the model's input."""
        if self.spec.kind == "model":
            if rgb is None:
                raise ValueError("the model depth source needs the image")
            depth = np.asarray(self._model().predict(rgb), dtype=np.float32)
            if depth.shape != tuple(size):
                raise DataError(self.spec.arg, f"model returned depth {depth.shape} for an image {tuple(size)}")
            return check_depth(depth, frame.image, self.max_invalid)
        path = self.path_for(frame)
        raw = read_depth_map(path)
        if self.spec.kind == "files":
            # KITTI's native sizes vary by drive (375x1242, 370x1226, ...) around the working size's
            # aspect; a larger difference means the map belongs to another image, or a crop
            off = (raw.shape[1] / raw.shape[0]) / (size[1] / size[0]) - 1.0
            if abs(off) > ASPECT_TOLERANCE:
                raise DataError(path, f"depth map is {raw.shape[0]}x{raw.shape[1]}, its aspect ratio differs from "
                                      f"the working size {size[0]}x{size[1]} by {100 * abs(off):.1f}% (more than "
                                      f"{100 * ASPECT_TOLERANCE:g}%: another image's map, or a crop)")
        if self.spec.kind == "gt" and raw.shape != (frame.height, frame.width):
            raise DataError(path, f"depth map is {raw.shape[0]}x{raw.shape[1]}, the image is "
                                  f"{frame.height}x{frame.width}")
        value = raw / self.spec.scale if self.spec.kind == "files" else raw
        if self.spec.kind == "files" and self.spec.depth_kind == "disparity":
            value = check_depth(value, str(path), self.max_invalid)  # zero disparity = invalid
            value = 1.0 / value
        value = check_depth(value, str(path), self.max_invalid)
        return resize_nearest(value.astype(np.float32), size)
