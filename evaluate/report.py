"""`python -m evaluate report`: one static HTML page for a run folder <out>/<dataset>[-<demo>]/.

The page is built only from what the stages already wrote (their JSON reports, training logs and
pictures); it computes no metric itself. Pictures are copied beside the page (report/img/) and
linked relatively, so the folder can be moved or opened from a file manager, and the page needs no
JavaScript. The page is rebuilt only when one of its inputs changed (paths, sizes and mtimes are
fingerprinted into report/inputs.json).

Every comparison shows its seed spread (mean +- sample standard deviation over networks) or, when
there is one network per side or the run used the tiny preset, a visible note that the difference
means nothing.
"""
from __future__ import annotations

import hashlib
import html
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from shared.atomic import write_json, write_text
from shared.config import build_config, config_options, field, save_config
from shared.stage import StageConfig, output_dir

FORMAT = 2  # bump when the page's layout changes, so existing pages are rebuilt
NOISE_NOTE = "one seed / preset too small: this difference means nothing"
TINY_NOTE = "tiny preset: a few optimisation steps on a dozen frames; no difference on this page means anything"
TRAINER_FOLDERS = ("depth", "train", "picie", "finetune")
PROPOSAL_COLUMNS = ("purity", "coverage", "gt_query_miou", "bilateral_miou", "regions_per_frame", "median_region_px")
DEPTH_COLUMNS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
MAX_SAMPLE_FRAMES = 3
# The proposal pictures of one frame, in reading order, with what each shows; other methods follow.
SAMPLE_PICTURES = {"gt": "ground-truth instances", "weights": "boundary weight W: green merge .. red split",
                   "depth": "depth regions (ours)", "depth-rgb": "depth+RGB regions (ours)",
                   "slic": "SLIC baseline", "felzenszwalb": "Felzenszwalb baseline"}
ZOOM_WIDTH = 384  # px: narrower pictures (the tiny preset's 192 px strips) are shown enlarged to this


@dataclass
class ReportConfig(StageConfig):
    force: bool = field(False, "rebuild the page even when no input changed", hash=False, rerun=False)


# ---------------------------------------------------------------- inputs

def report_inputs(run: Path) -> list[Path]:
    """Every file the page is built from, sorted: stage reports, training logs, pictures, pointers."""
    patterns = ["*.current", "*/*.current", "regions/*/config.json", "reports/proposals-*/report.json", "depth/run-*/images/step-*.png",
                "reports/proposals-*/*.png", "shards/*/inspect/*.png", "eval/*/report.json", "eval/depth-*.json",
                "finetune/*/report.json", "finetune/compare-*/compare.json"]
    patterns += [f"{folder}/**/log.jsonl" for folder in TRAINER_FOLDERS]
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in run.glob(pattern) if p.is_file() and p.relative_to(run).parts[0] != "report")
    return sorted(found)


def fingerprint(run: Path, files: list[Path]) -> str:
    """Changes when any input file is added, removed, resized or touched, or the page's format changes."""
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(run)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pointer(path: Path) -> Path | None:
    try:
        target = Path(path.read_text().strip())
    except OSError:
        return None
    # Pointers hold absolute paths; a run folder that was moved still has the target beside the pointer.
    for candidate in (path.parent / target.name, target):
        if candidate.exists():
            return candidate
    return None


def read_log(path: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) of a trainer's log.jsonl; lines without both fields (or unreadable) are skipped."""
    steps, losses = [], []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            step, loss = float(row["step"]), float(row["loss"])
        except (ValueError, KeyError, TypeError):
            continue
        if np.isfinite(loss):
            steps.append(step)
            losses.append(loss)
    return steps, losses


# ---------------------------------------------------------------- formatting

def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.4f}"
    return html.escape(str(v))


def _fmt3(v) -> str:
    return "-" if v is None else f"{float(v):.3f}"  # depth errors and ratios live in 0..1


