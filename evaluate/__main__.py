"""`python -m evaluate <command>`: metrics and reports."""
from __future__ import annotations

import click

from shared.cli import LazyGroup

COMMANDS: dict[str, str] = {
    "depth": "evaluate.depth_metrics:depth",
    "unsupervised": "evaluate.unsupervised:unsupervised",
    "proposals": "evaluate.proposals:proposals",
    "finetune": "evaluate.finetune:finetune_eval",
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
def main() -> None:
    """Metrics and reports: region proposals, depth, unsupervised segmentation."""


if __name__ == "__main__":
    main()
