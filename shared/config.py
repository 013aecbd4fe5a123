"""One config dataclass per entry point, exposed as `--key value` click options.

Every field of the dataclass becomes an option (`snake_case` -> `--snake-case`), so `--help` lists
every knob with its default, and click rejects unknown keys. The resolved config is saved next to
every output (`save_config`) and hashed (`config_hash`) to key reusable outputs by their settings.
`--config FILE` reruns such a saved config: its values become the defaults, options typed on the
command line still win (docs/design.md#config).

Field metadata:
  help: str          one line for --help
  choices: list      restrict the value to these strings
  hash: bool | "set" False for fields that do not change the output (workers, progress bars);
                     "set": hashed only when not at its default (an option added later leaves the
                     names of outputs made without it as they were)
  bounds: str        the allowed values of a number (each value of a list) as an interval:
                     "[0, 1]", "(0, inf)", "[1, 100]", "(-inf, inf)" = any finite number
  n: int             lists: exactly this many values (else at least one)
  ordered: bool      lists: values non-decreasing (a low,high pair)
  aliases: tuple     other field names the option also answers to (`--amp` for the depth trainer's
                     `--bf16`): one option name across commands without renaming a saved or hashed key

Every int and float field declares bounds (tests/shared/test_config.py walks every command's
config). Values are checked as click parses them (command line and --config FILE alike) and again
by `build_config`, and a bad one is a one-line error naming the option and the allowed range.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from shared.atomic import write_json

C = TypeVar("C")


def field(default: Any, help: str = "", choices: list[str] | None = None, hash: bool | str = True,
          bounds: str | None = None, n: int | None = None, ordered: bool = False, rerun: bool = True,
          aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with a --help line; lists/tuples are passed by value (immutable tuples).
    bounds / n / ordered: the allowed values (module docstring); parsed here, so a typo in a bound
    fails at import, not when a user types a value. rerun=False: a one-off request (`--force`) that the
    saved config records but `--config FILE` does not carry into the next run. aliases: more option names
    for the same field (saved and hashed under its own name)."""
    if bounds is not None:
        parse_bounds(bounds)
    meta = {"help": help, "choices": choices, "hash": hash, "bounds": bounds, "n": n, "ordered": ordered,
            "rerun": rerun, "aliases": tuple(aliases),
            # a list whose default is empty means "none" and may stay empty (e.g. an optional list of cells)
            "empty_ok": isinstance(default, (tuple, list)) and not default}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """An interval: low / high (may be -inf / inf), open or closed at each end."""

    low: float
    high: float
    low_open: bool
    high_open: bool

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):  # nan and inf are never an option's value
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def words(self) -> str:
        """ "between 0 and 1", ">= 1", "> 0 and < 1", "a finite number" """
        if math.isfinite(self.low) and math.isfinite(self.high) and not (self.low_open or self.high_open):
            return f"between {_num(self.low)} and {_num(self.high)}"
        parts = []
        if math.isfinite(self.low):
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if math.isfinite(self.high):
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        return " and ".join(parts) or "a finite number"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def parse_bounds(text: str) -> Bounds:
    """ "[0, 1]" -> Bounds(0, 1, closed, closed); "(0, inf)" -> Bounds(0, inf, open, open)."""
    t = text.strip()
    try:
        if t[0] not in "[(" or t[-1] not in "])":
            raise ValueError
        lo, hi = (float(v) for v in t[1:-1].split(","))
    except (ValueError, IndexError):
        raise ValueError(f"bounds {text!r}: expected an interval like [0, 1] or (0, inf)") from None
    if lo > hi:
        raise ValueError(f"bounds {text!r}: empty interval")
    return Bounds(lo, hi, t[0] == "(", t[-1] == ")")


def check_value(name: str, value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with `value` for a field with metadata `meta` (one line: the allowed values
    and what was given), or None when it is allowed."""
    bounds = meta.get("bounds")
    if isinstance(value, (tuple, list)):
        n, ordered = meta.get("n"), meta.get("ordered", False)
        given = ",".join(str(v) for v in value) or "nothing"
        want = (f"{n} comma-separated values" if n else "one or more comma-separated values") \
            + (" low,high with low <= high" if ordered else "")
        if bounds is not None:
            want += ", each " + parse_bounds(bounds).words()
        bad = (n is not None and len(value) != n) or (not value and not meta.get("empty_ok")) \
            or (ordered and any(b < a for a, b in zip(value, value[1:]))) \
            or (bounds is not None and any(isinstance(v, (int, float)) and not parse_bounds(bounds).contains(v)
                                           for v in value))
        return f"needs {want}; got {given}" if bad else None
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    b = parse_bounds(bounds)
    return None if b.contains(value) else f"must be {b.words()}; got {value}"


def check_config(cfg: Any) -> None:
    """click.BadParameter naming the option for the first field of `cfg` outside its bounds."""
    for f in dataclasses.fields(cfg):
        problem = check_value(f.name, getattr(cfg, f.name), dict(f.metadata or {}))
        if problem:
            raise click.BadParameter(problem, param_hint=f"'--{f.name.replace('_', '-')}'")


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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise click.BadParameter(f"{path}: unknown keys for {cls.__name__}: {', '.join(unknown)}",
                                 param_hint="--config")
    return {k: v for k, v in values.items() if (fields[k].metadata or {}).get("rerun", True)}


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
            meta = dict(f.metadata or {})
            help_text = meta.get("help", "")
            if meta.get("bounds") is not None:  # the range is part of what --help teaches
                help_text += f" [{parse_bounds(meta['bounds']).words()}]"
            words = [f.name.replace("_", "-")] + [a.replace("_", "-") for a in meta.get("aliases", ())]
            names = [f"--{w}" for w in words]
            check = _checker(f.name, meta)
            if is_seq:
                ptype: Any = _SequenceParam(tp)
                shown = ",".join(str(v) for v in default)
                fn = click.option(*names, f.name, type=ptype, default=shown, show_default=True, help=help_text,
                                  callback=check)(fn)
            elif tp is bool:
                fn = click.option(*(f"--{w}/--no-{w}" for w in words), f.name, default=default,
                                  show_default=True, help=help_text)(fn)
            else:
                ptype = click.Choice(meta["choices"]) if meta.get("choices") else tp
                fn = click.option(*names, f.name, type=ptype, default=default, show_default=True,
                                  help=help_text, callback=check)(fn)
        fn.config_class = cls  # type: ignore[attr-defined]  # which config a command takes (tests walk them)
        return _config_file_option(cls)(fn)

    return decorate


def _checker(name: str, meta: dict[str, Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback enforcing the field's bounds on the parsed value."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        problem = check_value(name, value, meta)
        if problem:
            raise click.BadParameter(problem, ctx, param)
        return value

    return check


def build_config(cls: type[C], values: dict[str, Any]) -> C:
    """Make `cls` from parsed option values; unknown keys and values outside a field's bounds are
    an error, not silently dropped or used."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise click.UsageError(f"unknown config keys for {cls.__name__}: {', '.join(unknown)}")
    cfg = cls(**{k: v for k, v in values.items() if k in names})
    check_config(cfg)
    return cfg


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
    keep = {f.name for f in dataclasses.fields(cfg) if (f.metadata or {}).get("hash", True) is True
            or ((f.metadata or {}).get("hash") == "set" and getattr(cfg, f.name) != f.default)}
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
