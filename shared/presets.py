"""DEMO_SIZE presets that fill only the options the user did not type.

A preset is a plain dict of config fields. `explicit_options` asks click where each value came from
(command line, environment or a `--config FILE` = the user's; default = ours), and `apply_preset`
changes only the fields the user left at their default, so `--demo-size tiny --backbone resnet50`
trains a ResNet-50. Every stage with presets goes through these two functions; nothing else may
override an option.

A field whose value differs from its dataclass default was set by someone (a caller in code has no
click context to ask), so a preset never replaces it either. Fields whose default means "from the
preset" (0 or "") are filled by passing an empty `explicit`."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Collection, Mapping, TypeVar

import click

from shared.config import FILE_KEYS

C = TypeVar("C")
_NO_DEFAULT = object()


def explicit_options(ctx: click.Context | None = None) -> set[str]:
    """Names of the parameters whose value the user gave (command line, environment or --config)."""
    ctx = ctx or click.get_current_context()
    default_sources = {click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP}
    # --config FILE arrives through the default map, but the user chose those values: a rerun of a
    # saved config must not have a preset change them
    from_file = ctx.meta.get(FILE_KEYS, set())
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) not in default_sources or name in from_file}


def apply_preset(cfg: C, presets: Mapping[str, Mapping[str, Any]], explicit: Collection[str],
                 echo: Callable[[str], None] | None = None, stage: str = "") -> C:
    """`cfg` with the preset of `cfg.demo_size` filled in where the field is not in `explicit` and
    still holds its default."""
    preset = presets.get(getattr(cfg, "demo_size", ""), {})
    defaults = _defaults(cfg)
    unknown = sorted(set(preset) - set(defaults))
    if unknown:  # a preset naming a field that does not exist is a bug in the preset table
        raise KeyError(f"preset names unknown fields of {type(cfg).__name__}: {', '.join(unknown)}")
    changes = {k: v for k, v in preset.items() if k not in explicit and getattr(cfg, k) == defaults[k]}
    if changes and echo is not None:
        echo(f"{stage or type(cfg).__name__}: DEMO_SIZE={cfg.demo_size} preset: "  # type: ignore[attr-defined]
             + ", ".join(f"{k}={v}" for k, v in changes.items()))
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def _defaults(cfg: Any) -> dict[str, Any]:
    """Field name -> dataclass default (a marker equal to no value for a field without one)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = _NO_DEFAULT
    return out
