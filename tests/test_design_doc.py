"""Every place that cites the design (`docs/design.md#anchor`) points at an anchor that exists, and
nothing cites the old outside document ("DESIGN §N")."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')
CITED = re.compile(r"#([a-z][a-z0-9-]*)")


def sources() -> list[Path]:
    skip = {".venv", ".git", "runs"}
    here = Path(__file__).resolve()  # talks about citations without making any
    return [p for p in sorted(ROOT.rglob("*")) if p.suffix in (".py", ".md") and p.is_file()
            and not skip & set(p.relative_to(ROOT).parts) and p.resolve() != here]


def citations(text: str) -> list[tuple[int, str]]:
    """(line, anchor) of `design.md#a` and of the `, #b` that follow it on the same line."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        at = line.find("design.md#")
        if at >= 0:
            found += [(n, a) for a in CITED.findall(line[at + len("design.md"):])]
    return found


def test_every_cited_anchor_exists():
    anchors = set(ANCHOR.findall((ROOT / "docs" / "design.md").read_text()))
    bad = [f"{p.relative_to(ROOT)}:{n} #{a}" for p in sources() for n, a in citations(p.read_text())
           if a not in anchors]
    assert not bad, "citations of missing anchors in docs/design.md:\n" + "\n".join(bad)


def test_nothing_cites_the_outside_design():
    old = re.compile(r"DESIGN(\.md)? ?§")
    bad = [str(p.relative_to(ROOT)) for p in sources() if old.search(p.read_text())]
    assert not bad, bad


def test_citation_parser():
    # negative control: a missing anchor is found, the second anchor of a pair is read too
    line = "x (docs/design.md#shard-format, #performance) y"
    assert citations(line) == [(1, "shard-format"), (1, "performance")]
    assert citations("no citation #here") == []


DOC = ROOT / "docs" / "design.md"
# what the doc names: repository paths in backticks (`pkg/module.py`, `pkg/sub/`, `bench/*.py`), dotted module
# names (`shared.regions.grouping.depth_regions`) and commands (python -m train finetune)
PATH = re.compile(r"`((?:preprocess|train|evaluate|shared|tests|bench|docs)/[A-Za-z0-9_./*<>-]*)`")
DOTTED = re.compile(r"`((?:preprocess|train|evaluate|shared)(?:\.[a-z_0-9]+)+)`")
COMMAND = re.compile(r"python -m (preprocess|train|evaluate) ([a-z][a-z-]*)")


def named_paths(text: str) -> list[str]:
    """The repository paths the doc names in backticks (globs and <placeholders> kept as written)."""
    return PATH.findall(text)


def path_exists(name: str) -> bool:
    if name.endswith(".current"):  # a pointer of the output tree (train/model.current), not a repository file
        return True
    if "<" in name:  # an output-tree pattern such as shards/<set>/: its package folder must exist
        name = name.split("<")[0].rsplit("/", 1)[0]
    return bool(list(ROOT.glob(name.rstrip("/")))) if "*" in name else (ROOT / name).exists()


def dotted_exists(name: str) -> bool:
    """`shared.regions.grouping` (a module) or `shared.regions.grouping.depth_regions` (a name in one)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            rest = parts[n:]
            if not rest:
                return True
            src = (base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py").read_text()
            return re.search(rf"^(?:def|class) {rest[0]}\b|^{rest[0]}\b\s*[:=]|^\s+(?:def|class) {rest[0]}\b", src,
                             re.M) is not None
    return False


def test_every_path_module_and_command_the_design_names_exists():
    import importlib

    text = DOC.read_text()
    bad = [f"path {p}" for p in named_paths(text) if not path_exists(p)]
    bad += [f"module {m}" for m in DOTTED.findall(text) if not dotted_exists(m)]
    for package, command in set(COMMAND.findall(text)):
        group = importlib.import_module(f"{package}.__main__").main
        if command not in group.lazy and command not in getattr(group, "aliases", {}):
            bad.append(f"command python -m {package} {command}")
    assert not bad, "docs/design.md names what does not exist:\n" + "\n".join(sorted(set(bad)))


def test_every_command_is_in_the_design():
    import importlib

    text = DOC.read_text()
    missing = [f"python -m {p} {c}" for p in ("preprocess", "train", "evaluate")
               for c in importlib.import_module(f"{p}.__main__").main.lazy if f"python -m {p} {c}`" not in text]
    assert not missing, "commands the design does not list:\n" + "\n".join(missing)


def test_the_name_checks_catch_what_is_missing():
    # negative controls: a module that was never written, a name no module defines, a command no group has
    assert named_paths("see `train/photometric.py` and `shared/atomic.py`") == ["train/photometric.py", "shared/atomic.py"]
    assert not path_exists("train/photometric.py") and path_exists("shared/atomic.py") and path_exists("bench/*.py")
    assert dotted_exists("shared.regions.grouping.depth_regions") and not dotted_exists("shared.regions.nothing_here")
    assert COMMAND.findall("`python -m train finetune` and python -m evaluate report") == [("train", "finetune"),
                                                                                          ("evaluate", "report")]
