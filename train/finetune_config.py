"""The fine-tuner's options (`FinetuneConfig`), DEMO_SIZE presets and task defaults: a light module (no
torch) that the command (train/finetune_command.py) and the trainer (train/finetune.py) both import, so
neither imports the other."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import field
from shared.stage import StageConfig
from train.options import (amp_field, checkpoint_every_field, checkpoint_minutes_field, device_field, progress_field,
                           stop_after_field)


@dataclass
class FinetuneConfig(StageConfig):
    task: str = field("semantic", "semantic: semantic FPN, mIoU; instance: Mask R-CNN, mask/box AP",
                      choices=["semantic", "instance"])
    init: str = field("pretrained", "pretrained = the `make train` model of this DATASET/DEMO_SIZE (KITTI "
                                    "semantics: of DATASET=kitti); scratch; or a path: a `make train` checkpoint "
                                    "(backbone, FPN, head) or a torchvision ResNet file (backbone only)")
    run: str = field("", "run folder name under finetune/ (empty: <task>-<init>-<config hash>)", hash=False)
    backbone: str = field("resnet50", "ResNet of the network; a checkpoint init must have the same "
                                      "(resnet18: tests and demos)", choices=["resnet50", "resnet18"])
    label_fraction: str = field("1", "labelled training frames used: a fraction (1/16, 0.25; 1 = all) or a "
                                     "count (>= 2), a seeded subset of the train pool, disjoint from val")
    subset_seed: int = field(0, "seed of the label subset and of the folds (kept fixed across --repeats, so "
                                "repeats differ only in initialisation and augmentation)", bounds="[0, inf)")
    folds: int = field(0, "K >= 2: K-fold cross-validation over all labelled frames, mean and std over folds "
                          "(KITTI: 5); 0: train on the train split, score the val split", bounds="[0, inf)")
    repeats: int = field(1, "networks per fold, seeds seed..seed+repeats-1 (the paper averages 3)", bounds="[1, inf)")
    seed: int = field(0, "seed of the first repeat (initialisation of new layers, augmentation, order)", bounds="[0, inf)")
    iterations: int = field(0, "optimiser steps per network (0: 30k for Cityscapes, 6k otherwise, as the paper)", bounds="[0, inf)")
    batch_size: int = field(16, "images per step (the paper's 16; memory grows with it and the crop)", bounds="[1, inf)")
    lr: float = field(0.01, "learning rate of pre-trained parameters (what --init loaded); instance task "
                            "default 0.02 (detectron2's Mask R-CNN rate at batch 16)", bounds="(0, 10]")
    new_lr: float = field(0.1, "learning rate of new parameters (classifier; everything under scratch); the "
                               "paper's range is 0.03-0.1; instance task default 0.02", bounds="(0, 10]")
    final_lr: float = field(1e-5, "learning rate at the end of the cosine decay", bounds="[0, inf)")
    warmup_steps: int = field(-1, "linear warm-up steps before the cosine (-1: min(1000, a tenth of the run), "
                                  "detectron2's 1000 on full runs; 0: none). New layers at 0.1 diverge without it", bounds="[-1, inf)")
    grad_clip: float = field(0.0, "clip the gradient norm to this (0: off; instance task default 10, Mask R-CNN "
                                  "trained from scratch spikes early)", bounds="[0, inf)")
    momentum: float = field(0.9, "SGD momentum", bounds="[0, 1)")
    weight_decay: float = field(1e-4, "SGD weight decay", bounds="[0, 1)")
    scale_range: tuple[float, ...] = field((0.5, 2.0), "random scale min,max of the (working-size) image", bounds="(0, 8]", n=2, ordered=True)
    crop_height: int = field(512, "training crop height (multiple of 32; padded with ignore when larger)", bounds="[32, inf)")
    crop_width: int = field(1024, "training crop width (multiple of 32)", bounds="[32, inf)")
    image_width: int = field(0, "read frames wider than this at this width, for training and scoring input "
                                "(0: native; labels are always scored at their own resolution)", bounds="[0, inf)")
    colour_jitter: float = field(0.4, "colour jitter strength: brightness, contrast, saturation +-this, hue "
                                      "+-this/4, on 80% of the images (0: none)", bounds="[0, 1]")
    workers: int = field(4, "DataLoader worker processes (0: load in the main process)", hash=False, bounds="[0, inf)")
    device: str = device_field()
    amp: bool = amp_field()
    compile: bool = field(False, "torch.compile the semantic network (CUDA; first steps are slow)", hash=False)
    checkpoint_every: int = checkpoint_every_field()
    checkpoint_minutes: float = checkpoint_minutes_field()
    log_every: int = field(20, "steps between log lines (the only host sync; non-finite check)", hash=False, bounds="[1, inf)")
    stop_after: int = stop_after_field()
    progress: bool = progress_field()


DEFAULT_ITERATIONS = {"cityscapes": 30000}  # the paper: Cityscapes 30k, KITTI and ablations 6k
OTHER_ITERATIONS = 6000
# The pre-training dataset whose `make train` model `--init pretrained` means, where it differs.
PRETRAIN_DATASET = {"kitti-semantic": "kitti"}
# Defaults that differ by task, filled (like presets) only where the user typed nothing.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {"instance": dict(lr=0.02, new_lr=0.02, grad_clip=10.0)}
PRESETS: dict[str, dict[str, Any]] = {
    # new_lr 0.01: at 0.1 six steps of batch 2 blew the loss up (2.8 -> 24 at step 2; with a 2-step warm-up
    # 2.8 -> 8.1 -> 20.5), at 0.01 it stays within 2.2-3.2; the warm-up: the automatic one (a tenth of
    # the run) is no step at all in 6
    "tiny": dict(backbone="resnet18", iterations=6, batch_size=2, crop_height=64, crop_width=128, image_width=256,
                 log_every=1, checkpoint_every=3, workers=0, warmup_steps=2, new_lr=0.01),
    "small": dict(backbone="resnet18", iterations=80, batch_size=4, crop_height=128, crop_width=256,
                  image_width=512, log_every=5, checkpoint_every=20, workers=1),
}
