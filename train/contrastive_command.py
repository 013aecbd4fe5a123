"""`python -m train contrastive`: the click command of the dense SwAV trainer. Its options are
train/contrastive_config.py; the trainer (train/contrastive.py), and with it torch, is imported only when
the command runs, so `--help` stays light."""
from __future__ import annotations

from typing import Any

import click

from shared.config import config_options
from shared.frames import DataError
from shared.presets import explicit_options
from train.contrastive_config import ContrastiveConfig, resolve_config


@click.command("contrastive")
@config_options(ContrastiveConfig)
def contrastive(**kwargs: Any) -> None:
    """Dense SwAV pre-training from a copy-paste shard set (resumes automatically)."""
    from train.contrastive import train  # the trainer, and with it torch, only now
    from train.loop import NonFiniteLoss

    cfg = resolve_config(kwargs, explicit_options())
    try:
        train(cfg)
    except (NonFiniteLoss, DataError) as e:
        raise click.ClickException(str(e)) from e
