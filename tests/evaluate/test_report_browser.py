"""The report page in a real browser (headless Chromium, JavaScript off): every section is there, every
picture loads and is drawn. Skips when no Chromium is installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluate.report import make_report
from tests.evaluate.test_report import fake_run
from tests.fixtures.browser import (PageParts, distinct_colours, drawn_fraction, dump_dom, missing_images,
                                    require_browser, screenshot)

SIZE = (1280, 3000)  # (width, height) of the window
# The headings the page promises, in order (evaluate/report.py's sections).
SECTIONS = [("samples", "Sample frames, depth and regions"), ("copy-paste", "Copy-paste contact sheet"),
            ("losses", "Training losses"), ("proposals", "Region proposals vs baselines"),
            ("depth", "Depth vs the trivial baseline"),
            ("unsupervised", "Unsupervised segmentation: pre-trained vs random init"),
            ("finetune", "Fine-tuning: pre-trained vs scratch")]
# A drawn page has text, tables, charts and photos (the fake run's page: about 6 % drawn, 700 colours);
# a blank page has one colour, one line of text about 0.02 % drawn and 200 anti-aliasing shades.
MIN_DRAWN, MIN_COLOURS = 0.02, 400


def _mark_pictures(run: Path) -> dict[str, tuple[int, int, int]]:
    """Repaint each stage picture of the fake run a flat colour no text or chart uses (24x48 px), so the
    screenshot can prove each one was decoded and drawn; {file name relative to run: colour}."""
    colours = {}
    for i, png in enumerate(sorted(run.rglob("*.png"))):
        colour = (250 - 7 * i, 3 + 11 * i, 200 - 13 * i)
        Image.fromarray(np.full((24, 48, 3), colour, np.uint8)).save(png)
        colours[png.relative_to(run).as_posix()] = colour
    return colours


def _pixels_of(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((rgb == np.array(colour, np.uint8)).all(-1).sum())


@pytest.fixture
def report_page(tmp_path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    run = fake_run(tmp_path, seeds=3)
    colours = _mark_pictures(run)
    return make_report(run, "small")[0], colours


def test_dom_has_every_section_and_every_picture_on_disk(report_page):
    require_browser()
    page, _ = report_page
    parts = PageParts(dump_dom(page))
    assert parts.headings == SECTIONS
    assert missing_images(parts, page) == []
    assert len(parts.images) == 7  # 3 proposal overlays, the depth snapshot, the contact sheet, 2 loss charts
    for href in parts.links:  # the table of contents and the links to each stage's files resolve
        target = href[1:] if href.startswith("#") else None
        assert (target in parts.ids) if target is not None else (page.parent / href).exists(), href


def test_screenshot_is_drawn_and_every_picture_decoded(report_page, tmp_path):
    require_browser()
    page, colours = report_page
    rgb = screenshot(page, tmp_path / "shot.png", SIZE)
    assert rgb.shape == (SIZE[1], SIZE[0], 3)
    assert drawn_fraction(rgb) > MIN_DRAWN and distinct_colours(rgb) > MIN_COLOURS
    # Each stage picture shows at least its own 24x48 pixels of its colour: it loaded and was not squashed.
    for name, colour in colours.items():
        assert _pixels_of(rgb, colour) >= 24 * 48, name


def test_blank_page_and_broken_pictures_fail_the_checks(report_page, tmp_path):
    """Negative controls: the thresholds and the picture check above reject an empty page, a page of one
    line (what a build that stopped early leaves) and a page whose pictures are gone."""
    require_browser()
    for name, body in (("empty", ""), ("one-line", "<h1>Report: synthetic-tiny</h1>")):
        bare = tmp_path / f"{name}.html"
        bare.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>{body}</body></html>\n')
        rgb = screenshot(bare, tmp_path / f"{name}.png", SIZE)
        assert rgb.shape == (SIZE[1], SIZE[0], 3)
        assert drawn_fraction(rgb) <= MIN_DRAWN and distinct_colours(rgb) <= MIN_COLOURS, name

    page, colours = report_page
    for img in (page.parent / "img").iterdir():
        img.unlink()
    parts = PageParts(dump_dom(page))
    assert sorted(missing_images(parts, page)) == sorted(parts.images) and len(parts.images) == 7
    rgb = screenshot(page, tmp_path / "broken.png", SIZE)
    assert all(_pixels_of(rgb, colour) == 0 for colour in colours.values())


def test_javascript_is_off(tmp_path):
    """The page must read without scripts, so the helper's browser runs none."""
    require_browser()
    page = tmp_path / "script.html"
    page.write_text('<!DOCTYPE html><html><body><p id="x">static text</p>'
                    "<script>document.getElementById('x').textContent = 'script ran';</script></body></html>")
    dom = dump_dom(page)
    assert "static text</p>" in dom and "script ran</p>" not in dom
