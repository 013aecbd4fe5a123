"""Config dataclasses as `--key value` options: types, unknown keys, hashing, saving."""
from __future__ import annotations

import json
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from shared.config import build_config, config_hash, config_options, field, override, save_config


@dataclass
class Demo:
    steps: int = field(10, "steps")
    lr: float = field(0.1, "learning rate")
    rounds: tuple[float, ...] = field((1.0, 2.0), "pastes per region per round")
    flip: bool = field(True, "flip")
    mode: str = field("a", "mode", choices=["a", "b"])
    workers: int = field(2, "workers", hash=False)


@click.command()
@config_options(Demo)
def cmd(**kw):
    click.echo(json.dumps(build_config(Demo, kw).__dict__))


def test_options_parse_types():
    r = CliRunner().invoke(cmd, ["--steps", "3", "--lr", "0.5", "--rounds", "2,4", "--no-flip", "--mode", "b"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"steps": 3, "lr": 0.5, "rounds": [2.0, 4.0], "flip": False, "mode": "b", "workers": 2}


def test_defaults_and_unknown_keys_rejected():
    r = CliRunner().invoke(cmd, [])
    assert json.loads(r.output)["rounds"] == [1.0, 2.0]
    r = CliRunner().invoke(cmd, ["--stepz", "3"])
    assert r.exit_code != 0 and "No such option" in r.output
    r = CliRunner().invoke(cmd, ["--mode", "c"])
    assert r.exit_code != 0
    with pytest.raises(click.UsageError):
        build_config(Demo, {"nope": 1})
    with pytest.raises(KeyError):
        override(Demo(), nope=1)


def test_hash_ignores_non_output_fields(tmp_path):
    a = Demo()
    assert config_hash(a) == config_hash(override(a, workers=8))
    assert config_hash(a) != config_hash(override(a, steps=11))
    p = save_config(a, tmp_path / "config.json")
    d = json.loads(p.read_text())
    assert d["config"]["steps"] == 10 and d["hash"] == config_hash(a)


# ---------------------------------------------------------------------------------------------
# bounds: every option validated where it is parsed, one line naming the option and the range

import dataclasses  # noqa: E402
import importlib  # noqa: E402
import typing  # noqa: E402

from shared.config import check_value, parse_bounds  # noqa: E402


@dataclass
class Ranged:
    frac: float = field(0.5, "a fraction", bounds="[0, 1]")
    count: int = field(1, "a count", bounds="[1, inf)")
    positive: float = field(0.1, "positive", bounds="(0, inf)")
    quality: int = field(90, "quality", bounds="[1, 100]")
    pair: tuple[float, ...] = field((0.5, 1.0), "a low,high pair", bounds="(0, 1]", n=2, ordered=True)
    anything: float = field(-4.0, "any finite number", bounds="(-inf, inf)")


@click.command()
@config_options(Ranged)
def ranged(**kw):
    click.echo(json.dumps(dataclasses.asdict(build_config(Ranged, kw))))


@pytest.mark.parametrize("args,option,allowed", [
    (["--frac", "1.5"], "--frac", "between 0 and 1"),
    (["--frac", "-0.5"], "--frac", "between 0 and 1"),
    (["--frac", "nan"], "--frac", "between 0 and 1"),
    (["--count", "0"], "--count", ">= 1"),
    (["--count", "-1"], "--count", ">= 1"),
    (["--positive", "0"], "--positive", "> 0"),
    (["--positive", "-3"], "--positive", "> 0"),
    (["--quality", "500"], "--quality", "between 1 and 100"),
    (["--pair", "2,3"], "--pair", "each > 0 and <= 1"),
    (["--pair", "0.8,0.5"], "--pair", "low <= high"),
    (["--pair", "0.5"], "--pair", "2 comma-separated values"),
    (["--anything", "inf"], "--anything", "a finite number"),
])
def test_out_of_range_is_one_line_naming_option_and_range(args, option, allowed):
    r = CliRunner().invoke(ranged, args)
    assert r.exit_code == 2, r.output
    error = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and f"'{option}'" in error[0] and allowed in error[0], r.output
    assert "Traceback" not in r.output


def test_in_range_values_pass_and_edges_are_kept():
    r = CliRunner().invoke(ranged, ["--frac", "1", "--count", "1", "--quality", "100", "--pair", "1,1",
                                    "--anything", "-1e9"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"frac": 1.0, "count": 1, "positive": 0.1, "quality": 100, "pair": [1.0, 1.0],
                                    "anything": -1e9}


@dataclass
class Once:
    steps: int = field(10, "steps")
    force: bool = field(False, "recompute", hash=False, rerun=False)


@click.command()
@config_options(Once)
def once(**kw):
    click.echo(json.dumps(build_config(Once, kw).__dict__))


def test_a_one_off_request_is_saved_but_not_carried_by_config_file(tmp_path):
    """`--force` is recorded in the saved config, but rerunning that config does not force again."""
    saved = save_config(build_config(Once, {"steps": 3, "force": True}), tmp_path / "config.json")
    assert json.loads(saved.read_text())["config"]["force"] is True
    r = CliRunner().invoke(once, ["--config", str(saved)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"steps": 3, "force": False}
    r = CliRunner().invoke(once, ["--config", str(saved), "--force"])
    assert json.loads(r.output) == {"steps": 3, "force": True}  # typed again, it applies


def test_values_from_a_config_file_and_from_code_are_checked_too(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"config_class": "Ranged", "config": {"frac": 2.0}}))
    r = CliRunner().invoke(ranged, ["--config", str(p)])
    assert r.exit_code == 2 and "'--frac'" in r.output and "between 0 and 1" in r.output
    with pytest.raises(click.BadParameter, match="between 1 and 100"):
        build_config(Ranged, {"quality": 0})


def test_bounds_parse_and_reject_typos():
    b = parse_bounds("(0, 1]")
    assert (b.contains(0.0), b.contains(1e-9), b.contains(1.0), b.contains(1.0001)) == (False, True, True, False)
    assert parse_bounds("[1, inf)").words() == ">= 1"
    with pytest.raises(ValueError):
        field(1, "typo", bounds="[1, inf")
    with pytest.raises(ValueError):
        field(1, "empty", bounds="[2, 1]")


# the rows of issue 13: each was accepted, or ended in a traceback
ISSUE_ROWS = [("train", "contrastive", "--lam", "1.5"), ("train", "contrastive", "--lam", "-0.5"),
              ("train", "contrastive", "--num-prototypes", "0"), ("train", "contrastive", "--crop-scale", "2,3"),
              ("preprocess", "shards", "--flip-prob", "2"), ("preprocess", "shards", "--jpeg-quality", "500"),
              ("preprocess", "regions", "--t-e", "-3"), ("preprocess", "regions", "--workers", "-1"),
              ("train", "contrastive", "--checkpoint-every", "0"), ("train", "contrastive", "--log-every", "0"),
              ("train", "depth-train", "--log-every", "0"), ("preprocess", "regions", "--chunk-size", "0"),
              ("preprocess", "regions", "--n-segments", "0"), ("preprocess", "shards", "--group-size", "0")]


@pytest.mark.parametrize("package,command,option,value", ISSUE_ROWS)
def test_commands_refuse_the_issue_values_before_running(package, command, option, value):
    main = importlib.import_module(f"{package}.__main__").main
    r = CliRunner().invoke(main, [command, option, value])
    assert r.exit_code == 2, r.output
    error = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and f"'{option}'" in error[0] and "got" in error[0], r.output


def _commands():
    for package in ("preprocess", "train", "evaluate"):
        main = importlib.import_module(f"{package}.__main__").main
        for name in sorted(main.lazy):
            yield package, name, main.get_command(None, name)


def unbounded_numeric_fields(cls: type) -> list[str]:
    """Fields of `cls` holding numbers (int, float, lists of them) without bounds, or whose default
    lies outside them."""
    hints = typing.get_type_hints(cls)
    bad = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        numeric = tp in (int, float) or (typing.get_origin(tp) in (tuple, list) and args and args[0] in (int, float))
        if numeric and (not f.metadata.get("bounds") or check_value(f.name, f.default, dict(f.metadata))):
            bad.append(f.name)
    return bad


def test_every_numeric_option_of_every_command_declares_its_range():
    """A new option cannot skip validation: every int / float field (and list of numbers) of every
    command's config declares bounds, and its default lies inside them."""
    assert unbounded_numeric_fields(Demo) == ["steps", "lr", "rounds", "workers"]  # the walk sees a missing range
    classes = {}
    for package, name, cmd in _commands():
        classes[f"{package} {name}"] = cmd.callback.config_class
    assert len(classes) == 17
    assert {k: unbounded_numeric_fields(c) for k, c in classes.items()} == {k: [] for k in classes}


@dataclass
class Aliased:
    ckpt_every: int = field(250, "steps between checkpoints", bounds="[1, inf)", aliases=("checkpoint_every",))
    bf16: bool = field(True, "autocast", aliases=("amp",))


@click.command()
@config_options(Aliased)
def aliased(**kw):
    click.echo(json.dumps(build_config(Aliased, kw).__dict__))


@pytest.mark.parametrize("args, want", [
    ([], {"ckpt_every": 250, "bf16": True}),
    (["--checkpoint-every", "7", "--no-amp"], {"ckpt_every": 7, "bf16": False}),
    (["--ckpt-every", "5", "--no-bf16"], {"ckpt_every": 5, "bf16": False}),
    (["--no-bf16", "--amp"], {"ckpt_every": 250, "bf16": True}),  # the last one typed wins, as for one name
])
def test_an_alias_sets_the_same_field_and_is_saved_under_its_name(args, want):
    r = CliRunner().invoke(aliased, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == want


def test_an_alias_is_checked_and_listed_in_help():
    r = CliRunner().invoke(aliased, ["--checkpoint-every", "0"])
    assert r.exit_code != 0 and "--checkpoint-every" in r.output and ">= 1" in r.output
    help_text = CliRunner().invoke(aliased, ["--help"]).output
    assert "--ckpt-every, --checkpoint-every" in help_text and "--bf16, --amp / --no-bf16, --no-amp" in help_text
