"""Verdicts and label counts: known answers on hand-made numbers."""
from __future__ import annotations

import math

import pytest

from evaluate.verdict import AHEAD, BEHIND, WITHIN, count_mismatch, label_count, verdict


@pytest.mark.parametrize("method,mstd,base,bstd,higher,word", [
    (21.25, 1.5, 9.75, 0.5, True, AHEAD),       # +11.5 beyond a spread of 1.5
    (10.0, 1.5, 9.75, 0.5, True, WITHIN),       # +0.25 inside 1.5
    (8.0, 1.5, 9.75, 0.5, True, BEHIND),        # -1.75 beyond 1.5
    (9.75, 1.5, 11.25, 0.5, True, WITHIN),      # -1.5 exactly at the spread: not beyond it
    (0.125, None, 0.375, None, False, AHEAD),   # depth error: lower is better, no spread
    (0.5, None, 0.375, None, False, BEHIND),
    (3.0, None, 3.0, None, True, WITHIN),       # equal with no spread
    (5.0, math.nan, 4.0, 2.0, True, WITHIN),    # a NaN std is ignored, the other one counts
])
def test_verdict_known_answers(method, mstd, base, bstd, higher, word):
    v = verdict(method, mstd, base, bstd, higher)
    assert v.word == word
    assert v.difference == pytest.approx(method - base)


def test_verdict_text_names_the_difference_and_the_spread():
    assert verdict(21.25, 1.5, 9.75, 0.5).text == "ahead: +11.50 against a spread of 1.50"
    one = verdict(3.0, None, 2.0, None)
    assert one.spread is None and "one network per side" in one.text


def test_label_count_is_unambiguous():
    assert label_count(1, 8) == "1 labelled frame of 8 (1/8)"
    assert label_count(2, 16) == "2 labelled frames of 16 (1/8)"
    assert label_count(8, 8) == "all 8 labelled frames (8/8)"
    assert label_count(3, None) == "3 labelled frames"


def test_count_mismatch_at_ten_percent():
    assert not count_mismatch(60.0, 60.0) and not count_mismatch(66.0, 60.0) and not count_mismatch(54.0, 60.0)
    assert count_mismatch(66.1, 60.0) and count_mismatch(53.9, 60.0)
    assert count_mismatch(5.0, 0.0) and not count_mismatch(0.0, 0.0)
