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
