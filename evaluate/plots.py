"""Every plot of the reports, drawn with matplotlib's Agg backend (no display needed): training losses,
per-class IoU bars, the ablation curves and the proposal sweep. Each plotting function returns a `Plot`:
the picture and the axis labels and ranges it was drawn with, so a test (and a page) can check that no
plot lacks its labels.

Ranges are honest: a y-axis starts at zero unless the values go below it (`honest_range`), so a small
change looks small. Seed spreads are drawn as error bars (± one sample standard deviation).

matplotlib is imported inside the functions: importing this module costs nothing, so `--help` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Peers keep one colour on every plot; the methods take matplotlib's default cycle (tab10) in order.
PEER_COLOURS = {"random init": "black", "SwAV": "tab:grey", "PiCIE": "tab:brown", "gt": "tab:purple"}
DPI = 100
TAB10 = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:grey",
         "tab:olive", "tab:cyan"]


@dataclass(frozen=True)
class Series:
    """One line: a label, its points and optionally a spread (± per point, e.g. a seed std) drawn as bars."""
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    spread: Sequence[float] | None = None
    colour: str | None = None
    dashed: bool = False  # a reference (a peer method's single value drawn across the x-axis)


@dataclass(frozen=True)
class Plot:
    """A drawn plot: uint8 RGB [H, W, 3] and what its axes say."""
    rgb: np.ndarray
    title: str
    x_label: str
    y_label: str
    y_range: tuple[float, float]
    legend: tuple[str, ...] = field(default=())
    colours: tuple[str, ...] = field(default=())  # of the legend's entries, in order


def honest_range(values: Sequence[float], top: float | None = None, pad: float = 0.05) -> tuple[float, float]:
    """(lo, hi) of a y-axis that shows `values` without exaggerating their differences: it always
    includes zero, and is padded by `pad` of its span. `top` (e.g. 100 for a percentage) caps the upper
    end when the values stay below it. Non-finite values are ignored; no values give (0, 1)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return 0.0, float(top) if top is not None else 1.0
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    span = (hi - lo) or 1.0
    lo = lo - pad * span if lo < 0 else 0.0
    hi = hi + pad * span
    if top is not None and float(v.max()) <= top:
        hi = min(hi, float(top))
    return lo, hi


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def line_plot(title: str, series: Sequence[Series], x_label: str, y_label: str, *, x_log: bool = False,
              y_top: float | None = None, size: tuple[float, float] = (6.4, 3.6), dodge: float = 0.0) -> Plot:
    """Lines with point markers (a one-point series is its marker), spreads as error bars, the legend
    outside the axes on the right. The y-axis is `honest_range` of every point and bar (capped at y_top).
    Series without a colour take tab10's in order, skipping the colours given to others; `dodge` shifts
    the k-th marked series by k * dodge along x so that bars at one x stay apart."""
    fig = _figure(size)
    ax = fig.add_subplot()
    taken = {s.colour or PEER_COLOURS.get(s.label) for s in series} - {None}
    free = [c for c in TAB10 if c not in taken] or TAB10
    reach: list[float] = []
    used: list[str] = []
    n_marked = sum(not s.dashed for s in series)
    k = 0  # index among the marked (not dashed) series
    for s in series:
        colour = s.colour or PEER_COLOURS.get(s.label)
        shift = 0.0
        if not s.dashed:
            colour = colour or free[k % len(free)]
            shift = 0.0 if x_log else dodge * (k - (n_marked - 1) / 2)
            k += 1
        xs, ys = np.asarray(s.xs, float) + shift, np.asarray(s.ys, float)
        err = None if s.spread is None else np.nan_to_num(np.asarray(s.spread, float))
        style = dict(label=s.label, color=colour, linestyle="--" if s.dashed else "-",
                     marker=None if s.dashed else "o", markersize=4, capsize=3 if err is not None else 0)
        ax.errorbar(xs, ys, yerr=err, **style)
        used.append(str(colour))
        reach += list(ys) + (list(ys + err) + list(ys - err) if err is not None else [])
    y_range = honest_range(reach, top=y_top)
    ax.set_ylim(*y_range)
    if x_log:
        ax.set_xscale("log")
    else:  # steps and M are whole numbers: no "1.25" ticks
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    labels = tuple(s.label for s in series)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return Plot(_rgb(fig), title, x_label, y_label, y_range, labels, tuple(used))


def iou_bars(names: Sequence[str], series: Sequence[tuple[str, np.ndarray]], title: str = "Per-class IoU") -> Plot:
    """Horizontal per-class IoU bars (percent, 0-100) for several models side by side; a class that is NaN
    for every model is left out."""
    keep = [i for i in range(len(names)) if any(not np.isnan(v[i]) for _, v in series)]
    height = 0.8 / max(len(series), 1)
    fig = _figure((6.4, 0.6 + 0.22 * len(keep) * max(1, len(series) * 0.6)))
    ax = fig.add_subplot()
    y = np.arange(len(keep), dtype=float)
    for k, (label, values) in enumerate(series):
        vals = np.nan_to_num(np.asarray(values, float)[keep])
        ax.barh(y + k * height, vals, height=height, label=label, color=PEER_COLOURS.get(label))
    ax.set_yticks(y + height * (len(series) - 1) / 2, [names[i] for i in keep], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    x_label, y_label = "IoU (%)", "class"
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="x", alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize="small")
    return Plot(_rgb(fig), title, x_label, y_label, (0.0, 100.0), tuple(label for label, _ in series))
