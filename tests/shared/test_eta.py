"""The one time estimate a long stage prints after its first items (shared/eta.py)."""
from __future__ import annotations

from shared.eta import Eta, duration, eta_line


def test_estimate_is_timed_from_the_first_item_and_said_once():
    now = [100.0]
    lines: list[str] = []
    eta = Eta("regions", total=10, unit="frame", echo=lines.append, after=3, clock=lambda: now[0])
    eta.update(1)  # the first frame pays the start-up: it starts the clock, it is not measured
    for _ in range(3):
        now[0] += 2.0
        eta.update(1)
    # 3 frames in 6 s after the first: 2 s/frame, 6 frames left -> 12 s
    assert lines == ["regions: 2.00 s/frame over the first 3 frames: about 12 s for the remaining 6"]
    for _ in range(6):
        now[0] += 2.0
        eta.update(1)
    assert len(lines) == 1


def test_no_estimate_for_a_run_that_ends_first_and_chunks_count_their_items():
    lines: list[str] = []
    eta = Eta("shards", total=4, unit="group", echo=lines.append, after=3, clock=lambda: 0.0)
    for _ in range(4):
        eta.update(1)
    assert lines == []
    eta = Eta("proposals", total=20, unit="frame", echo=lines.append, after=3, clock=iter([0.0, 8.0]).__next__)
    eta.update(4)
    eta.update(4)  # 4 frames measured in 8 s: 2 s/frame, 12 left
    assert lines == ["proposals: 2.00 s/frame over the first 4 frames: about 24 s for the remaining 12"]


def test_duration_words():
    assert [duration(s) for s in (42, 210, 3 * 3600)] == ["42 s", "3.5 min", "3.0 h"]
    assert eta_line("x", 1.0, 0, 5, "step").startswith("x: 1.00 s/step over the first 0 steps")


def test_items_done_by_an_earlier_run_are_not_left():
    lines: list[str] = []
    eta = Eta("finetune", total=20, unit="step", echo=lines.append, after=2, clock=iter([0.0, 2.0]).__next__)
    eta.done_before(10)  # a resumed network
    for _ in range(3):
        eta.update(1)
    assert lines == ["finetune: 1.00 s/step over the first 2 steps: about 7 s for the remaining 7"]


def test_a_gpu_sized_step_on_a_cpu_warns_and_names_the_cpu_recipe():
    from shared.eta import GPU_SIZED_PIXELS_PER_STEP, gpu_recipe_warning

    big = GPU_SIZED_PIXELS_PER_STEP + 1
    line = gpu_recipe_warning("train", "cpu", big, "16 crops of 384x768", "make train DEMO_SIZE=small")
    assert line is not None and line.startswith("train: warning: 16 crops of 384x768 is a GPU recipe")
    assert line.endswith("CPU recipe: make train DEMO_SIZE=small")
    assert gpu_recipe_warning("train", "cuda", big, "x", "y") is None  # a GPU is in use
    assert gpu_recipe_warning("train", "cpu", GPU_SIZED_PIXELS_PER_STEP, "x", "y") is None  # CPU-sized
