"""Writing files so that a killed process never leaves half a file under the real name.

Every output of the project goes through `atomic_path` (or the helpers built on it): the bytes are
written to a temporary name in the same folder, flushed, and renamed over the target. A rename
within one filesystem is atomic, so a reader sees the old file or the new one, never a mixture.
Temporary names carry `.<pid>.tmp`, so what a killed save left is recognised and removed: by the
next write of the same file, or by `remove_stale_temporaries` at a stage's start (a temporary whose
process still runs is a write in progress and is kept).

An OSError raised while writing (a full disk says only "[Errno 28] No space left on device") is
raised again with the target's path, so the message the user sees names it (shared/cli.py).
Text that is already on disk is not written again: a finished stage rerun on a read-only copy of
its output tree has nothing to write."""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from shared.faults import full_disk, kill_point

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """`.name.<pid>.tmp` beside `path`: hidden, unique per process, recognisable as ours."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _writer_is_gone(tmp: Path) -> bool:
    """True when the process whose id is in the temporary's name no longer runs (on this machine),
    so the file is what a killed write left, not a write in progress."""
    pid = tmp.name[:-len(TMP_SUFFIX)].rsplit(".", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return not pid.isdigit()
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed over `path`, on error removed.

    fsync=True also forces the bytes to disk before the rename (checkpoints: a power cut must not
    leave a renamed but empty file)."""
    path = Path(path)
    full_disk(path)  # tests: a full disk
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    for old in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):  # killed earlier writes of this file
        if _writer_is_gone(old):
            with contextlib.suppress(OSError):
                old.unlink()
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        kill_point()  # tests: killed with the temporary written, not renamed
        os.replace(tmp, path)
        kill_point()  # tests: killed with the file renamed, before the caller records it
    except OSError as e:
        if e.errno is not None and e.filename in (None, str(tmp)):  # the user knows the file, not our temporary
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` into `path`, unless the file already holds exactly that text."""
    path = Path(path)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.is_file() and path.stat().st_size == len(text.encode()) and path.read_text() == text:
            return path
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Sorted keys, so the same object always gives the same bytes."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def refresh_only(echo: Callable[[str], None]) -> Iterator[None]:
    """Around the bookkeeping writes of an output that is already complete (its manifest, config and
    pointer, which name this run's output root): on a read-only tree they are skipped with a note
    and the finished output is used as it is."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        echo(f"note: {e.filename}: cannot be written ({e.strerror}); the finished output is used as it is")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete `.*.tmp` files that killed saves left in `folder` (not recursive); returns them.
    A temporary whose writer still runs (its process id is in the name) is left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file()
             and _writer_is_gone(p)]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale
