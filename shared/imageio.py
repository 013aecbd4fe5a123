"""Reading and writing images and maps with errors that name the file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shared.atomic import atomic_path
from shared.frames import DataError
from shared.video import is_video_frame, read_frame


def _open(path: str | os.PathLike, draft: tuple[int, int] | None = None) -> Image.Image:
    """The decoded image; `draft` = (height, width) lets a JPEG decode at 1/2, 1/4 or 1/8 scale while
    staying at least that large (a 50-megapixel frame then never exists in memory at full size)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found")
    try:
        img = Image.open(p)
        if draft is not None and img.format == "JPEG":
            h, w = draft
            if _orientation(img) in _SWAPS_AXES:  # the stored frame is the displayed one turned by 90 degrees
                h, w = w, h
            img.draft(img.mode, (w, h))
        img.load()  # forces a full decode, so truncated files fail here and not later
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(p, f"unreadable or truncated image ({e})") from e
    return img


# EXIF orientations (tag 0x0112) whose displayed frame is the stored one turned by 90 degrees.
_SWAPS_AXES = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 (as stored) when absent or unreadable."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, TypeError):  # a damaged EXIF block does not make the pixels bad
        return 1


def to_rgb8(img: Image.Image, path: str | os.PathLike) -> Image.Image:
    """Any camera frame -> 8-bit RGB as displayed. 16-bit samples keep their high byte (v // 256): the
    bit-depth rule Pillow already applies to 16-bit colour PNGs, so grey and colour 16-bit frames agree
    and a dark frame stays dark (docs/reliability.md#16-bit-frames). Alpha is dropped (the stored
    colour is the camera's), palette and CMYK are converted by Pillow. Modes that are not camera
    frames (32-bit integer, float) are refused, naming the file and the mode."""
    if _orientation(img) != 1:  # exif_transpose copies even when there is nothing to turn
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        grey = np.asarray(img)  # [H, W] uint16, whatever the file's byte order
        img = Image.fromarray((grey >> 8).astype(np.uint8))
    if img.mode in ("I", "F"):
        raise DataError(path, f"image mode {img.mode} ({'32-bit integer' if img.mode == 'I' else 'floating point'}"
                              " samples) is not a camera frame: save it as 8- or 16-bit grey or RGB")
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise DataError(path, f"image mode {img.mode} cannot be converted to RGB ({e})") from e


def read_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] as displayed (EXIF orientation applied, any bit depth or mode: `to_rgb8`);
    `size` = (height, width) resizes bilinearly (antialiased). A video frame reference
    (shared.video) is decoded from its video."""
    if is_video_frame(path):
        img = Image.fromarray(read_frame(path))
    else:
        img = to_rgb8(_open(path, draft=size), path)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def read_label(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Integer label map (uint8 labelIds or uint16/int32 instanceIds); resized with nearest neighbour."""
    arr = np.asarray(_open(path))
    if arr.ndim != 2:
        raise DataError(path, f"expected a single-channel label map, got shape {arr.shape}")
    return arr if size is None else resize_nearest(arr, size)


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, ...] -> [h, w, ...]: output pixel i takes input row floor((i + 0.5) H / h), the input pixel
    under its centre. Integer arithmetic, so labels, sparse LiDAR depth and depth maps resized anywhere
    in the project land on exactly the same pixels (float versions disagree on ties)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    rows = ((2 * np.arange(h, dtype=np.int64) + 1) * arr.shape[0]) // (2 * h)
    cols = ((2 * np.arange(w, dtype=np.int64) + 1) * arr.shape[1]) // (2 * w)
    return arr[rows][:, cols]


def read_depth_map(path: str | os.PathLike) -> np.ndarray:
    """Raw values of a depth or disparity map -> float32 [H, W]: .npy, .npz (key `velodyne_depth` when
    present, as in the KITTI samples, else the first array) or 8/16-bit .png. Units are the caller's."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "depth file not found")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if not z.files:
                    raise DataError(p, "empty .npz")
                arr = z["velodyne_depth" if "velodyne_depth" in z.files else z.files[0]]
        elif p.suffix == ".png":
            with Image.open(p) as img:
                img.load()
                arr = np.asarray(img)
        else:
            raise DataError(p, "unsupported depth file type (use .npy, .npz or 16-bit .png)")
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DataError(p, f"unreadable or truncated depth file ({e})") from e
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DataError(p, f"expected a single-channel depth map, got shape {arr.shape}")
    return arr.astype(np.float32)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) as displayed (EXIF orientation applied), from the header only (a video
    frame: decoded)."""
    if is_video_frame(path):
        return read_frame(path).shape[:2]
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found")
    try:
        with Image.open(p) as img:
            return (img.width, img.height) if _orientation(img) in _SWAPS_AXES else (img.height, img.width)
    except (OSError, SyntaxError) as e:
        raise DataError(p, f"not an image ({e})") from e


def write_png(path: str | os.PathLike, arr: np.ndarray, compress_level: int | None = None) -> None:
    """uint8 RGB/grey or uint16 grey PNG, written then renamed so readers never see half a file.
    compress_level: zlib level 0-9 (None: PIL's default, 6); the bytes depend only on pixels and level."""
    options = {} if compress_level is None else {"compress_level": compress_level}
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", **options)


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """An array as .npy, written then renamed (read back by read_depth_map)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save would append .npy to a name
        np.save(fh, arr)
