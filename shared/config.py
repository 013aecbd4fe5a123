"""One config dataclass per entry point, exposed as `--key value` click options.

Every field of the dataclass becomes an option (`snake_case` -> `--snake-case`), so `--help` lists
every knob with its default, and click rejects unknown keys. The resolved config is saved next to
every output (`save_config`) and hashed (`config_hash`) to key reusable outputs by their settings.
`--config FILE` reruns such a saved config: its values become the defaults, options typed on the
command line still win (docs/design.md#config).

Field metadata:
  help: str          one line for --help
  choices: list      restrict the value to these strings
  hash: bool         False for fields that do not change the output (workers, progress bars)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from shared.atomic import write_json

C = TypeVar("C")


def field(default: Any, help: str = "", choices: list[str] | None = None, hash: bool = True) -> Any:
    """A dataclass field with a --help line; lists/tuples are passed by value (immutable tuples)."""
    meta = {"help": help, "choices": choices, "hash": hash}
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, is_sequence) for a field annotation; Optional[X] -> X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), True
    return tp, False


class _SequenceParam(click.ParamType):
    """Comma-separated values, e.g. `--rounds 1,2` -> (1.0, 2.0)."""

    name = "list"

    def __init__(self, item: type):
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return tuple(self.item(v) for v in value)
        try:
            return tuple(self.item(v) for v in str(value).split(",") if v.strip() != "")
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.item.__name__}", param, ctx)


# ctx.meta key: the fields whose value came from --config FILE (shared.presets counts them as the user's).
FILE_KEYS = "shared.config.file_keys"


def read_config_file(cls: type, path: str | os.PathLike) -> dict[str, Any]:
    """The field values of a config saved by `save_config` for `cls`; click.BadParameter naming the
    file when it is not one, holds another class's config, or has keys `cls` does not have."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise click.BadParameter(f"{path}: not a readable JSON config ({e})", param_hint="--config") from e
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "config_class" not in saved:
        raise click.BadParameter(f"{path}: expected a saved config {{\"config_class\": ..., \"config\": {{...}}}} "
                                 "(the config.json written beside a stage's output)", param_hint="--config")
    if saved["config_class"] != cls.__name__:
        raise click.BadParameter(f"{path} holds a {saved['config_class']}, this command takes a {cls.__name__}",
                                 param_hint="--config")
    values = saved["config"]
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise click.BadParameter(f"{path}: unknown keys for {cls.__name__}: {', '.join(unknown)}",
                                 param_hint="--config")
    return values


def _config_file_option(cls: type) -> Callable[[Callable], Callable]:
    """`--config FILE`, eager so that it runs before the other options: it sets their defaults
    (ctx.default_map), so anything typed on the command line still takes precedence."""

    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None or ctx.resilient_parsing:
            return
        values = read_config_file(cls, value)
        ctx.default_map = {**(ctx.default_map or {}), **values}
        ctx.meta[FILE_KEYS] = set(values)

    return click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=load, help=f"rerun a saved config.json (a {cls.__name__}): its values are the "
                                            "defaults, options given here override them")


def config_options(cls: type[C]) -> Callable[[Callable], Callable]:
    """Decorator adding one `--key value` click option per field of dataclass `cls`, and `--config FILE`."""
    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            tp, is_seq = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            meta = f.metadata or {}
            help_text = meta.get("help", "")
            name = "--" + f.name.replace("_", "-")
            if is_seq:
                ptype: Any = _SequenceParam(tp)
                shown = ",".join(str(v) for v in default)
                fn = click.option(name, f.name, type=ptype, default=shown, show_default=True, help=help_text)(fn)
            elif tp is bool:
                fn = click.option(f"{name}/--no-{f.name.replace('_', '-')}", f.name, default=default,
                                  show_default=True, help=help_text)(fn)
            else:
                ptype = click.Choice(meta["choices"]) if meta.get("choices") else tp
                fn = click.option(name, f.name, type=ptype, default=default, show_default=True,
                                  help=help_text)(fn)
        return _config_file_option(cls)(fn)

    return decorate


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """Make `cls` from parsed option values; unknown keys are an error, not silently dropped."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise click.UsageError(f"unknown config keys for {cls.__name__}: {', '.join(unknown)}")
    return cls(**{k: v for k, v in values.items() if k in names})


def override(cfg: C, **changes: Any) -> C:
    """A copy of `cfg` with `changes`; rejects keys the dataclass does not have."""
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - names)
    if unknown:
        raise KeyError(f"unknown config keys for {type(cfg).__name__}: {', '.join(unknown)}")
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_hash(cfg: Any, extra: dict[str, Any] | None = None, length: int = 12) -> str:
    """Stable hash of the fields that change the output (metadata hash=False excluded)."""
    keep = {f.name for f in dataclasses.fields(cfg) if (f.metadata or {}).get("hash", True)}
    d = {k: v for k, v in to_dict(cfg).items() if k in keep}
    if extra:
        d["__extra__"] = extra
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def save_config(cfg: Any, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config as JSON (atomically) beside an output."""
    d = {"config_class": type(cfg).__name__, "config": to_dict(cfg), "hash": config_hash(cfg)}
    if extra:
        d.update(extra)
    return write_json(path, d, indent=2)
