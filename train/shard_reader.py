"""Reading a shard set wherever it lives: a folder, an http(s) URL, or a `pipe:` command (object stores).

A shard set's location is one of

    runs/synthetic/shards/depth-<hash>           a folder: manifest.json + shard-*.tar
    http://host:8000/sets/depth-<hash>           the same files under a URL (any static file server)
    pipe:aws s3 cp s3://bucket/depth-<hash>/{name} -
                                                 a command that writes one file to stdout; {name} is
                                                 replaced by manifest.json or a shard's file name

and the manifest is read from the same place as the shards. This module only opens those locations
as byte streams, with errors that name the URL; the manifest is parsed by shared/shard_set.py and a
shard is read and checked against its sha256 by train/shard_loader.py (`verified_samples`).
"""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterator

from shared.frames import DataError

PIPE = "pipe:"
HTTP_TIMEOUT_S = 60.0


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
