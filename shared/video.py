"""Video files as frame sources, decoded where the frame is used (PyAV): no frames extracted to disk.

A video frame is named by a reference string that stands where an image path stands in the frame
index (`Frame.image`), so every stage that reads `read_rgb(frame.image)` reads video too:

    /data/drive.mp4#frame=000123,pts=126976      frame 123 (presentation order), timestamp 126976
    /data/drive.mp4#frame=000123,pts=126976,crop=15:0:1890:1080   and the centre crop x:y:width:height
                                                 that gives the working size's aspect (`aspect_crop`)

The frame number is the frame's rank by presentation timestamp (pts), counted from 0; the pts is in
the stream's time base and is what the decoder looks for. A frame is decoded by seeking to the
keyframe at or before its pts and decoding forward until that pts comes out: the pixels depend on
the file and the reference only, not on which process decodes it or what it decoded before (the
seek flushes the decoder).

The table of timestamps (`probe`) comes from the container's index when it lists every frame and
the codec has no B-frames (MP4/MOV/AVI written that way: decode order is presentation order, so the
index's timestamps are the pts); otherwise from demuxing the packets (no decoding). Only the first
frame is decoded, for the rotation and the size as displayed.
"""
from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from shared.frames import DataError

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
_REF = re.compile(r"^(?P<path>.+)#frame=(?P<frame>\d+),pts=(?P<pts>-?\d+)(,crop=(?P<crop>\d+:\d+:\d+:\d+))?$")
Crop = tuple[int, int, int, int]  # x, y, width, height in displayed pixels


def frame_ref(path: str | os.PathLike, frame: int, pts: int, crop: Crop | None = None) -> str:
    return f"{os.fspath(path)}#frame={frame:06d},pts={pts}" + (f",crop={':'.join(map(str, crop))}" if crop else "")


def ref_crop(text: str | os.PathLike) -> Crop | None:
    m = _REF.match(os.fspath(text))
    return tuple(int(v) for v in m["crop"].split(":")) if m and m["crop"] else None  # type: ignore[return-value]


