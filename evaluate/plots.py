"""Line plots with error bars, drawn with PIL alone (no plotting library in the stack): one metric
against one knob for several series, as the ablation and proposal-sweep reports show them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclass
class Series:
    """One line: y[i] (+- err[i], NaN = missing) at x[i]."""

    label: str
    x: list[float]
    y: list[float]
    err: list[float]


def _nice_range(lo: float, hi: float) -> tuple[float, float, float]:
    """(lo, hi, step) rounded outwards to a step of 1, 2 or 5 x 10^k, about 5 ticks."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0, 0.2
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / 5
    k = 10 ** math.floor(math.log10(raw))
    step = min((m * k for m in (1, 2, 5, 10) if m * k >= raw), default=10 * k)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def line_plot(series: list[Series], title: str, x_label: str, y_label: str,
              size: tuple[int, int] = (640, 400), x_log: bool = False) -> np.ndarray:
    """uint8 RGB [H, W, 3]: every series as a polyline with markers and vertical error bars."""
    width, height = size
    font = ImageFont.load_default()
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 190, 28, 40
    xs = [v for s in series for v in s.x]
    ys = [v for s in series for v, e in zip(s.y, s.err) for v in (v - (e or 0), v + (e or 0)) if math.isfinite(v)]
    tx = (lambda v: math.log10(v)) if x_log else (lambda v: float(v))
    x_lo, x_hi = (min(map(tx, xs)), max(map(tx, xs))) if xs else (0.0, 1.0)
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = 0.06 * (x_hi - x_lo)  # markers at the ends stay inside the frame
    x_lo, x_hi = x_lo - pad, x_hi + pad
    y_lo, y_hi, y_step = _nice_range(min(ys) if ys else 0.0, max(ys) if ys else 1.0)
    pw, ph = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (tx(x) - x_lo) / (x_hi - x_lo) * pw, top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph)

    draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    y = y_lo
    while y <= y_hi + 1e-9:
        _, yy = px(x_lo if not x_log else 10 ** x_lo, y)
        draw.line([left, yy, left + pw, yy], fill=(225, 225, 225))
        draw.text((4, yy - 6), f"{y:g}", fill=(0, 0, 0), font=font)
        y += y_step
    for xv in sorted(set(xs)):
        xx, _ = px(xv, y_lo)
        draw.line([xx, top + ph, xx, top + ph + 4], fill=(0, 0, 0))
        draw.text((xx - 8, top + ph + 6), f"{xv:g}", fill=(0, 0, 0), font=font)
    draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    draw.text((left + pw // 2 - 20, height - 16), x_label, fill=(0, 0, 0), font=font)
    draw.text((4, top - 16), y_label, fill=(0, 0, 0), font=font)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(px(x, y), e) for x, y, e in zip(s.x, s.y, s.err) if math.isfinite(y)]
        if len(pts) > 1:
            draw.line([p for p, _ in pts], fill=colour, width=2)
        for (xx, yy), e in pts:
            if e and math.isfinite(e):
                e_px = e / (y_hi - y_lo) * ph
                draw.line([xx, yy - e_px, xx, yy + e_px], fill=colour, width=1)
                draw.line([xx - 3, yy - e_px, xx + 3, yy - e_px], fill=colour)
                draw.line([xx - 3, yy + e_px, xx + 3, yy + e_px], fill=colour)
            draw.ellipse([xx - 3, yy - 3, xx + 3, yy + 3], fill=colour)
        ly = top + 4 + 14 * i
        draw.rectangle([left + pw + 10, ly + 2, left + pw + 20, ly + 10], fill=colour)
        draw.text((left + pw + 24, ly), s.label[:30], fill=(0, 0, 0), font=font)
    return np.asarray(img)
