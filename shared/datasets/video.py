"""Video files: the user's own driving footage, read where it is used (shared.video), never cut into images.

    <root> = one video file (.mp4 .mov .mkv .avi .webm .m4v)     one sequence
    <root> = a folder of them                                    one sequence per file, named by its stem
    <video>.intrinsics.json (e.g. drive.mp4.intrinsics.json)     optional, that video's camera
    <folder>/intrinsics.json                                     optional, every video's camera
                                                                 {"fx", "fy", "cx", "cy"} normalised by the
                                                                 frame size as displayed (after rotation)

Frame ids are `<stem>_<frame number:06d>`, the frame number counted in presentation order from the
file's first frame, so a frame keeps its id whatever --stride, --fps, --start or --end selects;
`index` is the frame's position among the selected frames (neighbours for depth training are the
selected frames before and after it). Without intrinsics the folder dataset's default applies.

A frame whose aspect is not the working size's (384 rows, the width rounded to a multiple of 32:
shared.frames.aspect_size) is cropped at the centre to that aspect, the crop stated in its reference
and the intrinsics moved to the crop: 1920x1080 is read as its central 1890x1080, then scaled to
672x384 without a stretch.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from shared.datasets.folder import DEFAULT_INTRINSICS, read_intrinsics
from shared.frames import DataError, Frame, link_sequences
from shared.video import VIDEO_EXTS, aspect_crop, frame_ref, probe, select_frames


def videos(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTS:
            raise DataError(root, f"not a video file (expected one of {', '.join(VIDEO_EXTS)})")
        return [root]
    if not root.is_dir():
        raise DataError(root, "video file or folder not found")
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise DataError(root, f"no video files ({', '.join(VIDEO_EXTS)}) in the folder")
    return found


def sequence_name(video: Path) -> str:
    """The video's stem made filename-safe and free of dots (frame ids carry no dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", video.stem) or "video"


def intrinsics_for(video: Path) -> tuple[float, float, float, float] | None:
    for p in (video.with_name(video.name + ".intrinsics.json"), video.parent / "intrinsics.json"):
        if p.is_file():
            return read_intrinsics(p)
    return None


def cropped_intrinsics(k: tuple[float, float, float, float], width: int, height: int,
                       crop: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Intrinsics normalised by the full width x height frame -> normalised by its crop (x, y, w, h)."""
    fx, fy, cx, cy = k
    x, y, w, h = crop
    return fx * width / w, fy * height / h, (cx * width - x) / w, (cy * height - y) / h


def read_video(root: str | os.PathLike, skipped: list[dict[str, str]] | None = None, stride: int = 1,
               fps: float = 0.0, start: float = 0.0, end: float = 0.0) -> list[Frame]:
    """Frame rows of every video under `root`, from container metadata (no frame is decoded but each
    video's first). Frames lost to damage are listed in `skipped` (None: a DataError instead)."""
    root = Path(root)
    frames: list[Frame] = []
    names: dict[str, Path] = {}
    for video in videos(root):
        seq = sequence_name(video)
        if seq in names:
            raise DataError(video, f"same sequence name {seq!r} as {names[seq]}: rename one of them")
        names[seq] = video
        table = probe(video)
        if table.problems:
            if skipped is None:
                raise DataError(table.problems[0]["path"], table.problems[0]["problem"])
            skipped.extend(table.problems)
        try:
            chosen = select_frames(table.seconds(), stride, fps, start, end)
        except ValueError as e:
            raise DataError(video, str(e)) from e
        crop = aspect_crop(table.height, table.width)
        w, h = (crop[2], crop[3]) if crop else (table.width, table.height)
        given = intrinsics_for(video)
        # the default is a guess for any frame, left as it is (and recognised by `index`'s note)
        fx, fy, cx, cy = DEFAULT_INTRINSICS if given is None else \
            cropped_intrinsics(given, table.width, table.height, crop) if crop else given
        frames += [Frame(id=f"{seq}_{n:06d}", image=frame_ref(video, n, table.pts[n], crop), split="train",
                         sequence=seq, index=i, width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy)
                   for i, n in enumerate(chosen)]
    if not frames:
        raise DataError(root, f"no frames selected (--start {start}, --end {end}: outside every video?)")
    return link_sequences(frames)
