"""The README matches the code: its make targets and variables exist in the Makefile, every
`python -m <package> <command>` in its code blocks is a command whose options exist, and its output
tree names what a demo run writes."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()

# What `make demo` writes under <out>/synthetic-tiny/ (listed from a tiny demo run): the output tree must name each.
DEMO_OUTPUTS = ["index.jsonl", "index.config.json", "depth/model.current", "depth/cache/", "depth/run-<hash>/",
                "regions/<proposals>-<hash>/", "regions/<proposals>.current", "reports/proposals-<hash>/",
                "shards/<proposals>-<hash>/", "shards/<proposals>.current", "train/<run>/", "train/model.current",
                "eval/<run>-<clustering>/", "eval/unsupervised.current", "eval/depth-<hash>.json", "report/index.html"]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", MAKEFILE, flags=re.M))


def make_variables() -> set[str]:
    assigned = re.findall(r"^([A-Z][A-Z0-9_]*)\s*(?:\?=|:=|=)", MAKEFILE, flags=re.M)
    assigned += re.findall(r"^override\s+([A-Z][A-Z0-9_]*)", MAKEFILE, flags=re.M)
    used = re.findall(r"\$[({]([A-Z][A-Z0-9_]*)[)}]", MAKEFILE)
    return set(assigned) | set(used)


def readme_make_calls() -> list[str]:
    """Every `make ...` line of a code block and every `make ...` in backticks of the prose."""
    calls = [line.split("#")[0] for block in code_blocks(README) for line in block.splitlines()
             if line.strip().startswith("make ")]
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    return calls + re.findall(r"`(make [^`]*)`", prose)


def test_make_targets_and_variables_in_the_readme_exist():
    targets, variables = make_targets(), make_variables()
    calls = readme_make_calls()
    assert len(calls) > 10
    for call in calls:
        words = call.split()
        named = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
        for target in named[:1]:
            assert target in targets, f"README names `make {target}`, which the Makefile lacks ({call!r})"
        for var in re.findall(r"\b([A-Z][A-Z0-9_]*)=", call):
            assert var in variables, f"README sets {var}= in {call!r}, which the Makefile never reads"
    # The table of stages lists every stage target of the Makefile's help.
    helped = set(re.findall(r"^([a-z][a-z-]*):.*## ", MAKEFILE, flags=re.M))
    for target in helped - {"help", "setup", "test", "clean"}:
        assert f"`make {target}`" in README, f"`make {target}` has a help line but no mention in the README"


def readme_python_commands() -> list[tuple[str, str, list[str]]]:
    """(package, command, options) of every `python -m <package> <command> ...` in the README's code blocks."""
    found = []
    for block in code_blocks(README):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            m = re.search(r"python -m (preprocess|train|evaluate) ([a-z][a-z0-9-]*)(.*)", line.split(" # ")[0])
            if m:
                options = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(3))
                found.append((m.group(1), m.group(2), options))
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    for m in re.finditer(r"`python -m (preprocess|train|evaluate) ([a-z][a-z0-9-]*)([^`]*)`", prose):
        found.append((m.group(1), m.group(2), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(3))))
    return found


@pytest.mark.parametrize("package", ["preprocess", "train", "evaluate"])
def test_python_commands_in_the_readme_exist_with_their_options(package):
    main = importlib.import_module(f"{package}.__main__").main
    commands = [(cmd, opts) for pkg, cmd, opts in readme_python_commands() if pkg == package]
    for cmd, options in commands:
        result = CliRunner().invoke(main, [cmd, "--help"])
        assert result.exit_code == 0, f"`python -m {package} {cmd} --help` failed: {result.output[-500:]}"
        for option in options:
            assert option in result.output, f"`python -m {package} {cmd}` has no option {option}"


def test_every_package_command_is_in_the_readme():
    for package in ("preprocess", "train", "evaluate"):
        commands = importlib.import_module(f"{package}.__main__").COMMANDS
        for cmd in commands:
            in_readme = re.search(rf"python -m {package} {re.escape(cmd)}(?![\w-])", README)
            in_makefile = re.search(rf"-m {package} {re.escape(cmd)}(?![\w-])", MAKEFILE)  # a target runs it
            assert in_readme or in_makefile, \
                f"`python -m {package} {cmd}` is in neither the README's commands nor a make target"


def test_output_tree_names_what_the_demo_writes():
    tree = next(b for b in code_blocks(README) if b.startswith("runs/<dataset>"))
    for entry in DEMO_OUTPUTS:
        assert entry in tree, f"the README's output tree lacks {entry}"


def test_demo_outputs_list_matches_the_stages():
    """Each listed output is a path some stage passes to output_dir (or the report's page): the list is not stale."""
    sources = "\n".join(p.read_text() for pkg in ("preprocess", "train", "evaluate", "shared")
                        for p in (ROOT / pkg).rglob("*.py"))
    for entry in DEMO_OUTPUTS:
        head = re.split(r"[/<.-]", entry)[0]
        assert f'"{head}' in sources, f"no stage writes {entry} (no \"{head}...\" path in the code)"


def test_set_up_commands_are_shell_words():
    block = next(b for b in code_blocks(README) if b.lstrip().startswith("make demo"))
    for line in block.splitlines():
        if line.strip():
            assert shlex.split(line.split("#")[0])[0] == "make"
