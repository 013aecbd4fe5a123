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
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from evaluate.plots import Plot
from evaluate.verdict import WITHIN, Verdict, count_mismatch, label_count, verdict
from shared.atomic import write_json, write_text
from shared.config import build_config, config_options, field, save_config
from shared.stage import StageConfig, output_dir

FORMAT = 3  # bump when the page's layout changes, so existing pages are rebuilt
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
BASELINES = ("slic", "felzenszwalb")  # the proposal baselines matched to our region count
# What each trainer's logged loss is, for the y-axis (all are unitless objectives).
LOSS_UNITS = {"depth": "photometric loss (unitless)", "train": "SwAV loss (cross-entropy, nats)",
              "picie": "PiCIE loss (cross-entropy, nats)", "finetune": "cross-entropy (nats)"}


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


# ---------------------------------------------------------------- page parts (rendered by templates/report.html)

@dataclass(frozen=True)
class Link:
    href: str
    text: str
    kind: str = "link"


@dataclass(frozen=True)
class Value:
    """A number and a small note beside it: '21.25 ± 1.50 (3 networks)'."""
    text: str
    small: str = ""
    kind: str = "value"


@dataclass(frozen=True)
class Styled:
    """Inline text in a style the template knows: kind "code" or "strong"."""
    text: str
    kind: str


def Code(text: str) -> Styled:  # noqa: N802 (reads like the other parts)
    return Styled(text, "code")


def Strong(text: str) -> Styled:  # noqa: N802
    return Styled(text, "strong")


@dataclass(frozen=True)
class Figure:
    src: str
    caption: str
    width: int | None = None  # set for a narrow picture shown enlarged
    height: int | None = None



def para(*parts) -> dict:
    return {"kind": "p", "parts": list(parts)}


def heading(*parts) -> dict:
    return {"kind": "h3", "parts": list(parts)}


def note(*parts) -> dict:
    return {"kind": "note", "parts": list(parts)}


def table(head: list[str], rows: list[list], text_columns: int = 1) -> dict:
    """The first `text_columns` columns are names (left-aligned), the rest numbers (right-aligned)."""
    return {"kind": "table", "head": head, "rows": rows, "text_columns": text_columns}


def missing(what: str, how: str) -> list[dict]:
    return [{"kind": "missing", "what": what, "how": how}]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.4f}"
    return str(v)


def _fmt3(v) -> str:
    return "-" if v is None else f"{float(v):.3f}"  # depth errors and ratios live in 0..1


def _networks(scores: dict) -> int:
    return int(scores.get("n_runs") or len(scores.get("runs") or []) or len(scores.get("networks") or []) or 1)


def mean_std(scores: dict, key: str = "miou") -> Value:
    """'m ± s (n networks)' where the report gives a spread, else the value alone."""
    n = _networks(scores)
    std = scores.get(f"{key}_std")
    text = _fmt(scores.get(key))
    if std is not None and n > 1:
        text += f" ± {_fmt(std)}"
    return Value(text, f"{n} network{'s' if n != 1 else ''}")


def verdict_block(v: Verdict, method: str, baseline: str, metric: str, tiny: bool, seeded: bool = True) -> list[dict]:
    """The verdict line, and where the run cannot separate the two, what can (`seeded`: the numbers come
    from trained networks, so seeds are what separates them)."""
    blocks = [{"kind": "verdict", "word": v.word,
               "parts": [Strong(f"{method} vs {baseline}, {metric}: "), v.text]}]
    if tiny:
        blocks.append(note("The tiny preset cannot separate these two; ", Code("make demo DEMO_SIZE=small"),
                           " trains three seeds and shows their spread; on its learnt depth the gain is within it, on exact "
                           "depth (", Code("make demo DEMO_SIZE=small DEMO_DEPTH=gt"), ") it is larger (docs/results.md)."))
    elif seeded and (v.word == WITHIN or v.spread is None):
        blocks.append(note("This run cannot separate these two ("
                           + ("within the seed spread" if v.spread is not None else "one network per side")
                           + "); ", Code("make demo DEMO_SIZE=small"), " trains three seeds, and the full-size data "
                           "(no DEMO_SIZE) more steps."))
    return blocks