def mean_std(scores: dict, key: str = "miou") -> str:
    """'m +- s (n networks)' where the report gives a spread, else the value alone."""
    n = scores.get("n_runs") or len(scores.get("runs") or []) or len(scores.get("networks") or []) or 1
    std = scores.get(f"{key}_std")
    text = _fmt(scores.get(key))
    if std is not None and n > 1:
        text += f" &plusmn; {_fmt(std)}"
    return text + f" <small>({n} network{'s' if n != 1 else ''})</small>"


def _networks(scores: dict) -> int:
    return int(scores.get("n_runs") or len(scores.get("runs") or []) or len(scores.get("networks") or []) or 1)


def _note(text: str) -> str:
    return f'<p class="note">&#9888; {html.escape(text)}</p>'


def _table(head: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """The first `text_columns` columns are names (left-aligned), the rest numbers (right-aligned)."""
    def cell(tag: str, i: int, c: str) -> str:
        return f'<{tag} class="text">{c}</{tag}>' if i < text_columns else f"<{tag}>{c}</{tag}>"

    # A table wider than a narrow window scrolls inside its box instead of running off the page.
    out = ['<div class="scroll"><table>', "<tr>" + "".join(cell("th", i, html.escape(h)) for i, h in enumerate(head)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows]
    return "\n".join(out + ["</table></div>"])


class Page:
    """Sections of HTML plus the pictures to copy beside the page."""

    def __init__(self, run: Path, img_dir: Path):
        self.run, self.img_dir = run, img_dir
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, body)

    def picture(self, src: Path, caption: str, zoom: bool = False) -> str:
        """A copy of `src` beside the page; zoom: show a narrow picture enlarged by a whole factor."""
        from PIL import Image

        rel = src.relative_to(self.run)
        name = "__".join(rel.parts)
        shutil.copyfile(src, self.img_dir / name)
        width = ""
        if zoom:
            w, h = Image.open(src).size
            factor = -(-ZOOM_WIDTH // w) if w < ZOOM_WIDTH else 1
            width = f' width="{w * factor}" height="{h * factor}" class="zoom"' if factor > 1 else ""
        return _figure(f"img/{html.escape(name)}", caption, width)

    def chart(self, name: str, rgb: np.ndarray, caption: str) -> str:
        from PIL import Image

        Image.fromarray(rgb).save(self.img_dir / name)
        return _figure(f"img/{name}", caption)

    def link(self, path: Path, text: str) -> str:
        # The page lives in <run>/report/, so every stage's file is one level up.
        return f'<a href="../{html.escape(path.relative_to(self.run).as_posix())}">{html.escape(text)}</a>'

    def add(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))


def _figure(src: str, caption: str, attrs: str = "") -> str:
    # The picture links to itself: a contact sheet shrunk to the page's width opens at full size.
    return (f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(caption)}"{attrs}></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _missing(what: str, how: str) -> str:
    return f'<p class="missing">No {html.escape(what)} in this run folder (made by <code>{html.escape(how)}</code>).</p>'


# ---------------------------------------------------------------- sections

def depth_used(run: Path) -> str:
    """Which depth the current depth regions were built from (the regions stage's saved config)."""
    current = _pointer(run / "regions" / "depth.current")
    stores = [current] if current else sorted(run.glob("regions/depth-*"))
    for store in stores:
        saved = _read_json(store / "config.json") or {}
        depth = (saved.get("config") or saved).get("depth")
        if depth is not None:
            return depth or "the dataset's default (exact depth on the synthetic city)"
    return "unknown (no depth region store)"


def section_samples(page: Page, run: Path) -> None:
    reports = sorted(run.glob("reports/proposals-*/report.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not reports:
        page.add("samples", "Sample frames", _missing("proposal pictures", "make proposals"))
        return
    folder = reports[0].parent
    frames = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*_*.png")})[:MAX_SAMPLE_FRAMES]
    body = [f"<p>From {page.link(reports[0], folder.name)}: each frame's ground-truth instances, the boundary "
            "weights the depth grouping used, and the regions of every method (click a picture for full size).</p>"]
    order = list(SAMPLE_PICTURES)
    for frame in frames:
        pictures = sorted(folder.glob(f"{frame}_*.png"), key=lambda p: (
            order.index(m) if (m := p.stem.rsplit("_", 1)[1]) in order else len(order), m))
        figs = [page.picture(p, f"{frame}: {SAMPLE_PICTURES.get(m, m)}")
                for p in pictures for m in [p.stem.rsplit("_", 1)[1]]]
        body.append('<div class="frames">' + "".join(figs) + "</div>")
    snapshots = sorted(run.glob("depth/run-*/images/step-*.png"), key=lambda p: (p.parent.parent.name, p.name))
    if snapshots:  # the depth trainer's last picture: target frame / predicted disparity / auto-mask
        body.append(page.picture(snapshots[-1], f"depth network at {snapshots[-1].stem} ({snapshots[-1].parent.parent.name}):"
                                                " frame, predicted disparity, auto-mask", zoom=True))
    page.add("samples", "Sample frames, depth and regions", "\n".join(body))


def section_contact_sheet(page: Page, run: Path) -> None:
    current = _pointer(run / "shards" / "depth.current")
    sheets = sorted((current / "inspect").glob("*.png")) if current else []
    sheets = sheets or sorted(run.glob("shards/*/inspect/*.png"))
    if not sheets:
        page.add("copy-paste", "Copy-paste contact sheet", _missing("contact sheet", "make inspect"))
        return
    body = [page.picture(p, f"{p.parent.parent.name}: group {p.stem}") for p in sheets[:2]]
    page.add("copy-paste", "Copy-paste contact sheet", "\n".join(body))


def section_losses(page: Page, run: Path) -> None:
    from evaluate.report_pictures import SERIES_COLOURS, _font, _text_size, line_chart

    body = []
    for folder in TRAINER_FOLDERS:
        series = []
        for log in sorted(run.glob(f"{folder}/**/log.jsonl")):
            steps, losses = read_log(log)
            if steps:
                label = log.parent.relative_to(run / folder).as_posix()
                series.append((label, steps, losses, SERIES_COLOURS[len(series) % len(SERIES_COLOURS)]))
        if not series:
            continue
        xs = [x for _, s, _, _ in series for x in s]
        ys = [y for _, _, s, _ in series for y in s]
        lo, hi = min(ys), max(ys)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        # The legend sits right of the plot: a long run name widens the chart, not squeezes the plot.
        legend = max(_text_size(label, _font())[0] for label, _, _, _ in series[:8])
        rgb = line_chart(f"{folder}: training loss", series[:8], "step", "loss",
                         (min(xs), max(max(xs), min(xs) + 1)), (lo - pad, hi + pad), x_log=False,
                         size=(300, max(460, 400 + legend)))
        steps = ", ".join(f"{label}: {len(s)} logged step{'s' if len(s) != 1 else ''}" for label, s, _, _ in series)
        body.append(page.chart(f"loss_{folder}.png", rgb, f"{folder} ({steps})"))
    page.add("losses", "Training losses",
             '<div class="charts">' + "\n".join(body) + "</div>" if body else _missing("training log", "make depth / train"))


def section_proposals(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(run.glob("reports/proposals-*/report.json"))
    if not reports:
        page.add("proposals", "Region proposals vs baselines", _missing("proposal report", "make proposals"))
        return
    body = []
    for path in reports:
        rep = _read_json(path) or {}
        results = rep.get("results") or {}
        tags = {"depth": "ours", "depth-rgb": "ours", "gt": "upper bound"}
        rows = [[html.escape(m) + (f" <small>({tags[m]})</small>" if m in tags else "")]
                + [_fmt(scores.get(c)) for c in PROPOSAL_COLUMNS] for m, scores in results.items()]
        body.append(f"<h3>{page.link(path, path.parent.name)}: depth {html.escape(str(rep.get('depth') or 'default'))}, "
                    f"{_fmt(rep.get('frames'))} labelled frames</h3>")
        body.append(_table(["method"] + list(PROPOSAL_COLUMNS), rows))
        body.append("<p>The methods are deterministic on these frames: there is no seed spread; the spread "
                    "that matters is over frames, which this report does not give.</p>")
        if tiny or (rep.get("frames") or 0) < 20:
            body.append(_note(f"{_fmt(rep.get('frames'))} frames / preset too small: differences of a few "
                              "points between methods mean nothing"))
    page.add("proposals", "Region proposals vs baselines", "\n".join(body))


def section_depth(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(run.glob("eval/depth-*.json"))
    reports = [p for p in reports if not p.name.endswith((".config.json", ".done.json"))]
    if not reports:
        page.add("depth", "Depth vs the trivial baseline", _missing("depth evaluation", "python -m evaluate depth-eval"))
        return
    body = []
    for path in reports:
        rep = _read_json(path) or {}
        rows = [[name] + [_fmt3((rep.get(name) or {}).get(c)) for c in DEPTH_COLUMNS] for name in ("model", "baseline")]
        body.append(f"<h3>{page.link(path, path.name)}: {_fmt(rep.get('frames'))} frames, split "
                    f"{_fmt(rep.get('split'))}; baseline = mean ground-truth depth</h3>")
        body.append(_table(["", *DEPTH_COLUMNS], rows))
        body.append("<p>abs_rel to rmse_log: lower is better; a1-a3 (share of pixels within 1.25<sup>k</sup>): "
                    "higher is better.</p>")
        saved = (_read_json(path.with_suffix(".config.json")) or {}).get("config") or {}
        if saved.get("median_scaling", True):
            body.append("<p>Each prediction is median-scaled to its ground truth (depth is learnt up to scale).</p>")
        body.append(_note(NOISE_NOTE if tiny else "one depth network: no seed spread"))
    page.add("depth", "Depth vs the trivial baseline", "\n".join(body))


def section_unsupervised(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(p for p in run.glob("eval/*/report.json"))
    if not reports:
        page.add("unsupervised", "Unsupervised segmentation: pre-trained vs random init",
                 _missing("unsupervised evaluation", "make eval"))
        return
    body = []
    for path in reports:
        rep = _read_json(path) or {}
        html_page = path.with_name("report.html")
        title = page.link(html_page if html_page.exists() else path, path.parent.name)
        body.append(f"<h3>{title}: clustering {_fmt(rep.get('clustering'))}, {len(rep.get('frames') or [])} frames</h3>")
        rows, single = [], False
        for protocol, prot in (rep.get("protocols") or {}).items():
            for model, scores in (prot.get("models") or {}).items():
                single |= _networks(scores) < 2
                rows.append([html.escape(protocol), html.escape(model), mean_std(scores, "miou"),
                             mean_std(scores, "pixel_accuracy")])
        body.append(_table(["protocol", "model", "mIoU", "pixel accuracy"], rows, text_columns=2))
        if single or tiny:
            body.append(_note(NOISE_NOTE))
    page.add("unsupervised", "Unsupervised segmentation: pre-trained vs random init", "\n".join(body))


def section_finetune(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(run.glob("finetune/*/report.json"))
    compares = sorted(run.glob("finetune/compare-*/compare.json"))
    if not reports and not compares:
        page.add("finetune", "Fine-tuning: pre-trained vs scratch", _missing("fine-tuning report", "make finetune"))
        return
    body, single = [], False
    rows = []
    for path in reports:
        rep = _read_json(path) or {}
        single |= _networks(rep) < 2
        rows.append([page.link(path, path.parent.name), _fmt(rep.get("task")), _fmt(rep.get("init")),
                     _fmt(rep.get("label_fraction")), mean_std(rep, "miou"), mean_std(rep, "pixel_accuracy")])
    if rows:
        body.append(_table(["run", "task", "init", "labels", "mIoU", "pixel accuracy"], rows, text_columns=3))
        inits = {str((_read_json(p) or {}).get("init")) for p in reports}
        if len(inits) < 2:
            body.append(_note(f"only {', '.join(sorted(inits))} networks: no second initialisation to compare with"))
    for path in compares:
        rep = _read_json(path) or {}
        flat = [[html.escape(k), _fmt(v)] for k, v in rep.items() if not isinstance(v, (dict, list))]
        body.append(f"<h3>{page.link(path, path.parent.name)}</h3>" + _table(["field", "value"], flat))
    if single or tiny:
        body.append(_note(NOISE_NOTE))
    page.add("finetune", "Fine-tuning: pre-trained vs scratch", "\n".join(body))


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222;overflow-wrap:break-word}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f0f0f0}td.text,th.text{text-align:left}
.note{background:#fff3cd;border:1px solid #e0c060;padding:4px 8px;font-weight:bold}
.missing{color:#777;font-style:italic}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:small;color:#555}img{max-width:100%;height:auto;vertical-align:top}
.frames{display:grid;grid-template-columns:repeat(auto-fill,minmax(216px,1fr));gap:4px 8px;margin-bottom:8px}
.frames figure{margin:0}.frames img{width:100%}img.zoom{image-rendering:pixelated}
.charts{display:flex;flex-wrap:wrap;gap:4px}"""


def build_page(run: Path, demo_size: str) -> str:
    """Write <run>/report/index.html (and its pictures) from what the stages wrote; return the HTML."""
    out = run / "report"
    img_dir = out / "img"
    if img_dir.exists():
        shutil.rmtree(img_dir)  # pictures of stages that are gone must not linger
    img_dir.mkdir(parents=True)
    tiny = demo_size == "tiny"
    page = Page(run, img_dir)
    section_samples(page, run)
    section_contact_sheet(page, run)
    section_losses(page, run)
    section_proposals(page, run, tiny)
    section_depth(page, run, tiny)
    section_unsupervised(page, run, tiny)
    section_finetune(page, run, tiny)
    head = [f"<p>Run folder <code>{html.escape(str(run))}</code>; preset {html.escape(demo_size or 'full size')}; "
            f"regions built from depth: <b>{html.escape(depth_used(run))}</b>.</p>"]
    if tiny:
        head.append(_note(TINY_NOTE))
    toc = "<ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t, _ in page.sections) + "</ul>"
    body = "\n".join(f'<h2 id="{a}">{html.escape(t)}</h2>\n{b}' for a, t, b in page.sections)
    text = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Report: {html.escape(run.name)}</title>"
            f"<style>{STYLE}</style></head>\n<body><h1>Report: {html.escape(run.name)}</h1>\n"
            + "\n".join(head) + toc + body + "\n</body></html>\n")
    write_text(out / "index.html", text)
    return text


def make_report(run: Path, demo_size: str, force: bool = False) -> tuple[Path, bool]:
    """(page path, rebuilt?): the page is rebuilt only when its inputs' fingerprint changed."""
    if not run.is_dir():
        raise click.ClickException(f"{run}: no run folder (run a stage first, e.g. `make demo`)")
    files = report_inputs(run)
    key = fingerprint(run, files)
    page, stamp = run / "report" / "index.html", run / "report" / "inputs.json"
    if not force and page.is_file() and (_read_json(stamp) or {}).get("fingerprint") == key:
        return page, False
    build_page(run, demo_size)
    write_json(stamp, {"fingerprint": key, "files": [p.relative_to(run).as_posix() for p in files]})
    return page, True


@click.command("report")
@config_options(ReportConfig)
def report(**kwargs) -> None:
    """One static HTML page (no JavaScript) of everything the stages wrote under <out>/<dataset>[-<demo-size>]/."""
    cfg = build_config(ReportConfig, kwargs)
    t0 = time.perf_counter()
    run = output_dir(cfg)
    page, rebuilt = make_report(run, cfg.demo_size, cfg.force)
    if rebuilt:
        save_config(cfg, page.with_name("config.json"))
        click.echo(f"report: wrote {page} in {time.perf_counter() - t0:.1f} s")
    else:
        click.echo(f"report: reusing {page} (no input changed; --force rebuilds)")
