"""A report's Markdown lines as one self-contained HTML page (pictures embedded as data URIs), so
the page can be mailed or archived alone: the unsupervised and fine-tuning reports. Handles what the
reports write: headings, bullet lines, pipe tables, paragraphs and `![caption](file.png)` pictures
relative to the report folder. The lines become blocks; templates/markdown_page.html renders them,
escaping every text."""
from __future__ import annotations

import base64
from pathlib import Path

STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
         "img{max-width:100%}")
PREFIXES = (("### ", "h3"), ("## ", "h2"), ("# ", "h1"), ("- ", "div"))


def blocks(lines: list[str], folder: Path) -> list[dict]:
    """Markdown lines -> [{"kind": "table", "head", "rows"} | {"kind": "img", "src", "data"} |
    {"kind": "h1" | "h2" | "h3" | "div" | "p", "text"}]; a picture is read from `folder`."""
    out: list[dict] = []
    table: dict | None = None
    for line in lines:
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
            if table is None:
                table = {"kind": "table", "head": cells, "rows": []}
                out.append(table)
            else:
                table["rows"].append(cells)
            continue
        table = None
        if line.startswith("!["):
            src = line[line.index("](") + 2:-1]
            out.append({"kind": "img", "src": src, "data": base64.b64encode((folder / src).read_bytes()).decode()})
            continue
        text = line.replace("`", "")
        kind, text = next(((tag, text[len(prefix):]) for prefix, tag in PREFIXES if text.startswith(prefix)),
                          ("p", text))
        if text or kind != "p":
            out.append({"kind": kind, "text": text})
    return out


def markdown_page(lines: list[str], folder: Path, title: str) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("markdown_page.html").render(title=title, style=STYLE, blocks=blocks(lines, folder)) + "\n"