class Page:
    """Sections of blocks plus the pictures copied beside the page and the plots drawn for it."""

    def __init__(self, run: Path, img_dir: Path):
        self.run, self.img_dir = run, img_dir
        self.sections: list[dict] = []  # {"anchor", "title", "blocks"}
        self.plots: list[tuple[str, Plot]] = []  # (file name in img/, plot)

    def picture(self, src: Path, caption: str, zoom: bool = False) -> Figure:
        """A copy of `src` beside the page; zoom: show a narrow picture enlarged by a whole factor."""
        from PIL import Image

        rel = src.relative_to(self.run)
        name = "__".join(rel.parts)
        shutil.copyfile(src, self.img_dir / name)
        if zoom:
            w, h = Image.open(src).size
            factor = -(-ZOOM_WIDTH // w) if w < ZOOM_WIDTH else 1
            if factor > 1:
                return Figure(f"img/{name}", caption, w * factor, h * factor)
        return Figure(f"img/{name}", caption)

    def chart(self, name: str, plot: Plot, caption: str) -> Figure:
        from PIL import Image

        Image.fromarray(plot.rgb).save(self.img_dir / name)
        self.plots.append((name, plot))
        return Figure(f"img/{name}", caption)

    def link(self, path: Path, text: str) -> Link:
        # The page lives in <run>/report/, so every stage's file is one level up.
        return Link(f"../{path.relative_to(self.run).as_posix()}", text)

    def add(self, anchor: str, title: str, blocks: list[dict]) -> None:
        self.sections.append({"anchor": anchor, "title": title, "blocks": blocks})


def figures(figs: list[Figure], layout: str = "charts") -> dict:
    return {"kind": "figures", "figures": figs, "layout": layout}


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
        page.add("samples", "Sample frames, depth and regions", missing("proposal pictures", "make proposals"))
        return
    folder = reports[0].parent
    frames = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*_*.png")})[:MAX_SAMPLE_FRAMES]
    body = [para("From ", page.link(reports[0], folder.name), ": each frame's ground-truth instances, the boundary "
                 "weights the depth grouping used, and the regions of every method (click a picture for full size).")]
    order = list(SAMPLE_PICTURES)
    for frame in frames:
        pictures = sorted(folder.glob(f"{frame}_*.png"), key=lambda p: (
            order.index(m) if (m := p.stem.rsplit("_", 1)[1]) in order else len(order), m))
        body.append(figures([page.picture(p, f"{frame}: {SAMPLE_PICTURES.get(m, m)}")
                             for p in pictures for m in [p.stem.rsplit("_", 1)[1]]], "frames"))
    snapshots = sorted(run.glob("depth/run-*/images/step-*.png"), key=lambda p: (p.parent.parent.name, p.name))
    if snapshots:  # the depth trainer's last picture: target frame / predicted disparity / auto-mask
        body.append(figures([page.picture(snapshots[-1], f"depth network at {snapshots[-1].stem} "
                                          f"({snapshots[-1].parent.parent.name}): frame, predicted disparity, auto-mask",
                                          zoom=True)]))
    page.add("samples", "Sample frames, depth and regions", body)


def section_contact_sheet(page: Page, run: Path) -> None:
    current = _pointer(run / "shards" / "depth.current")
    sheets = sorted((current / "inspect").glob("*.png")) if current else []
    sheets = sheets or sorted(run.glob("shards/*/inspect/*.png"))
    if not sheets:
        page.add("copy-paste", "Copy-paste contact sheet", missing("contact sheet", "make inspect"))
        return
    page.add("copy-paste", "Copy-paste contact sheet",
             [figures([page.picture(p, f"{p.parent.parent.name}: group {p.stem}") for p in sheets[:2]])])


def section_losses(page: Page, run: Path) -> None:
    from evaluate.plots import Series, line_plot

    figs = []
    for folder in TRAINER_FOLDERS:
        series = []
        for log in sorted(run.glob(f"{folder}/**/log.jsonl")):
            steps, losses = read_log(log)
            if steps:
                series.append(Series(log.parent.relative_to(run / folder).as_posix(), steps, losses))
        if not series:
            continue
        plot = line_plot(f"{folder}: training loss", series[:8], "training step", LOSS_UNITS[folder])
        steps = ", ".join(f"{s.label}: {len(s.xs)} logged step{'s' if len(s.xs) != 1 else ''}" for s in series)
        figs.append(page.chart(f"loss_{folder}.png", plot, f"{folder} ({steps})"))
    page.add("losses", "Training losses", [figures(figs)] if figs else missing("training log", "make depth / train"))


def section_proposals(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(run.glob("reports/proposals-*/report.json"))
    if not reports:
        page.add("proposals", "Region proposals vs baselines", missing("proposal report", "make proposals"))
        return
    regions_depth = depth_used(run)
    body = []
    tags = {"depth": "ours", "depth-rgb": "ours", "gt": "upper bound"}
    for path in reports:
        rep = _read_json(path) or {}
        results = rep.get("results") or {}
        ours = next((m for m in ("depth", "depth-rgb") if m in results), None)
        reference = (results.get(ours) or {}).get("regions_per_frame") if ours else None
        rows, flagged = [], []
        for m, scores in results.items():
            name = m + (f" ({tags[m]})" if m in tags else "")
            off = (m in BASELINES and reference is not None and scores.get("regions_per_frame") is not None
                   and count_mismatch(scores["regions_per_frame"], reference))
            if off:
                flagged.append(m)
                name += " ⚠ region count off by more than 10 %"
            rows.append([name] + [_fmt(scores.get(c)) for c in PROPOSAL_COLUMNS])
        depth = str(rep.get("depth") or "default")
        body.append(heading(page.link(path, path.parent.name), f": depth {depth}, {_fmt(rep.get('frames'))} labelled frames"))
        body.append(table(["method"] + list(PROPOSAL_COLUMNS), rows))
        if rep.get("depth") and regions_depth != "unknown (no depth region store)" and rep.get("depth") != regions_depth:
            body.append(note(f"this report used depth {depth}, the region store {regions_depth}: "
                             "its depth rows do not describe the regions that were trained on"))
        if flagged:
            body.append(note(f"{', '.join(flagged)}: more than 10 % away from {ours}'s "
                             f"{reference:.0f} regions per frame; not a comparison at equal region counts"))
        paired = rep.get("paired") or {}
        for base in BASELINES:
            if ours and base in results and base not in flagged and \
                    None not in (results[ours].get("gt_query_miou"), results[base].get("gt_query_miou")):
                # deterministic methods: the spread a difference must exceed is over frames (the
                # std of the per-frame differences), not over seeds
                v = verdict(results[ours]["gt_query_miou"], (paired.get(base) or {}).get("frame_std"),
                            results[base]["gt_query_miou"], None,
                            no_spread="(deterministic methods; this report has no per-frame spread)",
                            spread_name="a frame-to-frame std")
                body += verdict_block(v, ours, base, "GT-query mIoU", False, seeded=False)
        body.append(para("The methods are deterministic on these frames: the spread is the std over frames of "
                         "the per-frame difference. The paper's regions are only as good as the depth they are "
                         "grouped on: ", Code("make demo DEMO_SIZE=small DEMO_DEPTH=gt"), " shows them on exact depth "
                         "at 192x384, where they beat both baselines by more than that spread, and docs/depth.md "
                         "how they follow the depth network's training."))
        if tiny or (rep.get("frames") or 0) < 20:
            body.append(note(f"{_fmt(rep.get('frames'))} frames / preset too small: differences of a few "
                             "points between methods mean nothing"))
    page.add("proposals", "Region proposals vs baselines", body)


def section_depth(page: Page, run: Path, tiny: bool) -> None:
    reports = sorted(run.glob("eval/depth-*.json"))
    reports = [p for p in reports if not p.name.endswith((".config.json", ".done.json"))]
    if not reports:
        page.add("depth", "Depth vs the trivial baseline", missing("depth evaluation", "make depth-eval"))
        return
    body = []
    for path in reports:
        rep = _read_json(path) or {}
        rows = [[name] + [_fmt3((rep.get(name) or {}).get(c)) for c in DEPTH_COLUMNS] for name in ("model", "baseline")]
        body.append(heading(page.link(path, path.name), f": {_fmt(rep.get('frames'))} frames, split "
                            f"{_fmt(rep.get('split'))}; baseline = mean ground-truth depth"))
        body.append(table(["", *DEPTH_COLUMNS], rows))
        body.append(para("abs_rel to rmse_log: lower is better; a1-a3 (share of pixels within 1.25^k): higher is better."))
        saved = (_read_json(path.with_suffix(".config.json")) or {}).get("config") or {}
        if saved.get("median_scaling", True):
            body.append(para("Each prediction is median-scaled to its ground truth (depth is learnt up to scale)."))
        model, base = (rep.get("model") or {}).get("abs_rel"), (rep.get("baseline") or {}).get("abs_rel")
        if model is not None and base is not None:
            v = verdict(model, None, base, None, higher_is_better=False)
            body.append({"kind": "verdict", "word": v.word,
                         "parts": [Strong("depth network vs mean depth, abs_rel (lower is better): "), v.text]})
        body.append(note(NOISE_NOTE if tiny else "one depth network: no seed spread"))
    page.add("depth", "Depth vs the trivial baseline", body)


def section_unsupervised(page: Page, run: Path, tiny: bool) -> None:
    title = "Unsupervised segmentation: pre-trained vs random init"
    reports = sorted(p for p in run.glob("eval/*/report.json"))
    if not reports:
        page.add("unsupervised", title, missing("unsupervised evaluation", "make eval"))
        return
    body = []
    for path in reports:
        rep = _read_json(path) or {}
        html_page = path.with_name("report.html")
        body.append(heading(page.link(html_page if html_page.exists() else path, path.parent.name),
                            f": clustering {_fmt(rep.get('clustering'))}, {len(rep.get('frames') or [])} frames"))
        rows, single, verdicts = [], False, []
        for protocol, prot in (rep.get("protocols") or {}).items():
            models = prot.get("models") or {}
            for model, scores in models.items():
                single |= _networks(scores) < 2
                rows.append([f"{protocol} protocol", model, mean_std(scores, "miou"), mean_std(scores, "pixel_accuracy")])
            ours, base = models.get("pre-trained"), models.get("random init")
            if ours and base and ours.get("miou") is not None and base.get("miou") is not None:
                v = verdict(ours["miou"], ours.get("miou_std"), base["miou"], base.get("miou_std"))
                verdicts += verdict_block(v, "pre-trained", "random init", f"mIoU, {protocol} protocol", tiny)
        body.append(table(["protocol", "model", "mIoU (%)", "pixel accuracy (%)"], rows, text_columns=2))
        body += verdicts
        if single or tiny:
            body.append(note(NOISE_NOTE))
    page.add("unsupervised", title, body)


def labels_text(rep: dict) -> str:
    """The label budget of a fine-tuning report, unambiguous: '1 labelled frame of 8 (1/8)'."""
    train, pool = rep.get("train_frames") or [], rep.get("pool_frames") or []
    if train:
        return label_count(int(train[0]), int(pool[0]) if pool and pool[0] else None) + \
            (f", {len(train)} folds" if len(train) > 1 else "")
    return f"--label-fraction {rep.get('label_fraction')}"


def section_finetune(page: Page, run: Path, tiny: bool) -> None:
    title = "Fine-tuning: pre-trained vs scratch"
    reports = [(p, _read_json(p) or {}) for p in sorted(run.glob("finetune/*/report.json"))]
    if not reports:
        page.add("finetune", title, missing("fine-tuning report", "make finetune"))
        return
    body, single = [], False
    # One table per task and label budget, with a row for each of pre-trained and scratch, run or not.
    groups: dict[tuple[str, str], dict[str, tuple[Path, dict]]] = {}
    for path, rep in reports:
        groups.setdefault((str(rep.get("task")), labels_text(rep)), {})[str(rep.get("init"))] = (path, rep)
    for (task, labels), by_init in groups.items():
        body.append(heading(f"{task}, trained on {labels}"))
        rows = []
        for init in ("pretrained", "scratch", *sorted(set(by_init) - {"pretrained", "scratch"})):
            if init not in by_init:
                rows.append([init, Value("not run", f"make finetune INIT={init}"), "-", "-"])
                continue
            path, rep = by_init[init]
            single |= _networks(rep) < 2
            rows.append([init, page.link(path, path.parent.name), mean_std(rep, "miou"), mean_std(rep, "pixel_accuracy")])
        body.append(table(["init", "run", "mIoU (%)", "pixel accuracy (%)"], rows, text_columns=2))
        if "pretrained" in by_init and "scratch" in by_init:
            ours, base = by_init["pretrained"][1], by_init["scratch"][1]
            if ours.get("miou") is not None and base.get("miou") is not None:
                v = verdict(ours["miou"], ours.get("miou_std"), base["miou"], base.get("miou_std"))
                body += verdict_block(v, "pre-trained", "scratch", "mIoU", tiny)
        else:
            gone = "scratch" if "scratch" not in by_init else "pretrained"
            body.append(note(f"no {gone} run with these labels: ", Code("make finetune-compare"),
                             " fine-tunes both with the same frames, seeds and budget"))
    if single or tiny:
        body.append(note(NOISE_NOTE))
    page.add("finetune", title, body)


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222;overflow-wrap:break-word}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f0f0f0}td.text,th.text{text-align:left}
.note{background:#fff3cd;border:1px solid #e0c060;padding:4px 8px;font-weight:bold}
.verdict{padding:4px 8px;border-left:6px solid #999}.verdict.ahead{border-color:#2a2}.verdict.behind{border-color:#c22}
.missing{color:#777;font-style:italic}figure{display:inline-block;margin:4px;vertical-align:top}
figcaption{font-size:small;color:#555}img{max-width:100%;height:auto;vertical-align:top}
.frames{display:grid;grid-template-columns:repeat(auto-fill,minmax(216px,1fr));gap:4px 8px;margin-bottom:8px}
.frames figure{margin:0}.frames img{width:100%}img.zoom{image-rendering:pixelated}
.charts{display:flex;flex-wrap:wrap;gap:4px}"""


def render(**context) -> str:
    """The page from templates/report.html; every value is HTML-escaped by the template."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html").render(**context)


def collect(run: Path, img_dir: Path, tiny: bool) -> Page:
    """Every section of the page, its pictures copied into img_dir."""
    page = Page(run, img_dir)
    section_samples(page, run)
    section_contact_sheet(page, run)
    section_losses(page, run)
    section_proposals(page, run, tiny)
    section_depth(page, run, tiny)
    section_unsupervised(page, run, tiny)
    section_finetune(page, run, tiny)
    return page


def verdict_lines(page: Page) -> list[tuple[str, str]]:
    """(word, one line) of every verdict on the page, in page order."""
    return [(b["word"], "".join(x if isinstance(x, str) else x.text for x in b["parts"]))
            for s in page.sections for b in s["blocks"] if b["kind"] == "verdict"]


def build_page(run: Path, demo_size: str) -> str:
    """Write <run>/report/index.html (and its pictures) from what the stages wrote; return the HTML."""
    out = run / "report"
    img_dir = out / "img"
    if img_dir.exists():
        shutil.rmtree(img_dir)  # pictures of stages that are gone must not linger
    img_dir.mkdir(parents=True)
    tiny = demo_size == "tiny"
    page = collect(run, img_dir, tiny)
    head = [note(TINY_NOTE)] if tiny else []
    text = render(name=run.name, run=str(run), preset=demo_size or "full size", depth=depth_used(run), head=head,
                  sections=page.sections, style=STYLE)
    write_text(out / "index.html", text)
    # what each plot's axes say, for a reader's script and for the tests
    write_json(out / "plots.json", [{"file": f"img/{name}", "title": p.title, "x_label": p.x_label,
                                     "y_label": p.y_label, "y_range": list(p.y_range)} for name, p in page.plots])
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
