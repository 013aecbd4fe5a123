"""The Markdown-to-page converter of the unsupervised and fine-tuning reports: known blocks, escaped text,
embedded pictures."""
from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from evaluate.report_html import blocks, markdown_page


def test_lines_become_blocks_and_the_page_escapes_them(tmp_path):
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "a.png")
    lines = ["# Title <x>", "", "- item `code`", "| model | mIoU |", "| --- | --- |", "| **mean** | 1 < 2 |",
             "text & more", "![pic](a.png)", "## Sub"]
    got = blocks(lines, tmp_path)
    assert [b["kind"] for b in got] == ["h1", "div", "table", "p", "img", "h2"]
    assert got[0]["text"] == "Title <x>" and got[1]["text"] == "item code"
    assert got[2]["head"] == ["model", "mIoU"] and got[2]["rows"] == [["mean", "1 < 2"]]
    assert base64.b64decode(got[4]["data"]) == (tmp_path / "a.png").read_bytes()
    page = markdown_page(lines, tmp_path, "T & t")
    assert "<title>T &amp; t</title>" in page and "<h1>Title &lt;x&gt;</h1>" in page
    assert "<th>model</th><th>mIoU</th>" in page and "<td>1 &lt; 2</td>" in page
    assert "<p>text &amp; more</p>" in page and 'src="data:image/png;base64,' in page
