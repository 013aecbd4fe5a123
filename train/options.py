"""The run options the network trainers share (pre-training, PiCIE, fine-tuning; the depth trainer takes
--stop-after and --progress from here and its own older fields answer to the other names): one definition
each, so their names, help and bounds cannot drift apart. Each is a field factory, used in place of
`field(...)` in a config dataclass, so every command keeps its own order of options in --help."""
from __future__ import annotations

from typing import Any

from shared.config import field


def device_field() -> Any:
    return field("auto", "auto | cpu | cuda | cuda:N", hash=False)


def amp_field() -> Any:
    return field(True, "bf16 autocast on CUDA", hash=False)


def checkpoint_every_field() -> Any:
    return field(500, "steps between checkpoints", hash=False, bounds="[1, inf)")


def checkpoint_minutes_field() -> Any:
    # a slow CPU run saves by wall time too: a kill loses at most this much work
    return field(10.0, "also save when this many minutes passed since the last save (one process; 0 = steps only)",
                 hash=False, bounds="[0, inf)")


def stop_after_field() -> Any:
    return field(0, "stop after this many steps in this invocation, checkpointed (0: run to the end)", hash=False,
                 bounds="[0, inf)")


def progress_field() -> Any:
    return field(True, "show a progress bar", hash=False)
