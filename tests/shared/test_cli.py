"""The front door: `--help` of every command without torch, numba and the like, the old `depth`
names as aliases, and `--config FILE` rerunning a saved config (docs/design.md#command-line)."""
from __future__ import annotations

import dataclasses
import importlib
import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shared.config import build_config, check_value, config_options, field, save_config
from shared.presets import apply_preset, explicit_options
from shared.stage import StageConfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("preprocess", "train", "evaluate")
# what a command imports only when it runs (seconds and hundreds of MB between them)
HEAVY = ("torch", "torchvision", "numba", "scipy", "webdataset", "h5py", "skimage", "av", "matplotlib", "joblib",
         "infomap")
HELP_CPU_S = 1.0  # `--help` of any command: CPU seconds of the whole process (wall time varies with load)


def group(package: str) -> click.Group:
    return importlib.import_module(f"{package}.__main__").main


COMMANDS = [(p, name) for p in PACKAGES for name in sorted(group(p).lazy)]

# Parses `--help` the way `python -m <package> <command> --help` does, then reports what got imported.
PROBE = """
import json, sys
from importlib import import_module
main = import_module(sys.argv[1] + ".__main__").main
try:
    main(sys.argv[2:] + ["--help"], prog_name="python -m " + sys.argv[1])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def help_in_subprocess(*argv: str) -> tuple[str, dict]:
    """(the help text, {code, heavy modules imported, cpu_s: the process's CPU seconds})."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    *text, last = done.stdout.rstrip("\n").split("\n")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return "\n".join(text), {**json.loads(last), "cpu_s": cpu}


@pytest.mark.parametrize("package", PACKAGES)
def test_group_help_imports_nothing_heavy(package):
    text, res = help_in_subprocess(package)
    assert (res["code"], res["heavy"]) == (0, []) and res["cpu_s"] < HELP_CPU_S, res
    for name in group(package).lazy:
        assert name in text


@pytest.mark.parametrize("package,command", COMMANDS)
def test_command_help_imports_nothing_heavy(package, command):
    text, res = help_in_subprocess(package, command)
    assert (res["code"], res["heavy"]) == (0, []), f"`python -m {package} {command} --help` imported {res['heavy']}"
    assert res["cpu_s"] < HELP_CPU_S, f"`python -m {package} {command} --help` took {res['cpu_s']:.2f} CPU s"
    assert "--config" in text  # every command reruns a saved config


def test_probe_sees_a_heavy_import():
    # negative control: the same probe on a command that does import torch must report it
    script = PROBE.replace("main = import_module", "import torch\nmain = import_module")
    done = subprocess.run([sys.executable, "-c", script, "train"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert json.loads(done.stdout.strip().split("\n")[-1])["heavy"] == ["torch"]


@pytest.mark.parametrize("package,alias,name", [("train", "depth", "depth-train"),
                                                ("preprocess", "depth", "depth-infer"),
                                                ("evaluate", "depth", "depth-eval")])
def test_old_depth_names_are_aliases_of_the_new_ones(package, alias, name):
    main = group(package)
    ctx = click.Context(main)
    assert main.get_command(ctx, alias) is main.get_command(ctx, name) is not None
    assert alias not in main.list_commands(ctx)  # one row per command in the listing ...
    listing = CliRunner().invoke(main, ["--help"]).output
    assert f"{name} ({alias})" in listing  # ... which names the alias beside it


def test_command_names_are_distinct_across_packages():
    names = [name for _, name in COMMANDS]
    assert len(names) == len(set(names)), sorted(names)


# ---------------------------------------------------------------------------------------------
# --config FILE


def config_class(package: str, command: str) -> type:
    """The config dataclass of a command: the StageConfig subclass whose fields are its options."""
    main = group(package)
    cmd = main.get_command(click.Context(main), command)
    options = {p.name for p in cmd.params} - {"config"}
    module = sys.modules[cmd.callback.__module__]
    found = [c for c in vars(module).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
             and issubclass(c, StageConfig) and {f.name for f in dataclasses.fields(c)} == options]
    assert len(found) == 1, (command, found)
    return found[0]


def probe_command(cls: type, seen: list) -> click.Command:
    @click.command()
    @config_options(cls)
    def probe(**kwargs):
        seen.append(build_config(cls, kwargs))
        seen.append(explicit_options())

    return probe


def changed(f: dataclasses.Field, value):
    """A valid value of field `f` (inside its bounds) other than `value`."""
    choices = (f.metadata or {}).get("choices")
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        candidates: list = [value + 3, value + 1]
    elif isinstance(value, float):
        candidates = [value * 2 + 0.5, value / 2 + 0.01, value / 2]
    elif isinstance(value, tuple) and value and not isinstance(value[0], str):
        candidates = [tuple(v + 1 for v in value) + value[-1:], tuple(v / 2 for v in value)]
    elif isinstance(value, tuple):
        candidates = [value + ("val",)]
    elif isinstance(value, str):
        candidates = [value + "x"]
    else:
        raise AssertionError(f"no test value for field {f.name} = {value!r}")
    for c in candidates:
        if c != value and check_value(f.name, c, dict(f.metadata or {})) is None:
            return c
    raise AssertionError(f"no valid test value for field {f.name} = {value!r}")


@pytest.mark.parametrize("package,command", COMMANDS)
def test_saved_config_reruns_to_the_same_config(package, command, tmp_path):
    cls = config_class(package, command)
    seen: list = []
    probe = probe_command(cls, seen)
    # every field away from its default, so a value silently left at the default would show
    cfg = dataclasses.replace(cls(), **{f.name: changed(f, getattr(cls(), f.name)) for f in dataclasses.fields(cls)})
    path = save_config(cfg, tmp_path / "config.json")
    res = CliRunner().invoke(probe, ["--config", str(path)])
    assert res.exit_code == 0, res.output
    # one-off requests (--force) are saved but not carried into the rerun: they are back at the default
    once = {f.name for f in dataclasses.fields(cls) if not (f.metadata or {}).get("rerun", True)}
    assert seen[0] == dataclasses.replace(cfg, **{k: getattr(cls(), k) for k in once})
    assert seen[1] == {f.name for f in dataclasses.fields(cls)} - once  # the file's values count as the user's


def test_command_line_overrides_the_file(tmp_path):
    from preprocess.shards import ShardsConfig

    seen: list = []
    probe = probe_command(ShardsConfig, seen)
    path = save_config(ShardsConfig(epochs=7, seed=5, rounds=(3.0, 4.0)), tmp_path / "config.json")
    res = CliRunner().invoke(probe, ["--config", str(path), "--seed", "9", "--rounds", "1"])
    assert res.exit_code == 0, res.output
    assert (seen[0].epochs, seen[0].seed, seen[0].rounds) == (7, 9, (1.0,))
    # the order of --config among the options does not matter: it is read first
    seen.clear()
    res = CliRunner().invoke(probe, ["--seed", "9", "--config", str(path)])
    assert (seen[0].epochs, seen[0].seed) == (7, 9)


def test_bad_config_files_are_refused_by_a_real_command(tmp_path):
    from preprocess.index import IndexConfig
    from preprocess.shards import ShardsConfig

    main = group("preprocess")
    other = save_config(ShardsConfig(), tmp_path / "shards.json")
    res = CliRunner().invoke(main, ["index", "--config", str(other)])
    assert res.exit_code == 2 and "ShardsConfig" in res.output and "IndexConfig" in res.output

    d = json.loads(save_config(IndexConfig(), tmp_path / "index.json").read_text())
    d["config"].update(epochz=3, zzz=1)
    (tmp_path / "typo.json").write_text(json.dumps(d))
    res = CliRunner().invoke(main, ["index", "--config", str(tmp_path / "typo.json")])
    assert res.exit_code == 2 and "typo.json" in res.output and "epochz, zzz" in res.output

    (tmp_path / "plain.json").write_text(json.dumps({"dataset": "kitti"}))
    res = CliRunner().invoke(main, ["index", "--config", str(tmp_path / "plain.json")])
    assert res.exit_code == 2 and "plain.json" in res.output and "config_class" in res.output

    res = CliRunner().invoke(main, ["index", "--config", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "missing.json" in res.output


@dataclass
class Sized(StageConfig):
    steps: int = field(100, "steps")
    width: int = field(640, "width")


PRESETS = {"tiny": {"steps": 2, "width": 64}}


def test_presets_do_not_override_values_from_the_file(tmp_path):
    seen: list = []
    probe = probe_command(Sized, seen)

    def run(*argv: str) -> Sized:
        seen.clear()
        res = CliRunner().invoke(probe, list(argv))
        assert res.exit_code == 0, res.output
        return apply_preset(seen[0], PRESETS, seen[1])

    assert (run("--demo-size", "tiny").steps, run("--demo-size", "tiny").width) == (2, 64)  # control
    saved = save_config(Sized(demo_size="tiny", steps=7, width=640), tmp_path / "config.json")
    rerun = run("--config", str(saved))
    assert (rerun.steps, rerun.width) == (7, 640)  # the saved (resolved) values, not the preset's
    # a hand-trimmed file names only some fields: the preset still fills the others
    d = json.loads(saved.read_text())
    d["config"] = {"demo_size": "tiny", "steps": 7}
    (tmp_path / "trimmed.json").write_text(json.dumps(d))
    trimmed = run("--config", str(tmp_path / "trimmed.json"))
    assert (trimmed.steps, trimmed.width) == (7, 64)
