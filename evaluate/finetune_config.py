"""The fine-tuning evaluation's options (`FinetuneEvalConfig`): a light module (no torch) that the command
(evaluate/finetune_command.py) and the scoring (evaluate/finetune.py) both import."""
from __future__ import annotations

from dataclasses import dataclass
from shared.config import field
from shared.stage import StageConfig


@dataclass
class FinetuneEvalConfig(StageConfig):
    runs: str = field("auto", "fine-tuning run folders, comma-separated (auto: the last `python -m train finetune` "
                              "run of --task for this DATASET/DEMO_SIZE); several also get one comparison table")
    task: str = field("semantic", "which run `--runs auto` picks", choices=["semantic", "instance"])
    pictures: int = field(3, "val frames drawn with prediction overlays (first network of each run)", hash=False, bounds="[0, inf)")
    score_threshold: float = field(0.5, "instance overlays: detections drawn above this score", hash=False, bounds="[0, 1]")
    device: str = field("auto", "auto = cuda when available", choices=["auto", "cpu", "cuda"], hash=False)
