"""`python -m evaluate finetune-eval`: the fine-tuning evaluation's options and click command; the scoring
is evaluate/finetune.py, imported when the command runs (`--help` stays free of torch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from shared.config import build_config, config_options, field
from shared.frames import DataError
from shared.stage import StageConfig


@dataclass
class FinetuneEvalConfig(StageConfig):
    runs: str = field("auto", "fine-tuning run folders, comma-separated (auto: the last `python -m train finetune` "
                              "run of --task for this DATASET/DEMO_SIZE); several also get one comparison table")
    task: str = field("semantic", "which run `--runs auto` picks", choices=["semantic", "instance"])
    pictures: int = field(3, "val frames drawn with prediction overlays (first network of each run)", hash=False, bounds="[0, inf)")
    score_threshold: float = field(0.5, "instance overlays: detections drawn above this score", hash=False, bounds="[0, 1]")
    device: str = field("auto", "auto = cuda when available", choices=["auto", "cpu", "cuda"], hash=False)


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
