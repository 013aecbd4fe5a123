"""`python -m evaluate <command>`: metrics and reports."""
from __future__ import annotations

import click

from shared.cli import LazyGroup

COMMANDS: dict[str, str] = {
    "depth-eval": "evaluate.depth_metrics:depth",
    "unsupervised": "evaluate.unsupervised:unsupervised",
    "proposals": "evaluate.proposals:proposals",
    "ablate": "evaluate.ablate:ablate",
    "proposals-sweep": "evaluate.proposal_sweep:proposals_sweep",
    "report": "evaluate.report:report",
    "finetune-eval": "evaluate.finetune_command:finetune_eval",
}
ALIASES = {"depth": "depth-eval"}  # the old name, kept for existing scripts


@click.group(cls=LazyGroup, lazy=COMMANDS, aliases=ALIASES)
def main() -> None:
    """Metrics and reports: region proposals, depth, unsupervised segmentation."""


if __name__ == "__main__":
    main()
