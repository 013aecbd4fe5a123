"""Reader for the built-in synthetic city written by `preprocess.synth` (layout in its docstring).

Every frame has an image, labelIds, instanceIds, metric depth (.npy float32) and a camera-to-world
pose; ids are "<sequence>_<index:06d>", e.g. "seq00_000003".
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from shared.frames import DataError, Frame, link_sequences
from shared.imageio import image_size

_SUFFIX = {"rgb": ".png", "depth": ".npy", "labelIds": ".png", "instanceIds": ".png"}


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise DataError(path, "expected a JSON object")
    return d


def city_is_complete(root: str | os.PathLike) -> bool:
    """True only when city.json says complete and every frame file it promises exists."""
    root = Path(root)
    try:
        city = json.loads((root / "city.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(city, dict) or city.get("complete") is not True:
        return False
    for seq in city.get("sequences", []):
        name = seq["name"]
        if not (root / name / "cameras.json").is_file():
            return False
        for i in range(seq["frames"]):
            if not all((root / name / kind / f"{i:06d}{suffix}").is_file() for kind, suffix in _SUFFIX.items()):
                return False
    return True


def read_synthetic(root: str | os.PathLike, skipped: list[dict[str, str]] | None = None) -> list[Frame]:
    """Frame rows of a complete synthetic city at `root`, with prev/next neighbours linked.
    skipped: unused (one image header per sequence is read, and a city of another size is an
    error, not a bad frame); the stages that decode the frames list bad ones."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "synthetic city folder not found (render it with `python -m preprocess synth`)")
    city_path = root / "city.json"
    if not city_path.is_file():
        raise DataError(city_path, "not a synthetic city: city.json missing (render it with `python -m preprocess synth`)")
    city = _load_json(city_path)
    if city.get("complete") is not True:
        raise DataError(city_path, "synthetic city is incomplete (a render was interrupted); rerun `python -m preprocess synth` to finish it")
    sequences = city.get("sequences")
    if not isinstance(sequences, list) or not sequences:
        raise DataError(city_path, "lists no sequences")
    frames: list[Frame] = []
    for seq in sequences:
        name = seq.get("name") if isinstance(seq, dict) else None
        if not name:
            raise DataError(city_path, f"bad sequence entry {seq!r}")
        cam_path = root / name / "cameras.json"
        cams = _load_json(cam_path)
        try:
            W, H = int(cams["width"]), int(cams["height"])
            fx, fy, cx, cy = (float(cams[k]) for k in ("fx", "fy", "cx", "cy"))
            split = str(cams["split"])
            entries = cams["frames"]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(cam_path, f"missing or bad field ({e})") from e
        if entries:  # one header read per sequence catches a city rendered at another size
            first = root / name / "rgb" / f"{int(entries[0].get('index', 0)):06d}.png"
            if first.is_file() and image_size(first) != (H, W):
                raise DataError(first, f"image is {image_size(first)[1]}x{image_size(first)[0]} but "
                                       f"{cam_path} says {W}x{H}")
        for e in entries:
            try:
                i = int(e["index"])
                pose = tuple(float(v) for v in e["cam_to_world"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(cam_path, f"bad frame entry ({err})") from err
            if len(pose) != 16:
                raise DataError(cam_path, f"frame {i}: cam_to_world must have 16 numbers, got {len(pose)}")
            paths = {k: root / name / k / f"{i:06d}{s}" for k, s in _SUFFIX.items()}
            for p in paths.values():
                if not p.is_file():
                    raise DataError(p, "file not found (the synthetic city is damaged; delete it and render again)")
            frames.append(Frame(
                id=f"{name}_{i:06d}", image=str(paths["rgb"]), split=split, sequence=name, index=i,
                width=W, height=H, fx=fx, fy=fy, cx=cx, cy=cy,
                semantic=str(paths["labelIds"]), instance=str(paths["instanceIds"]), depth=str(paths["depth"]),
                pose=pose,
            ))
    return link_sequences(frames)
