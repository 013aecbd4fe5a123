"""Fault injection for the kill tests (tests/test_kill_resume.py): the process kills itself with
SIGKILL at a chosen point, as a power cut or the OOM killer would, so that a test can check what
survives and that the rerun resumes to the same result.

The stages call `kill_point()` where a kill is most telling: before and after every atomic rename
(a finished temporary not yet renamed; a renamed file not yet in the manifest), after every frame
(regions), group (shards, mid-tar) and training step. With the environment variable
CPCDR_KILL_AT=N the N-th point this process passes is its last; with CPCDR_KILL_COUNT=FILE the
number of points it passed is written to FILE at exit (how a test learns the range to draw N from).
With CPCDR_KILL_SIGNAL=INT the point sends SIGINT to its process group instead, as Ctrl-C in a
terminal does (the test starts the command in a session of its own).

`full_disk(path)`: with CPCDR_FULL_DISK=TEXT, an atomic write of a file whose name contains TEXT
fails as on a full disk (OSError ENOSPC naming the file), in whichever process makes it (joblib
workers inherit the variable): how the tests reach the error path of a worker without filling a disk.

None of these is set outside the tests, and then a point costs one dictionary lookup."""
from __future__ import annotations

import atexit
import errno
import os
import signal
from pathlib import Path

_passed = 0
_counting = False


def kill_point() -> None:
    """Count this point; SIGKILL this process if it is the one CPCDR_KILL_AT names."""
    global _passed, _counting
    at, count_file = os.environ.get("CPCDR_KILL_AT"), os.environ.get("CPCDR_KILL_COUNT")
    if not at and not count_file:
        return
    _passed += 1
    if count_file and not _counting:
        _counting = True
        atexit.register(lambda: Path(count_file).write_text(str(_passed)))
    if at and _passed == int(at):
        if os.environ.get("CPCDR_KILL_SIGNAL") == "INT":  # Ctrl-C: the terminal signals the whole process group
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGKILL)


def full_disk(path: str | os.PathLike) -> None:
    """Raise the OSError of a full disk for `path` when CPCDR_FULL_DISK names part of its file name."""
    text = os.environ.get("CPCDR_FULL_DISK")
    if text and text in Path(path).name:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
