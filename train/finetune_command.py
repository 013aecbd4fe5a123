"""`python -m train finetune`: the click command of the fine-tuner. Its options are
train/finetune_config.py; the trainer (train/finetune.py), and with it torch, is imported only when the
command runs."""
from __future__ import annotations

import dataclasses
from typing import Any

import click

from shared.config import build_config, config_options
from shared.frames import DataError
from shared.presets import apply_preset, explicit_options
from train.finetune_config import PRESETS, TASK_DEFAULTS, FinetuneConfig


@click.command("finetune")
@config_options(FinetuneConfig)
def finetune_command(**kwargs: Any) -> None:
    """Fine-tune a semantic FPN or Mask R-CNN on a fraction of the labels (resumes automatically)."""
    from train.finetune import finetune  # the trainer, and with it torch, only now
    from train.loop import NonFiniteLoss

    cfg = build_config(FinetuneConfig, kwargs)
    explicit = explicit_options()
    cfg = apply_preset(cfg, PRESETS, explicit, click.echo, "finetune")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in TASK_DEFAULTS.get(cfg.task, {}).items() if k not in explicit})
    if "warmup_steps" not in explicit and cfg.iterations and cfg.warmup_steps >= cfg.iterations:
        # a preset's warm-up is sized for the preset's run; a shorter --iterations keeps a cosine step
        cfg = dataclasses.replace(cfg, warmup_steps=cfg.iterations - 1)
    try:
        finetune(cfg)
    except (NonFiniteLoss, DataError) as e:
        raise click.ClickException(str(e)) from e
