"""`python -m train <command>`: the training stages."""
from __future__ import annotations

import click

from shared.cli import LazyGroup

COMMANDS: dict[str, str] = {
    "depth": "train.depth:depth",
    "contrastive": "train.contrastive:contrastive",
    "finetune": "train.finetune:finetune_command",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
def main() -> None:
    """Training stages: self-supervised depth, dense SwAV pre-training."""


if __name__ == "__main__":
    main()
