"""`python -m preprocess <command>`: the offline CPU stages."""
from __future__ import annotations

import click

from shared.cli import LazyGroup

# command name -> "module:click command"; each stage module owns its command.
COMMANDS = {
    "synth": "preprocess.synth:synth",
    "index": "preprocess.index:index",
    "depth-infer": "preprocess.depth_inference:depth",
    "regions": "preprocess.regions:regions",
    "shards": "preprocess.shards:shards",
    "inspect": "preprocess.shard_inspect:inspect",
}
ALIASES = {"depth": "depth-infer"}  # the old name, kept for existing scripts


@click.group(cls=LazyGroup, lazy=COMMANDS, aliases=ALIASES)
def main() -> None:
    """Offline CPU stages: synthetic city, frame index, depth inference, regions, shards."""


if __name__ == "__main__":
    main()
