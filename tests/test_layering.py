"""Imports go one way only (docs/design.md#layering): the stages preprocess/, train/ and evaluate/
import shared/ and themselves, never each other; shared/ imports no stage. Lazy imports inside
functions count the same as top-level ones."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "train", "evaluate")
ALLOWED = {"shared": {"shared"}, **{s: {s, "shared"} for s in STAGES}}
PROJECT_PACKAGES = {"shared", "tests", "bench", *STAGES}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, source: str) -> list[tuple[int, str]]:
    return [(line, top) for line, top in imported_packages(source)
            if top in PROJECT_PACKAGES and top not in ALLOWED[package]]


def test_every_import_points_down():
    bad = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, top in violations(package, path.read_text()):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_checker_catches_upward_and_sideways_imports():
    # negative controls: the checker must see imports hidden in functions and `from x.y import z`
    lazy = "def f():\n    from preprocess.synth import generate\n"
    assert violations("shared", lazy) == [(2, "preprocess")]
    assert violations("evaluate", "import train.depth as d\n") == [(1, "train")]
    assert violations("train", "from tests.fixtures import toy_shards\n") == [(1, "tests")]
    assert violations("train", "from shared.config import field\nimport torch\n") == []
