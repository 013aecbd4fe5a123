"""A click group whose commands are imported only when called, so `--help` and one stage stay fast
(importing torch or numba for a command that does not need them costs seconds).

The module a command lives in keeps only light imports at its top (click, dataclasses, numpy,
shared.config, shared.stage) and imports torch and the like inside the functions that run the stage,
or, for a module that is torch through and through (the trainers), the command and its config live
in a light sibling module (train/depth_command.py). tests/shared/test_cli.py checks that `--help` of
every command loads none of them (docs/design.md#command-line)."""
from __future__ import annotations

import importlib

import click


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
