"""The run options every trainer shares answer to one name in every command."""
from __future__ import annotations

import importlib

import click
import pytest

from train.__main__ import COMMANDS

SHARED = {"--device", "--amp", "--no-amp", "--checkpoint-every", "--checkpoint-minutes", "--stop-after", "--progress",
          "--no-progress"}


def _command(target: str) -> click.Command:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_trainer_takes_the_shared_run_option_names(name):
    cmd = _command(COMMANDS[name])
    names = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    assert SHARED <= names, f"train {name} lacks {sorted(SHARED - names)}"
