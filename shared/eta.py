"""What a long stage says about its own duration: one estimate, printed once, after its first items.

An upfront estimate needs a rate nobody knows before the run (it depends on the machine, the load,
the image size), so a stage measures it: the clock starts when the first item is back (the first one
pays the start-up: imports, numba compiles, worker processes) and, once `after` more items are back,
one line says the rate and the time left, in the wording of the depth trainer:

    regions: 0.84 s/frame over the first 3 frames: about 2.1 min for the remaining 150
"""
from __future__ import annotations

import time
from typing import Callable


def duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def eta_line(stage: str, seconds: float, done: int, left: int, unit: str) -> str:
    per = seconds / max(done, 1)
    return (f"{stage}: {per:.2f} s/{unit} over the first {done} {unit}s: about {duration(per * left)} "
            f"for the remaining {left}")


class Eta:
    """Call `update(n)` as items finish; prints the estimate once (nothing when the run is shorter)."""

    def __init__(self, stage: str, total: int, unit: str, echo: Callable[[str], None], after: int = 3,
                 clock: Callable[[], float] = time.perf_counter):
        self.stage, self.total, self.unit, self.echo, self.after, self.clock = stage, total, unit, echo, after, clock
        self.done = 0
        self.t_first: float | None = None
        self.first = 0  # items back when the clock started
        self.said = False

    def done_before(self, n: int) -> None:
        """`n` of the items were done by an earlier run (a resumed network): they take no time now."""
        self.total -= n

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.t_first is None:
            self.t_first, self.first = self.clock(), self.done
            return
        measured = self.done - self.first
        if not self.said and measured >= self.after and self.done < self.total:
            self.said = True
            self.echo(eta_line(self.stage, self.clock() - self.t_first, measured, self.total - self.done, self.unit))


# A step of more images x pixels than this is a GPU recipe: on a CPU it takes tens of seconds and
# several GB (the depth trainer's 640x192 x 6 measured 32-57 s per step on 2 cores).
GPU_SIZED_PIXELS_PER_STEP = 640 * 192 * 6


def gpu_recipe_warning(stage: str, device_type: str, pixels_per_step: int, what: str, cpu_recipe: str) -> str | None:
    """One line when a GPU-sized step runs on a CPU, naming the CPU recipe; None otherwise."""
    if device_type != "cpu" or pixels_per_step <= GPU_SIZED_PIXELS_PER_STEP:
        return None
    return (f"{stage}: warning: {what} is a GPU recipe and no GPU is in use: expect tens of seconds and several GB "
            f"per step. CPU recipe: {cpu_recipe}")
