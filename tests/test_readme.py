"""The README and the docs match the code: their make targets and variables exist in the Makefile, every
`python -m <package> <command>` in their code blocks is a command whose options exist, every option
passed through a make variable (TRAIN_ARGS="--max-steps 5") is an option of the command it reaches,
every `bench/` or `docs/` script they run takes the options shown, the README's output tree names what a
demo run writes, and the README stays short enough to read."""
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
# The README and every page under docs/ (what a user reads for commands)
PAGES = {p.relative_to(ROOT).as_posix(): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
MAX_README_LINES = 300
# Words a user cannot follow: how the project was built, not what it does
PROCESS_WORDS = re.compile(r"\bissue \d+|\bthird round|\bthis round|the issue's|\bissue's bar", re.I)

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


def readme_make_calls(text: str = README) -> list[str]:
    """Every `make ...` line of a code block (continuation lines joined) and every `make ...` in
    backticks of the prose."""
    calls = [line.split(" # ")[0].split("  #")[0] for block in code_blocks(text)
             for line in block.replace("\\\n", " ").splitlines() if line.strip().startswith("make ")]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
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


def variable_commands() -> dict[str, list[tuple[str, str]]]:
    """{VAR: [(package, command)]}: the commands each *_ARGS variable of the Makefile is passed to."""
    text = MAKEFILE.replace("\\\n", " ")
    defined = dict(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=(.*)$", text, flags=re.M))

    def args_vars(line: str, depth: int = 0) -> set[str]:
        """The *_ARGS variables a line uses, through variables that hold them (FT_FLAGS)."""
        used = set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", line))
        out = {v for v in used if v.endswith("_ARGS")}
        if depth < 3:
            for v in used - out:
                out |= args_vars(defined.get(v, ""), depth + 1)
        return out

    found: dict[str, list[tuple[str, str]]] = {}
    for line in (part for row in text.splitlines() for part in row.split(";")):  # one command per part
        m = re.search(r"-m (preprocess|train|evaluate) ([a-z][a-z0-9-]*)", line)
        if m:
            for var in args_vars(line):
                found.setdefault(var, []).append((m.group(1), m.group(2)))
    return found


def _help(package: str, command: str) -> str:
    main = importlib.import_module(f"{package}.__main__").main
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, f"`python -m {package} {command} --help` failed: {result.output[-500:]}"
    return result.output


def test_make_calls_in_the_docs_name_targets_variables_and_options_that_exist():
    targets, variables, feeds = make_targets(), make_variables(), variable_commands()
    helps: dict[tuple[str, str], str] = {}
    checked = 0
    for page, text in PAGES.items():
        for call in readme_make_calls(text):
            named = [w for w in call.split()[1:] if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
            for target in named[:1]:
                assert target in targets, f"{page}: `make {target}` is not a Makefile target ({call!r})"
            for var, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\"[^\"]*\"|\S*)", call):
                assert var in variables, f"{page}: {var}= in {call!r} is never read by the Makefile"
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", value):
                    commands = feeds.get(var)
                    assert commands, f"{page}: {var} in {call!r} passes {option} to no command"
                    for cmd in commands:
                        helps.setdefault(cmd, _help(*cmd))
                    assert any(option in helps[cmd] for cmd in commands), \
                        f"{page}: {option} in {var} of {call!r} is an option of none of {commands}"
                    checked += 1
    assert checked > 20


def test_python_commands_in_the_docs_exist_with_their_options():
    for page, text in PAGES.items():
        for block in code_blocks(text) + re.findall(r"`([^`]*python -m [^`]*)`", text):
            for line in block.replace("\\\n", " ").splitlines():
                m = re.search(r"python -m (preprocess|train|evaluate) ([a-z][a-z0-9-]*)(.*)", line.split(" # ")[0])
                if not m:
                    continue
                output = _help(m.group(1), m.group(2))
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(3)):
                    assert option in output, f"{page}: `python -m {m.group(1)} {m.group(2)}` has no option {option}"


def test_scripts_in_the_docs_take_the_options_shown():
    import subprocess
    import sys

    seen: dict[str, str] = {}
    for page, text in PAGES.items():
        for block in code_blocks(text):
            for line in block.replace("\\\n", " ").splitlines():
                m = re.search(r"python ((?:bench|docs)/[\w/]+\.py)(.*)", line.split(" # ")[0].split(" -- ")[0])
                if not m:
                    continue
                script = m.group(1)
                assert (ROOT / script).is_file(), f"{page}: {script} does not exist"
                if script not in seen:
                    r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                       timeout=300)
                    seen[script] = r.stdout + r.stderr
                for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2)):
                    assert option in seen[script], f"{page}: {script} has no option {option}"


def test_readme_is_short_and_speaks_of_the_product():
    lines = README.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    # every everyday task is answered in the first 150 lines or one link away from them
    top = "\n".join(lines[:150])
    for task in ("own footage", "GPU", "1/8", "Dask", "damaged shard", "regions stage"):
        assert task in top, f"the first 150 lines of the README do not mention {task!r}"
    for page, text in PAGES.items():
        hit = PROCESS_WORDS.search(text)
        assert hit is None, f"{page} speaks of how it was built: {hit.group(0)!r}"


def test_docs_pages_open_with_a_summary_table():
    for name in ("results.md", "benchmarks.md", "scaling.md"):
        lines = (ROOT / "docs" / name).read_text().splitlines()
        first_table = next(i for i, line in enumerate(lines) if line.startswith("|"))
        first_section = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
        assert first_table < first_section, f"docs/{name} does not open with a summary table"


def test_readme_pictures_exist():
    for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / src).is_file(), f"README shows {src}, which does not exist"
