"""A click group whose commands are imported only when called, so `--help` and one stage stay fast
(importing torch or numba for a command that does not need them costs seconds)."""
from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """`commands` maps a command name to "module:function" (a click.Command)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)
