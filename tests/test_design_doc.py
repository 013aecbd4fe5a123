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
