"""A report's Markdown lines as one self-contained HTML page (pictures embedded as data URIs), so
the page can be mailed or archived alone: the unsupervised and fine-tuning reports. Handles what the
reports write: headings, bullet lines, pipe tables, paragraphs and `![caption](file.png)` pictures
relative to the report folder."""
from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
         "img{max-width:100%}")


def markdown_page(lines: list[str], folder: Path, title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body>"]
    in_table = False
    for line in lines:
        if line.startswith("| ---"):
            continue
        if line.startswith("|"):
            cells = [html.escape(c.strip().replace("**", "")) for c in line.strip().strip("|").split("|")]
            tag = "td" if in_table else "th"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("](") + 2:-1]
            data = base64.b64encode((folder / src).read_bytes()).decode()
            out.append(f"<p><img alt='{html.escape(src)}' src='data:image/png;base64,{data}'></p>")
            continue
        text = html.escape(line, quote=False).replace("`", "")
        for prefix, tag in (("### ", "h3"), ("## ", "h2"), ("# ", "h1"), ("- ", "div")):
            if text.startswith(prefix):
                out.append(f"<{tag}>{text[len(prefix):]}</{tag}>")
                break
        else:
            if text:
                out.append(f"<p>{text}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
