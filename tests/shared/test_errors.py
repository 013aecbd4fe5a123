"""Filesystem errors reach the user as one line naming the path and what to do, wherever they
happen (the command, a joblib worker, torch.save), with the traceback behind --debug; a finished
stage rerun on a read-only output tree writes nothing (docs/design.md#reliability)."""
from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shared.cli import filesystem_message
from shared.imageio import write_png

ROOT = Path(__file__).resolve().parents[2]


def run_module(*argv: str, limit_bytes: int | None = None, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """`python -m <argv>` in a fresh interpreter; limit_bytes: largest file it may write (RLIMIT_FSIZE:
    a write beyond it fails with EFBIG); env: extra variables (CPCDR_FULL_DISK, shared/faults.py)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by the joblib workers, as the limit is
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=full_env, preexec_fn=limit if limit_bytes else None)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("Error:")]


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                        (errno.ENOTDIR, "is a file, not a folder"), (errno.EACCES, "permission"),
                                        (errno.EEXIST, "not a folder"), (errno.EFBIG, "too large")])
def test_each_filesystem_error_names_the_path_and_what_to_do(code, words):
    msg = filesystem_message(OSError(code, os.strerror(code), "/runs/x/chunk_00003.h5"))
    assert msg.startswith("/runs/x/chunk_00003.h5: ") and words in msg
    assert "\n" not in msg


def test_hdf5_style_errors_and_other_errors():
    # HDF5 folds errno and the file name into its text
    e = OSError("Unable to synchronously create file (unable to open file: name = '/o/chunk.h5', errno = 28, "
                "error message = 'No space left on device')")
    assert filesystem_message(e).startswith("/o/chunk.h5: no space left")
    assert filesystem_message(OSError(errno.ENOENT, "No such file", "/x")) is None  # not a filesystem state
    assert filesystem_message(ValueError("x")) is None


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(root / f"{i:04d}.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    return root


def test_out_that_is_a_file_is_one_line_and_debug_shows_the_traceback(folder_dataset, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    done = run_module("preprocess", "index", "--dataset", "folder", "--data-root", str(folder_dataset),
                      "--out", str(out))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [f"Error: {out / 'folder'}: a part of this path is a file, not a folder: "
                                        "choose another OUT or move the file away"]
    debug = run_module("preprocess", "--debug", "index", "--dataset", "folder", "--data-root", str(folder_dataset),
                       "--out", str(out))
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "NotADirectoryError" in debug.stderr


def test_a_full_disk_in_a_regions_worker_is_the_disk_error_not_a_crash(tiny_city, tmp_path):
    """The chunk write fails in a joblib worker (CPCDR_FULL_DISK: every write of a chunk meets a
    full disk): the user reads that error with the chunk's path, not "segmentation fault ...
    excessive memory" (HDF5 used to crash its process while closing a file it could not write)."""
    out = tmp_path / "out"
    args = ["preprocess", "regions", "--dataset", "synthetic", "--data-root", str(tiny_city), "--out", str(out),
            "--demo-size", "tiny", "--workers", "2", "--chunk-size", "2", "--max-frames", "4"]
    done = run_module(*args, CPCDR_FULL_DISK="chunk_")
    assert done.returncode == 1, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "chunk_0000" in lines[0] and "no space left on the device" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "segmentation" not in done.stderr.lower()
    # nothing half-written is listed or left: the rerun with space finishes
    again = run_module(*args)
    assert again.returncode == 0, again.stderr
    assert not list(out.rglob("*.tmp"))


def test_a_file_size_limit_is_the_same_kind_of_message(tmp_path, folder_dataset):
    """A real failed write (RLIMIT_FSIZE makes the kernel refuse it with EFBIG, as a full disk
    refuses with ENOSPC) from the command itself."""
    done = run_module("preprocess", "index", "--dataset", "folder", "--data-root", str(folder_dataset), "--out",
                      str(tmp_path / "out"), limit_bytes=100)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [f"Error: {tmp_path / 'out' / 'folder' / 'index.jsonl'}: file too large for the "
                                        "filesystem or the file size limit (ulimit -f): choose another OUT or raise "
                                        "the limit, then rerun; finished work is kept"]


def test_a_full_disk_during_a_checkpoint_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """torch.save reports a failed write as RuntimeError("... unexpected pos ..."); the save raises
    the disk's own error, with the checkpoint's path, and leaves the previous file and no temporary."""
    import torch

    from shared import checkpoint

    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    real_open = open
    monkeypatch.setattr(checkpoint, "open", lambda p, mode="r": FullDisk(real_open(p, mode)), raising=False)
    with pytest.raises(OSError) as info:
        checkpoint.save_checkpoint({"step": 2, "w": torch.zeros(100_000)}, path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert filesystem_message(info.value).startswith(f"{path}: no space left")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_finished_stage_on_a_read_only_tree_writes_nothing(folder_dataset, tmp_path, monkeypatch):
    """Rerunning a finished stage rewrites nothing (the same text is not written again), so it works
    where OUT cannot be written; when something must be written, the error is one line."""
    from preprocess.__main__ import main
    from shared import atomic

    args = ["index", "--dataset", "folder", "--data-root", str(folder_dataset), "--out", str(tmp_path / "out")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output

    def read_only(path, fsync=False):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "atomic_path", read_only)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output  # nothing to write
    shutil.rmtree(tmp_path / "out")
    (tmp_path / "out").mkdir()
    fresh = CliRunner().invoke(main, args)
    assert fresh.exit_code == 1 and "Traceback" not in fresh.output
    assert error_lines(fresh.output) == [f"Error: {tmp_path / 'out' / 'folder' / 'index.jsonl'}: read-only filesystem: "
                                         "choose a writable OUT (or copy the output tree to one)"]