def aspect_crop(height: int, width: int) -> Crop | None:
    """The centre crop of a height x width frame whose aspect is the working size's (shared.frames.aspect_size):
    1080x1920 -> (15, 0, 1890, 1080) for 384x672, so the frame is scaled, never stretched; None when the
    frame already has that aspect (to half a pixel)."""
    from shared.frames import aspect_size

    rows, cols = aspect_size(height, width)
    if width * rows > cols * height:  # wider than the working size: columns go
        w = round(height * cols / rows)
        return None if w >= width else ((width - w) // 2, 0, w, height)
    h = round(width * rows / cols)
    return None if h >= height else (0, (height - h) // 2, width, h)


def parse_ref(text: str | os.PathLike) -> tuple[str, int, int] | None:
    """(video path, frame number, pts) of a video frame reference; None for any other path."""
    m = _REF.match(os.fspath(text))
    return None if m is None else (m["path"], int(m["frame"]), int(m["pts"]))


def is_video_frame(text: str | os.PathLike) -> bool:
    return parse_ref(text) is not None


@dataclass(frozen=True)
class VideoTable:
    """What the index needs of one video: every frame's pts in presentation order, and its size."""

    path: str
    pts: tuple[int, ...]  # presentation order, strictly increasing
    time_base: Fraction  # seconds per pts unit
    width: int  # as displayed (after the rotation)
    height: int
    rotation: int  # degrees counter-clockwise the display matrix turns the coded picture (0, 90, 180, 270)
    source: str  # "container index" | "packets": where the timestamps came from
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "problem"}: frames lost to damage

    def seconds(self) -> np.ndarray:
        """float64 [N]: each frame's time from the first frame's."""
        p = np.asarray(self.pts, dtype=np.int64)
        return (p - p[0]).astype(np.float64) * float(self.time_base) if len(p) else np.zeros(0)


def _open(path: str):
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot open as a video ({e}); a file cut short (truncated MP4/MOV whose index "
                              "was not written) cannot be read at all") from e
    if not container.streams.video:
        container.close()
        raise DataError(path, "has no video stream")
    return container


def _display_rotation(degrees: float | None) -> int:
    """The display matrix's angle as a quarter turn 0/90/180/270 (other angles are not a phone's: refused)."""
    r = int(round((degrees or 0) / 90.0)) * 90 % 360
    if abs(((degrees or 0) - r + 180) % 360 - 180) > 1:
        raise ValueError(f"display rotation {degrees} degrees is not a multiple of 90")
    return r


def probe(path: str | os.PathLike) -> VideoTable:
    """The frame table of `path` from container metadata (see the module docstring); DataError when it
    cannot be opened or holds no frame."""
    import av

    path = os.fspath(path)
    size = os.path.getsize(path)
    problems: list[dict[str, str]] = []
    with _open(path) as c:
        s = c.streams.video[0]
        entries = s.index_entries
        if entries is not None and s.frames > 0 and len(entries) == s.frames and not s.codec_context.has_b_frames:
            source = "container index"
            pts: list[int] = []
            for e in entries:
                if e.pos + e.size > size:  # the index promises bytes the file no longer has
                    problems.append({"path": frame_ref(path, len(pts), e.timestamp),
                                     "problem": f"packet at bytes {e.pos}-{e.pos + e.size} lies beyond the file's "
                                                f"end ({size} bytes): truncated file, frame skipped"})
                    continue
                pts.append(e.timestamp)
        else:
            source = "packets"
            pts = []
            try:
                for packet in c.demux(s):
                    if packet.pts is not None and packet.size:
                        pts.append(packet.pts)
            except av.error.FFmpegError as e:
                problems.append({"path": path, "problem": f"demuxing stopped after {len(pts)} frames ({e}): "
                                                          "damaged or truncated file, the frames after it are skipped"})
        pts = sorted(set(pts))
        if not pts:
            raise DataError(path, "no video frames found" + (f" ({problems[0]['problem']})" if problems else ""))
        c.seek(pts[0], stream=s, backward=True)
        first = None
        try:
            for frame in c.decode(s):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise DataError(path, f"the first frame does not decode ({e})") from e
        if first is None:
            raise DataError(path, "no frame decodes")
        try:
            rot = _display_rotation(first.rotation)
        except ValueError as e:
            raise DataError(path, str(e)) from e
        w, h = (first.height, first.width) if rot in (90, 270) else (first.width, first.height)
        return VideoTable(path, tuple(pts), Fraction(s.time_base), w, h, rot, source, problems)


def select_frames(seconds: np.ndarray, stride: int = 1, fps: float = 0.0, start: float = 0.0,
                  end: float = 0.0) -> list[int]:
    """Frame numbers kept from a video whose frames are at `seconds` (float64 [N], non-decreasing, from the
    first frame): those in [start, end) (end 0 = to the last frame), then every `stride`-th one, or with
    `fps` > 0 the first frame at or after each tick start + k / fps (variable frame rate: by timestamp, not
    by count; a gap longer than a tick yields one frame, not repeats)."""
    if fps > 0 and stride != 1:
        raise ValueError("give --stride or --fps, not both")
    keep = [i for i, t in enumerate(seconds) if t >= start - 1e-9 and (end <= 0 or t < end - 1e-9)]
    if fps <= 0:
        return keep[::stride]
    out, next_tick = [], 0
    for i in keep:
        k = (seconds[i] - start) * fps  # ticks since start, as a float
        if k >= next_tick - 1e-6:
            out.append(i)
            next_tick = math.floor(k + 1e-6) + 1
    return out


# ---------------------------------------------------------------------------------------------
# decoding one frame (inside the workers)

_LOCK = threading.Lock()
_OPEN: dict[tuple[int, str], object] = {}  # (pid, path) -> open container: a forked child opens its own
_MAX_OPEN = 4


def _container(path: str):
    key = (os.getpid(), path)
    if key not in _OPEN:
        if len(_OPEN) >= _MAX_OPEN:
            old = next(iter(_OPEN))
            c = _OPEN.pop(old)
            if old[0] == os.getpid():
                c.close()  # type: ignore[attr-defined]
        _OPEN[key] = _open(path)
    return _OPEN[key]


def to_rgb(frame) -> np.ndarray:
    """uint8 [H, W, 3] of a decoded frame, turned as the display matrix says."""
    arr = frame.to_ndarray(format="rgb24")
    rot = _display_rotation(frame.rotation)
    return np.ascontiguousarray(np.rot90(arr, k=rot // 90)) if rot else arr


def read_frame(ref: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] of the frame a reference names; DataError naming the reference when the file is
    gone, the frame is missing, or a packet it depends on does not decode."""
    import av

    parsed = parse_ref(ref)
    if parsed is None:
        raise DataError(ref, "not a video frame reference (<video>#frame=N,pts=T)")
    path, _, target = parsed
    ref = os.fspath(ref)
    crop = ref_crop(ref)
    if not Path(path).is_file():
        raise DataError(ref, "video file not found")
    with _LOCK:
        c = _container(path)
        s = c.streams.video[0]  # type: ignore[attr-defined]
        try:
            c.seek(target, stream=s, backward=True, any_frame=False)  # type: ignore[attr-defined]
        except av.error.FFmpegError as e:
            raise DataError(ref, f"cannot seek to the frame ({e})") from e
        damage = None  # the first undecodable packet since the keyframe: what follows may be wrong
        try:
            for packet in c.demux(s):  # type: ignore[attr-defined]
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    damage = damage or f"packet at pts {packet.pts} does not decode ({e})"
                    continue
                for frame in frames:
                    if frame.pts is None or frame.pts < target:
                        continue
                    if frame.pts > target:
                        raise DataError(ref, "the frame did not come out of the decoder"
                                             + (f": {damage}" if damage else " (missing or undecodable packet)"))
                    if damage:
                        raise DataError(ref, f"undecodable packet before it in its group of pictures: {damage}")
                    rgb = to_rgb(frame)
                    if crop is None:
                        return rgb
                    x, y, w, h = crop
                    if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
                        raise DataError(ref, f"crop {w}x{h}+{x}+{y} outside the {rgb.shape[1]}x{rgb.shape[0]} frame")
                    return np.ascontiguousarray(rgb[y:y + h, x:x + w])
        except av.error.FFmpegError as e:
            raise DataError(ref, f"reading stopped before the frame ({e}): damaged or truncated file") from e
    raise DataError(ref, "the file ends before this frame (truncated?)"
                    + (f"; {damage}" if damage else ""))


def check_frames(refs: list[str]) -> dict[str, str]:
    """ref -> problem for the frames among `refs` that do not decode cleanly (a packet of theirs, or one
    before them since their keyframe, fails). One straight decode of each video instead of a seek per
    frame: checking 100k frames costs one pass over the files (a seek costs half a group of pictures)."""
    import av

    by_video: dict[str, dict[int, str]] = {}
    problems: dict[str, str] = {}
    for ref in refs:
        parsed = parse_ref(ref)
        if parsed is None:
            problems[ref] = "not a video frame reference (<video>#frame=N,pts=T)"
        else:
            by_video.setdefault(parsed[0], {})[parsed[2]] = ref
    for path, wanted in by_video.items():
        if not Path(path).is_file():
            problems.update({r: "video file not found" for r in wanted.values()})
            continue
        clean: set[int] = set()
        try:
            with _open(path) as c:
                s = c.streams.video[0]
                damage = None  # the last failure since the last keyframe
                for packet in c.demux(s):
                    if packet.is_keyframe:
                        damage = None
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as e:
                        damage = f"packet at pts {packet.pts} does not decode ({e})"
                        continue
                    for frame in frames:
                        if frame.pts in wanted and damage is None:
                            clean.add(frame.pts)
                        elif frame.pts in wanted:
                            problems[wanted[frame.pts]] = f"undecodable packet before it in its group of pictures: {damage}"
        except (DataError, av.error.FFmpegError) as e:
            damage = str(e)
        for pts, ref in wanted.items():
            if pts not in clean and ref not in problems:
                problems[ref] = "the frame did not come out of the decoder (missing, damaged or truncated file)"
    return problems
