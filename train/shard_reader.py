"""Reading a shard set wherever it lives: a folder, an http(s) URL, or a `pipe:` command (object stores).

A shard set's location is one of

    runs/synthetic/shards/depth-<hash>           a folder: manifest.json + shard-*.tar
    http://host:8000/sets/depth-<hash>           the same files under a URL (any static file server)
    pipe:aws s3 cp s3://bucket/depth-<hash>/{name} -
                                                 a command that writes one file to stdout; {name} is
                                                 replaced by manifest.json or a shard's file name

and the manifest is read from the same place as the shards. Each shard is read once, as a stream:
its bytes are counted and hashed as the tar reader consumes them, and when the shard ends the size
and sha256 are compared with the manifest's. A shard damaged in storage or in transit stops the run
with a DataError naming its URL. The check comes at the end of the shard, so that shard's samples
have already been handed on by then; checking every shard before use would read everything twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Optional

from shared.frames import DataError

MANIFEST = "manifest.json"
PIPE = "pipe:"
HTTP_TIMEOUT_S = 60.0
# (bytes, sha256) the manifest promises for a shard; None where it says nothing
Check = tuple[Optional[int], Optional[str]]


def is_remote(location: str) -> bool:
    return location.startswith((PIPE, "http://", "https://"))


def shard_url(location: str, name: str) -> str:
    """The URL (or path, or pipe command) of file `name` of the shard set at `location`."""
    if location.startswith(PIPE):
        if "{name}" not in location:
            raise DataError(location, "a pipe: shard set needs {name} where the file name goes, "
                                      "e.g. 'pipe:aws s3 cp s3://bucket/set/{name} -'")
        return location.replace("{name}", name)
    if is_remote(location):
        return location.rstrip("/") + "/" + name
    return str(Path(location) / name)


@contextlib.contextmanager
def open_url(url: str) -> Iterator[BinaryIO]:
    """A binary stream of `url` (path, http(s) URL or pipe: command); errors name the URL.

    Leaving early closes the connection or kills the command; a command that exits non-zero after
    its output is an error (its stderr tail in the message)."""
    if url.startswith(PIPE):
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty stderr cannot block the command

            def failure(code: int) -> DataError:
                err.seek(0)
                tail = err.read()[-500:].decode(errors="replace").strip()
                return DataError(url, f"command exited with status {code}" + (f": {tail}" if tail else ""))

            proc = subprocess.Popen(url[len(PIPE):], shell=True, stdout=subprocess.PIPE, stderr=err)
            try:
                yield proc.stdout  # type: ignore[misc]
            except BaseException as exc:
                proc.stdout.close()  # type: ignore[union-attr]
                try:  # a command still writing gets SIGPIPE now; one that failed has already exited
                    code = proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                if isinstance(exc, Exception) and code > 0:
                    raise failure(code) from exc  # the command's own error explains the bad stream
                raise
            proc.stdout.close()  # type: ignore[union-attr]
            code = proc.wait()
            if code != 0:
                raise failure(code)
        return
    if is_remote(url):
        try:
            resp = urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise DataError(url, f"HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise DataError(url, f"cannot fetch ({getattr(e, 'reason', e)})") from e
        with resp:
            yield resp
        return
    try:
        fh = open(url, "rb")
    except FileNotFoundError as e:
        raise DataError(url, "file not found (listed in the manifest but missing?)") from e
    with fh:
        yield fh


def read_bytes(url: str) -> bytes:
    try:
        with open_url(url) as fh:
            return fh.read()
    except OSError as e:  # a connection dropped mid-read
        raise DataError(url, f"read failed ({e})") from e


class CheckedStream:
    """A read-only stream that counts and hashes the bytes passing through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self, block: int = 1 << 20) -> None:
        """Read to the end (the tar's end blocks and padding count in the checksum)."""
        while self.read(block):
            pass


def tar_samples(stream: Any, url: str) -> Iterator[dict[str, Any]]:
    """webdataset's grouping: consecutive members `<key>.<ext>` -> {"__key__", "__url__", ext: bytes}
    (the key ends at the first dot of the name; shard keys contain none)."""
    sample: dict[str, Any] | None = None
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if not info.isreg():
                continue
            key, _, ext = info.name.partition(".")
            if sample is not None and sample["__key__"] != key:
                yield sample
                sample = None
            if sample is None:
                sample = {"__key__": key, "__url__": url}
            sample[ext.lower()] = tar.extractfile(info).read()  # type: ignore[union-attr]
            tar.members = []  # a streamed tar need not remember the members it has passed
    if sample is not None:
        yield sample


def read_shard(url: str, check: Check = (None, None)) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order; its size and sha256 are checked when it ends (DataError)."""
    size, sha = check
    with open_url(url) as raw:
        stream = CheckedStream(raw)
        last = None
        try:
            for sample in tar_samples(stream, url):
                if last is not None:
                    yield last
                last = sample  # held back: a shard's last sample comes after its check
            stream.drain()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(url, f"unreadable shard after {stream.size} bytes ({e})") from e
    if size is not None and stream.size != size:
        raise DataError(url, f"shard has {stream.size} bytes, the manifest says {size} (truncated or replaced)")
    if sha is not None and stream.sha.hexdigest() != sha:
        raise DataError(url, f"shard sha256 {stream.sha.hexdigest()[:16]}... differs from the manifest's "
                             f"{sha[:16]}... (corrupted in storage or in transit)")
    if last is not None:
        yield last


def read_shards(urls: Iterable[str], checks: Mapping[str, Check]) -> Iterator[dict[str, Any]]:
    """The samples of several shards one after another, each checked against `checks` (by URL)."""
    for url in urls:
        yield from read_shard(url, checks.get(url, (None, None)))
