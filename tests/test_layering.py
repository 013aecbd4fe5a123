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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The project modules that module `name` imports, at any depth: `from a.b import c` is a.b.c when that
    is a module, else a.b; relative imports are resolved against `name`."""
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` where c is not a module: a.b
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def project_graph() -> dict[str, set[str]]:
    paths = [p for pkg in ("shared", "bench", *STAGES) for p in sorted((ROOT / pkg).rglob("*.py"))]
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(module_name(p), p.read_text(), known, p.name == "__init__.py")
            for p in paths}


def test_no_import_cycle_anywhere_in_the_project():
    cycles = import_cycles(project_graph())
    assert not cycles, "modules that import each other (directly or round a loop):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_sees_lazy_and_long_cycles():
    # negative controls: a cycle through an import inside a function, and one round three modules
    known = {"p.a", "p.b", "p.c", "p"}
    graph = {"p.a": imported_modules("p.a", "def f():\n    from p import b\n", known),
             "p.b": imported_modules("p.b", "from .c import x\n", known),
             "p.c": imported_modules("p.c", "import p.a.thing\n", known)}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert import_cycles({"p.a": {"p.b"}, "p.b": set()}) == []
