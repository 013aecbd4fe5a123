"""`python -m evaluate finetune-eval`: the click command of the fine-tuning evaluation. Its options are
evaluate/finetune_config.py; the scoring (evaluate/finetune.py), and with it torch, is imported only when
the command runs."""
from __future__ import annotations

from typing import Any

import click

from shared.config import build_config, config_options
from shared.frames import DataError
from evaluate.finetune_config import FinetuneEvalConfig


@click.command("finetune-eval", context_settings={"show_default": True})
@config_options(FinetuneEvalConfig)
def finetune_eval(**kwargs: Any) -> None:
    """Score fine-tuning runs on their val frames (mIoU / mask and box AP), reports with overlays, and one
    comparison table for several runs."""
    from evaluate.finetune import evaluate_finetune  # torch only now

    cfg = build_config(FinetuneEvalConfig, kwargs)
    try:
        evaluate_finetune(cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from e
