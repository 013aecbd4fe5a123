"""The shard set's contract (docs/design.md#shard-format): its manifest, written by `preprocess shards` alone
and read by the trainer, `preprocess inspect`, the ablation and the benches through this module, and
the one way a shard's tar members are read back into groups.

A shard set is a folder (or the same files under a URL):

    manifest.json      config, config_hash, schema, region_store {path, config_hash, content_hash},
                       horizons_hash, height, width, group_size (M), images_per_group (2M), epochs,
                       n_groups, groups_per_shard, params (copy-paste constants), shards
                       [{name, epoch, first_group, samples, bytes, sha256}], complete, skipped
    shard-NNNNNN.tar   one webdataset tar per shard: the members <key>.<ext> of each group in a row

A shard is listed only once it is whole (written to a temporary name, renamed, then listed), and
`complete` turns true when the last one is, so a reader can tell a finished set from a killed run's."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path
from typing import IO, Any, Iterator

from shared.atomic import write_json
from shared.frames import DataError

MANIFEST = "manifest.json"
SCHEMA = 1
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # key.ext, as webdataset splits tar member names


def new_manifest(config: dict[str, Any], config_hash: str, region_store: dict[str, Any], horizons_hash: str,
                 height: int, width: int, group_size: int, images_per_group: int, epochs: int, n_groups: int,
                 groups_per_shard: int, params: dict[str, Any], skipped: list[Any]) -> dict[str, Any]:
    """The manifest of a set whose shards are still to be written (none listed, not complete). The key
    order is the file's: the same settings give the same bytes."""
    return {"config": config, "config_hash": config_hash, "schema": SCHEMA, "region_store": region_store,
            "horizons_hash": horizons_hash, "height": height, "width": width, "group_size": group_size,
            "images_per_group": images_per_group, "epochs": epochs, "n_groups": n_groups,
            "groups_per_shard": groups_per_shard, "params": params, "shards": [], "complete": False,
            "skipped": skipped}


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any], shards: list[dict[str, Any]],
                   complete: bool) -> Path:
    """List the finished `shards` (in set order) and whether the set is complete; written atomically."""
    manifest["shards"] = shards
    manifest["complete"] = complete
    return write_json(Path(folder) / MANIFEST, manifest, indent=1)


def parse_manifest(data: bytes | str, where: str) -> dict[str, Any]:
    """A manifest's contents, its required keys checked; DataError naming `where` (a path or URL) otherwise."""
    try:
        m = json.loads(data)
        for s in m["shards"]:
            str(s["name"]), int(s["samples"])
        int(m["height"]), int(m["width"]), int(m["n_groups"]), images_per_group(m)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(where, f"unreadable shard manifest ({e!r})") from e
    return m


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the shard set in `folder`; DataError when there is none or it does not parse."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(path, "shard set has no manifest.json (incomplete or not a shard set folder; run `make shards`)")
    return parse_manifest(path.read_bytes(), str(path))


def images_per_group(m: dict[str, Any]) -> int:
    """Images of a group: 2M (group_size M source frames, each pasted twice); older manifests lack the key."""
    return int(m.get("images_per_group", 2 * int(m["group_size"])))


def shards_digest(m: dict[str, Any]) -> str:
    """A digest of the shard list (names, sizes, checksums): what a training run read."""
    listed = [[s["name"], int(s["samples"]), s.get("bytes"), s.get("sha256")] for s in m["shards"]]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]


def tar_samples(fileobj: IO[bytes], url: str) -> Iterator[dict[str, Any]]:
    """The groups of one shard, streamed: consecutive members <key>.<ext> -> {"__key__", "__url__", ext: bytes}
    (webdataset's grouping). Raises tarfile.TarError / EOFError for a stream that is not a tar."""
    sample: dict[str, Any] | None = None
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            m = _MEMBER.match(member.name) if member.isfile() else None
            if m is None:
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if sample is not None and sample["__key__"] != m.group(1):
                yield sample
                sample = None
            if sample is None:
                sample = {"__key__": m.group(1), "__url__": url}
            sample[m.group(2).lower()] = data
            tar.members = []  # a streamed tar need not remember the members it has passed
    if sample is not None:
        yield sample
