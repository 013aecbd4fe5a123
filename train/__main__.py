"""`python -m train <command>`: the training stages."""
from __future__ import annotations

import click

from shared.cli import LazyGroup

COMMANDS: dict[str, str] = {
    "depth-train": "train.depth_command:depth",
    "contrastive": "train.contrastive_command:contrastive",
    "picie": "train.picie_command:picie",
    "finetune": "train.finetune_command:finetune_command",
}
ALIASES = {"depth": "depth-train"}  # the old name, kept for existing scripts


@click.group(cls=LazyGroup, lazy=COMMANDS, aliases=ALIASES)
def main() -> None:
    """Training stages: self-supervised depth, dense SwAV pre-training."""


if __name__ == "__main__":
    main()
