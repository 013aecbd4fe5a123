"""Training checkpoints for every trainer (depth, contrastive, fine-tuning): written atomically and
fsynced, read back on the CPU, with the RNG states that make a resumed run repeat the same steps."""
from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.atomic import atomic_path, remove_stale_temporaries, write_text
from shared.frames import DataError


class _RecordingFile:
    """A binary file that remembers the OSError its write raised: torch.save turns that error into
    a RuntimeError ("unexpected pos ..."), and the user should see the disk's own error instead."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.
    A write that fails (no space left) raises the OSError naming `path`; the old checkpoint stays."""
    with atomic_path(path, fsync=True) as tmp:
        # through a file object: torch names the archive inside after a path it is given, and the
        # temporary name carries the process id
        with open(tmp, "wb") as fh:
            out = _RecordingFile(fh)
            try:
                torch.save(state, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise
    return Path(path)


def clear_stale_saves(run_dir: str | os.PathLike) -> list[Path]:
    """Remove temporary files that a save killed midway left in a run folder and the folders in it
    (snapshots): call at start-up."""
    run_dir = Path(run_dir)
    found = remove_stale_temporaries(run_dir)
    if run_dir.is_dir():
        for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
            found += remove_stale_temporaries(sub)
    return found


def trim_log(path: str | os.PathLike, step: int) -> list[dict[str, Any]]:
    """Keep the records of a JSON-lines training log up to `step` (the checkpoint a run resumes
    from: the steps after it are about to be redone and logged again, so each step is logged once)
    and drop lines that are not JSON (the partial last line of a killed write). Returns the kept
    records."""
    path = Path(path)
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            kept.append(rec)
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False
                    ) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none; a damaged file is an error that names it
    (it is never silently replaced by a fresh start).

    mmap=True maps the tensors instead of reading them: a reader that needs part of a checkpoint
    (inference: the depth network, not the pose network and optimizer state) pages in only that part."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise DataError(path, f"unreadable checkpoint ({e!r}); move it away to start over") from e


def code_version(root: str | os.PathLike | None = None) -> str:
    """git commit of the code (+ "-dirty" with uncommitted changes), or "unknown" outside git."""
    root = Path(root or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SaveClock:
    """Wall-time checkpoints beside the step ones: a slow (CPU) run saves at least every `minutes`, so a
    kill never loses more than that. Off under several processes: each rank's clock differs, and a save
    that one rank makes and another does not would desynchronise their collectives."""

    def __init__(self, minutes: float, enabled: bool = True) -> None:
        self.seconds = minutes * 60.0 if enabled else 0.0
        self.last = time.perf_counter()

    def due(self) -> bool:
        return self.seconds > 0 and time.perf_counter() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.perf_counter()
