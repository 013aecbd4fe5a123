"""Which device a stage runs on: one rule for the trainers and the evaluators, so `--device` means the
same everywhere."""
from __future__ import annotations

import click
import torch


def pick_device(name: str) -> torch.device:
    """auto -> the GPU when there is one, else the CPU; cpu | cuda | cuda:N as named. Asking for a GPU on a
    machine without one is a usage error (not a silent CPU run that takes a hundred times longer)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.UsageError(f"--device {name} but no CUDA device is available")
    return torch.device(name)
