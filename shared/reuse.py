"""Reusing a finished output when nothing it was made from changed (docs/design.md#done-records).

A report-like stage (proposals, inspect, unsupervised, depth-eval) cannot resume part-way: it either
recomputes everything or nothing. After it has written every output file it writes a small *done
record* beside them (atomically, last, so a killed run leaves no record and is redone):

    {"format": 1, "stage": ..., "key": <hash of the resolved config and the inputs' fingerprint>,
     "config_hash": ..., "inputs": {name: fingerprint}, "outputs": {relative path: [size, mtime_ns]}}

A rerun computes the key again from its resolved config (`config_hash`: fields with hash=False, such
as workers or the device, do not count) and the fingerprints of what it would read (a checkpoint's
size and mtime, a manifest's config hash and checksums, the frames' files). Same key, and every
output still on disk with the size and mtime it was written with: the stage prints one line and
stops. A new checkpoint, another store, changed frames or an output rewritten by another run since:
the stage recomputes. `--force` recomputes regardless.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from shared.atomic import write_json
from shared.config import config_hash

FORMAT = 1  # bump when what a record promises changes, so older records stop counting


def file_stamp(path: str | os.PathLike) -> str:
    """'size mtime_ns' of a file ('missing' when there is none): changes when it is rewritten."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size} {st.st_mtime_ns}"


def files_stamp(paths: Iterable[str | os.PathLike]) -> str:
    """One fingerprint of many files (their paths, sizes and mtimes), in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p} {file_stamp(p)}\n".encode())
    return h.hexdigest()[:16]


def folder_stamp(folder: str | os.PathLike) -> str:
    """Fingerprint of every file under `folder` (recursive, sorted): a folder of depth maps."""
    root = Path(folder)
    return files_stamp(sorted(str(p) for p in root.rglob("*") if p.is_file())) if root.is_dir() else "missing"


def frames_stamp(frames: Iterable[Any], fields: tuple[str, ...]) -> str:
    """Fingerprint of the frames a stage reads: each frame's id and, per field named (image,
    semantic, instance, depth), the file's path, size and mtime (absent fields count as such)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f"{f.id}\n".encode())
        for name in fields:
            path = getattr(f, name, None)
            h.update(f" {name} {path} {file_stamp(path) if path else '-'}\n".encode())
    return h.hexdigest()[:16]


def manifest_stamp(manifest: Mapping[str, Any], entries: str) -> str:
    """A store's or shard set's identity from its manifest: its config hash and the checksums of the
    entries it lists (`entries`: "chunks" of a region store, "shards" of a shard set). Bookkeeping
    in the manifest (the `out` a later run was given, its worker count) does not count."""
    listed = manifest.get(entries) or {}
    items = listed.items() if isinstance(listed, Mapping) else ((e.get("name"), e) for e in listed)
    sums = sorted((str(name), str(e.get("sha256"))) for name, e in items)
    blob = json.dumps({"config_hash": manifest.get("config_hash"), entries: sums}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def done_key(cfg: Any, inputs: Mapping[str, Any]) -> str:
    """The key a done record holds: the resolved config's hash (hash=False fields excluded) with
    the inputs' fingerprints."""
    return config_hash(cfg, extra={"done_format": FORMAT, "inputs": dict(inputs)}, length=16)


def _outputs_now(record: Path, names: Iterable[str]) -> dict[str, list[int] | None]:
    out: dict[str, list[int] | None] = {}
    for name in names:
        try:
            st = (record.parent / name).stat()
            out[name] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[name] = None
    return out


def is_done(record: str | os.PathLike, key: str) -> bool:
    """True when `record` holds `key` and every output it lists is on disk as it was written."""
    record = Path(record)
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("key") != key:
        return False
    listed = saved.get("outputs") or {}
    return bool(listed) and _outputs_now(record, listed) == {k: list(v) for k, v in listed.items()}


def reuse(record: str | os.PathLike, key: str, stage: str, shown: str | os.PathLike, force: bool = False,
          echo: Callable[[str], None] = print) -> bool:
    """The check a stage makes before any work: True (after echoing the one reuse line) when the
    finished output can be used as it is. Otherwise the stage is about to rewrite its outputs, so an
    old record goes first: a run killed halfway must not leave a record next to half-new files."""
    if force or not is_done(record, key):
        with contextlib.suppress(OSError):  # none, or a read-only tree (the run will say so when it writes)
            Path(record).unlink()
        return False
    echo(f"{stage}: reusing {shown} (inputs unchanged; --force to recompute)")
    return True


def mark_done(record: str | os.PathLike, key: str, stage: str, cfg: Any, inputs: Mapping[str, Any],
              outputs: Iterable[str | os.PathLike]) -> Path:
    """Write the done record once every output is written: outputs are stored relative to the
    record's folder (the tree can move) with their size and mtime."""
    record = Path(record)
    names = sorted({os.path.relpath(Path(p).absolute(), record.parent.absolute()) for p in outputs})
    now = _outputs_now(record, names)
    missing = [n for n, v in now.items() if v is None]
    if missing:
        raise FileNotFoundError(f"{stage}: done record {record} lists outputs that were not written: {missing}")
    return write_json(record, {"format": FORMAT, "stage": stage, "key": key, "config_hash": config_hash(cfg),
                               "inputs": dict(inputs), "outputs": now})
