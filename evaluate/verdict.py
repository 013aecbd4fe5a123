"""The words a report puts beside a headline, computed from its numbers: is the method ahead of its
baseline, behind it, or within the seed spread? And label counts written so they cannot be misread.
Pure functions; the report page, the fine-tuning comparison and their tests share them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

AHEAD, WITHIN, BEHIND = "ahead", "within the spread", "behind"


@dataclass(frozen=True)
class Verdict:
    word: str  # AHEAD, WITHIN or BEHIND
    difference: float  # method - baseline, in the metric's units (sign as measured)
    spread: float | None  # the larger of the two sample stds; None: one network per side, no spread
    text: str  # one line for a reader


def _std(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def verdict(method: float, method_std: float | None, baseline: float, baseline_std: float | None,
            higher_is_better: bool = True, unit: str = "",
            no_spread: str = "with one network per side (no spread to judge it by)",
            spread_name: str = "a spread") -> Verdict:
    """Compare a method's mean with its baseline's. The spread is the larger of the two seed stds
    (sample std over networks); the method is "ahead" when it is better by more than the spread,
    "behind" when worse by more, else "within the spread". Without any std (one network per side)
    the spread counts as 0 and the text says so (`no_spread`). `spread_name` says what the std is
    over ("a frame-to-frame std" where frames, not seeds, vary)."""
    d = float(method) - float(baseline)
    stds = [s for s in (_std(method_std), _std(baseline_std)) if s is not None]
    spread = max(stds) if stds else None
    gain = d if higher_is_better else -d
    margin = spread or 0.0
    word = AHEAD if gain > margin else BEHIND if gain < -margin else WITHIN
    text = f"{word}: {d:+.2f}{unit}"
    text += (f" against {spread_name} of {spread:.2f}{unit}" if spread is not None
             else f" {no_spread}")
    return Verdict(word, d, spread, text)


def label_count(train_frames: int, pool_frames: int | None) -> str:
    """'1 labelled frame of 8 (1/8)'; 'all 8 labelled frames (8/8)'; the pool unknown: '1 labelled frame'."""
    noun = "frame" if train_frames == 1 else "frames"
    if not pool_frames:
        return f"{train_frames} labelled {noun}"
    share = Fraction(train_frames, pool_frames)
    if train_frames == pool_frames:
        return f"all {pool_frames} labelled frames ({train_frames}/{pool_frames})"
    return f"{train_frames} labelled {noun} of {pool_frames} ({share.numerator}/{share.denominator})"


def count_mismatch(count: float, reference: float, tolerance: float = 0.10) -> bool:
    """True when a baseline's region count is more than `tolerance` (relative) away from the method's:
    its scores are then not comparable at equal region counts."""
    if reference <= 0:
        return count > 0
    return abs(count - reference) / reference > tolerance
