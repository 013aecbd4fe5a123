"""Writing files so that a killed process never leaves half a file under the real name.

Every output of the project goes through `atomic_path` (or the helpers built on it): the bytes are
written to a temporary name in the same folder, flushed, and renamed over the target. A rename
within one filesystem is atomic, so a reader sees the old file or the new one, never a mixture.
Temporary names carry `.tmp`, so `remove_stale_temporaries` can clear what a killed save left."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """`.name.<pid>.tmp` beside `path`: hidden, unique per process, recognisable as ours."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed over `path`, on error removed.

    fsync=True also forces the bytes to disk before the rename (checkpoints: a power cut must not
    leave a renamed but empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Sorted keys, so the same object always gives the same bytes."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete `.*.tmp` files that killed saves left in `folder` (not recursive); returns them.

    Only call this where no other live process is writing into `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale
