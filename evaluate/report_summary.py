"""One picture that summarises a run's report page (its loss curves and its verdicts), drawn with
matplotlib from what the stages wrote, for places that cannot show the page itself (the README).

    python -m evaluate.report_summary runs/synthetic-tiny docs/report-page.png [--demo-size tiny]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from evaluate.report import LOSS_UNITS, TRAINER_FOLDERS, collect, read_log, verdict_lines

WORD_COLOURS = {"ahead": "tab:green", "within the spread": "tab:grey", "behind": "tab:red"}


def summary_picture(run: Path, out: Path, tiny: bool) -> Path:
    """Loss curves (one panel per trainer, y-axis from zero) above the page's verdicts; writes `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with tempfile.TemporaryDirectory() as img:
        verdicts = verdict_lines(collect(run, Path(img), tiny))
    logs = {f: [read_log(p) for p in sorted(run.glob(f"{f}/**/log.jsonl"))] for f in TRAINER_FOLDERS}
    logs = {f: [(s, v) for s, v in runs if s] for f, runs in logs.items()}
    logs = {f: runs for f, runs in logs.items() if runs}
    fig = Figure(figsize=(11, 3.2 + 0.28 * len(verdicts)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, max(1, len(logs)), height_ratios=[3.2, 0.28 * max(1, len(verdicts))])
    for i, (folder, runs) in enumerate(logs.items()):
        ax = fig.add_subplot(grid[0, i])
        for steps, losses in runs:
            ax.plot(steps, losses, marker="o", markersize=3)
        ax.set_ylim(0, max(v for _, losses in runs for v in losses) * 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel(LOSS_UNITS[folder], fontsize="small")
        ax.set_title(f"{folder}: training loss", fontsize="medium")
        ax.grid(True, alpha=0.3)
    text = fig.add_subplot(grid[1, :])
    text.axis("off")
    for k, (word, line) in enumerate(verdicts or [("within the spread", "no comparison in this run folder yet")]):
        text.text(0.0, 1 - (k + 0.5) / max(1, len(verdicts)), line, color=WORD_COLOURS.get(word, "black"),
                  fontsize="small", va="center", transform=text.transAxes)
    fig.suptitle(f"Report: {run.name}" + (" (tiny preset: no difference here means anything)" if tiny else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder, e.g. runs/synthetic-tiny")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--demo-size", default="", help="the run's preset (tiny adds the page's note)")
    args = parser.parse_args()
    print(f"report_summary: wrote {summary_picture(args.run, args.out, args.demo_size == 'tiny')}")


if __name__ == "__main__":
    main()
