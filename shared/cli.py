"""A click group whose commands are imported only when called, so `--help` and one stage stay fast
(importing torch or numba for a command that does not need them costs seconds).

The module a command lives in keeps only light imports at its top (click, dataclasses, numpy,
shared.config, shared.stage) and imports torch and the like inside the functions that run the stage,
or, for a module that is torch through and through (the trainers), the command lives in a light module
(train/depth_command.py) beside the config module it shares with the worker (train/depth_config.py).
tests/shared/test_cli.py checks that `--help` of every command loads none of them
(docs/design.md#command-line).

The group is also where errors become messages: a filesystem error (no space left, read-only,
not a folder, permission denied) or a `DataError` ends the command with one line naming the path
and what to do, wherever in the stage (or in which worker) it happened; Ctrl-C ends it with one
line saying what was kept and the command that resumes; `--debug` before the command name shows
the traceback instead (docs/design.md#reliability)."""
from __future__ import annotations

import errno
import importlib
import re
import shlex

import click

from shared.frames import DataError

DEBUG = "shared.cli.debug"  # ctx.meta key: --debug was given
ARGS = "shared.cli.args"  # ctx.meta key: the arguments after the group's name

# what to do about an OSError, by errno; the message names the path first
FILESYSTEM_HINTS = {
    errno.ENOSPC: "no space left on the device: free some space (or choose another OUT) and rerun; "
                  "finished chunks, shards and checkpoints are kept and not redone",
    errno.EDQUOT: "disk quota exceeded: free some space (or choose another OUT) and rerun; "
                  "finished chunks, shards and checkpoints are kept and not redone",
    errno.EFBIG: "file too large for the filesystem or the file size limit (ulimit -f): choose another OUT "
                 "or raise the limit, then rerun; finished work is kept",
    errno.EROFS: "read-only filesystem: choose a writable OUT (or copy the output tree to one)",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another OUT or move the file away",
    errno.EEXIST: "exists and is not a folder: choose another OUT or move the file away",
    errno.EISDIR: "is a folder where a file was expected: move it away",
    errno.EACCES: "permission denied: choose an OUT you can write to, or fix the permissions",
    errno.EPERM: "operation not permitted: choose an OUT you can write to, or fix the permissions",
}


def filesystem_message(e: BaseException) -> str | None:
    """One line for a filesystem OSError ("<path>: <what happened>; <what to do>"), or None for
    any other error. Libraries that fold errno into their text (HDF5) are read too."""
    if not isinstance(e, OSError):
        return None
    code = e.errno
    text = str(e)
    if code is None:
        m = re.search(r"errno = (\d+)", text)
        code = int(m.group(1)) if m else None
    if code not in FILESYSTEM_HINTS:
        return None
    path = e.filename
    if path is None:
        m = re.search(r"(?:file ?name|name) = '([^']+)'", text)
        path = m.group(1) if m else "(path not given)"
    return f"{path}: {FILESYSTEM_HINTS[code]}"


class LazyGroup(click.Group):
    """`lazy` maps a command name to "module:function" (a click.Command); `aliases` maps an old name
    to the command name it stands for (kept working, listed beside the command, not as a row)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, aliases: dict[str, str] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.aliases = dict(aliases or {})
        missing = sorted(set(self.aliases.values()) - set(self.lazy))
        if missing:
            raise ValueError(f"aliases point at unknown commands: {', '.join(missing)}")
        self.params.append(click.Option(
            ["--debug"], is_flag=True, expose_value=False, is_eager=True,
            callback=lambda ctx, param, value: ctx.meta.__setitem__(DEBUG, value),
            help="show the full traceback of an error (before the command name: python -m train --debug ...)"))

    def parse_args(self, ctx, args):
        ctx.meta[ARGS] = list(args)  # what was typed after the group's name: the resume command repeats it
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            if ctx.meta.get(DEBUG):
                raise
            click.echo(self.interrupted(ctx), err=True)
            ctx.exit(130)  # the shell's code for "ended by Ctrl-C"
        except (OSError, DataError) as e:
            message = str(e) if isinstance(e, DataError) else filesystem_message(e)
            if message is None or ctx.meta.get(DEBUG):
                raise
            raise click.ClickException(message) from e

    def interrupted(self, ctx) -> str:
        """The one line Ctrl-C prints (instead of click's "Aborted!"): what was kept and the command that
        resumes. Every stage writes whole files only (chunks, shards, checkpoints) and a rerun goes on
        from them, so the command is the one that was typed."""
        typed = ctx.meta.get(ARGS, [])
        where = ""
        name = next((a for a in typed if not a.startswith("-")), None)
        cmd = self.get_command(ctx, name) if name else None
        if cmd is not None:
            try:
                with cmd.make_context(name, typed[typed.index(name) + 1:], parent=ctx, resilient_parsing=True) as sub:
                    p = sub.params
            except (click.ClickException, KeyboardInterrupt):
                p = {}
            if p.get("out") and p.get("dataset"):
                where = f" in {p['out']}/{p['dataset']}{'-' + p['demo_size'] if p.get('demo_size') else ''}"
        return (f"interrupted: the finished work is kept{where} (whole files only: chunks, shards, checkpoints); "
                f"resume with `{shlex.join([*ctx.command_path.split(), *typed])}`")

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        name = self.aliases.get(name, name)
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            old = sorted(a for a, target in self.aliases.items() if target == name)
            shown = name + (f" ({', '.join(old)})" if old else "")
            rows.append((shown, cmd.get_short_help_str(formatter.width - 6 - len(shown))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
