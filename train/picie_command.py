"""`python -m train picie`: the click command of the PiCIE trainer. Its options are train/picie_config.py;
the trainer (train/picie.py), and with it torch, is imported only when the command runs."""
from __future__ import annotations

from typing import Any

import click

from shared.config import build_config, config_options
from shared.frames import DataError
from shared.presets import apply_preset, explicit_options
from train.picie_config import PRESETS, PicieConfig


@click.command("picie")
@config_options(PicieConfig)
def picie(**kwargs: Any) -> None:
    """PiCIE (Cho et al., CVPR 2021) on the same frames and network as our pre-training (resumes automatically)."""
    from train.loop import NonFiniteLoss
    from train.picie import train  # the trainer, and with it torch, only now

    cfg = apply_preset(build_config(PicieConfig, kwargs), PRESETS, explicit_options(), click.echo, "picie")
    try:
        train(cfg)
    except (NonFiniteLoss, DataError, ValueError) as e:
        raise click.ClickException(str(e)) from e
