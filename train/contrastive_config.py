"""The dense SwAV trainer's options (`ContrastiveConfig`) and DEMO_SIZE presets: a light module (no
torch) that the command (train/contrastive_command.py) and the trainer (train/contrastive.py) both
import, so neither imports the other (docs/design.md#command-line)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection

import click

from shared.config import build_config, field
from shared.presets import apply_preset
from shared.stage import StageConfig
from train.options import (amp_field, checkpoint_every_field, checkpoint_minutes_field, device_field, progress_field,
                           stop_after_field)


@dataclass
class ContrastiveConfig(StageConfig):
    shards: str = field("auto", "shard set folder, http(s) URL or 'pipe:CMD {name}'; auto = the one `make shards` "
                                "recorded for DATASET/DEMO_SIZE")
    proposals: str = field("depth", "region proposals whose shard set `--shards auto` picks")
    run: str = field("", "run folder name under train/ (empty: the config hash)", hash=False)
    backbone: str = field("resnet50", "ResNet of the network (resnet18: tests and demos only)",
                          choices=["resnet50", "resnet18"])
    init_weights: str = field("", "torchvision-format ResNet checkpoint for the backbone (empty: random init)")
    num_prototypes: int = field(1000, "K, the number of prototypes", bounds="[1, inf)")
    temperature: float = field(0.1, "tau of softmax(z.c / tau)", bounds="(0, inf)")
    sinkhorn_epsilon: float = field(0.05, "Sinkhorn-Knopp entropy weight", bounds="(0, inf)")
    sinkhorn_iterations: int = field(3, "Sinkhorn-Knopp iterations", bounds="[1, inf)")
    lam: float = field(0.5, "lambda: L = lambda L_pixel + (1 - lambda) L_region", bounds="[0, 1]")
    features_per_step: int = field(288000, "features sampled per step at 384x768 x 16 images (scaled with size)",
                                   bounds="[1, inf)")
    pixel_cell: int = field(4, "source-frame cell (pixels) that a pixel-level positive must share", bounds="[1, inf)")
    groups_per_step: int = field(1, "copy-paste groups per step (one group = 2M = 16 images)", bounds="[1, inf)")
    crop_height: int = field(0, "training crop height (0: the shard height, rounded down to a multiple of 32)",
                             bounds="[0, inf)")
    crop_width: int = field(0, "training crop width (0: the shard width, rounded down to a multiple of 32)",
                            bounds="[0, inf)")
    crop_scale: tuple[float, ...] = field((0.5, 1.0), "random resized crop: min,max share of the image area",
                                          bounds="(0, 1]", n=2, ordered=True)
    photometric: str = field("auto", "where colour jitter + blur run: auto (GPU when training on CUDA, else the "
                                     "loader workers) | device | worker", choices=["auto", "device", "worker"],
                             hash=False)
    epochs: int = field(20, "passes over the shard set", bounds="[1, inf)")
    max_steps: int = field(0, "stop the schedule after this many steps (0: epochs decide)", bounds="[0, inf)")
    lr: float = field(0.1, "peak learning rate (after warm-up)", bounds="[0, inf)")
    final_lr: float = field(1e-5, "learning rate at the end of the cosine decay", bounds="[0, inf)")
    warmup_epochs: float = field(2.0, "linear warm-up length in epochs", bounds="[0, inf)")
    momentum: float = field(0.9, "SGD momentum", bounds="[0, 1)")
    weight_decay: float = field(1e-4, "SGD weight decay", bounds="[0, inf)")
    seed: int = field(0, "seed of initialisation, shuffling, augmentation and sampling", bounds="[0, inf)")
    workers: int = field(4, "DataLoader worker processes per GPU (0: load in the main process)",
                         hash=False, bounds="[0, inf)")
    shuffle_buffer: int = field(64, "groups held in each worker's shuffle buffer", hash=False, bounds="[0, inf)")
    device: str = device_field()
    amp: bool = amp_field()
    compile: bool = field(False, "torch.compile the network (CUDA; first steps are slow)", hash=False)
    checkpoint_every: int = checkpoint_every_field()
    checkpoint_minutes: float = checkpoint_minutes_field()
    log_every: int = field(10, "steps between log lines (and non-finite checks)", hash=False, bounds="[1, inf)")
    stop_after: int = stop_after_field()
    tensorboard: bool = field(False, "also write TensorBoard scalars (needs the tensorboard package)", hash=False)
    progress: bool = progress_field()


# DEMO_SIZE presets: fill the options the user did not set (shared.presets).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(backbone="resnet18", epochs=2, max_steps=6, warmup_epochs=0.5, checkpoint_every=3, log_every=1,
                 num_prototypes=100, workers=1),
    # 64 steps of 16 crops at 96x192 (a quarter of the frame's pixels: four times the images for the CPU
    # time) over the 16 groups of the small shard set: 1-2 minutes per seed on 2 cores.
    "small": dict(backbone="resnet18", epochs=4, max_steps=64, warmup_epochs=0.4, checkpoint_every=16, log_every=4,
                  num_prototypes=300, workers=2, crop_height=96, crop_width=192),
}


def resolve_config(kwargs: dict[str, Any], explicit: Collection[str], echo=click.echo) -> ContrastiveConfig:
    """The config of the parsed options `kwargs`, with the DEMO_SIZE preset filled in where the option
    is not in `explicit` (the ones the user typed: shared.presets.explicit_options)."""
    return apply_preset(build_config(ContrastiveConfig, kwargs), PRESETS, explicit, echo, "contrastive")
