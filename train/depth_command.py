"""`python -m train depth-train`: the click command of the depth trainer. Its options are
train/depth_config.py; the trainer (train/depth.py), and with it torch, is imported only when the
command runs, so `--help` stays light (docs/design.md#command-line)."""
from __future__ import annotations

import click

from shared.config import build_config, config_options
from shared.frames import DataError
from train.depth_config import DepthTrainConfig


@click.command("depth")
@config_options(DepthTrainConfig)
def depth(**kwargs) -> None:
    """Train the self-supervised monocular depth network on DATASET's videos (resumes automatically)."""
    from train.depth import train  # the trainer, and with it torch, only now
    from train.loop import NonFiniteLoss

    cfg = build_config(DepthTrainConfig, kwargs)
    try:
        train(cfg)
    except (NonFiniteLoss, DataError) as e:
        raise click.ClickException(str(e)) from e
