"""The depth trainer's options (`DepthTrainConfig`), DEMO_SIZE presets and named recipes: a light module (no
torch) that the command (train/depth_command.py) and the trainer (train/depth.py) both import, so neither
imports the other (docs/design.md#command-line)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import click

from shared.config import field
from shared.presets import apply_preset
from shared.stage import StageConfig
from train.options import progress_field, stop_after_field

# The fields whose 0 / "" means "from the preset"; "" = the paper's setting (max_steps stays 0: from epochs).
# The demo sizes train with the CPU recipe.
PRESETS = {"": dict(height=192, width=640, batch_size=12),
           # 128 wide: the demo cities' 2:1 frames unstretched, two thirds of 192's pixels per step
           "small": dict(height=64, width=128, batch_size=4, max_steps=300, recipe="cpu"),
           "tiny": dict(height=64, width=128, batch_size=4, max_steps=160, recipe="cpu")}
# Named recipes: fields they change where the caller left the dataclass default. "paper" is
# Monodepth2's GPU recipe (the defaults); "cpu" leaves the far plateau in about a hundred steps
# instead of a thousand (docs/depth.md, "Why training sat on a plateau").
RECIPES: dict[str, dict] = {"paper": {}, "cpu": dict(pose_translation_scale=0.1, pose_forward_init=0.015)}


@dataclass
class DepthTrainConfig(StageConfig):
    height: int = field(0, "training height in pixels, a multiple of 32 (0 = preset: 192; small and tiny 64)",
                        bounds="[0, inf)")
    width: int = field(0, "training width in pixels, a multiple of 32 (0 = preset: 640; small and tiny 128)",
                       bounds="[0, inf)")
    batch_size: int = field(0, "target frames per step (0 = preset: 12; small and tiny 4)", bounds="[0, inf)")
    epochs: int = field(20, "passes over the training targets (Monodepth2: 20)", bounds="[1, inf)")
    max_steps: int = field(0, "stop after this many steps instead (0 = preset: from epochs; small 300, tiny 160)",
                           bounds="[0, inf)")
    recipe: str = field("", "named recipe filling the options left at their defaults: paper (Monodepth2, GPU) or "
                            "cpu (leaves the far plateau early; docs/depth.md) (empty = preset: paper; small, tiny cpu)",
                        choices=["", *RECIPES])
    lr: float = field(1e-4, "Adam learning rate", bounds="[0, inf)")
    lr_decay_epochs: int = field(15, "multiply the learning rate by --lr-decay after this many of --epochs (the same fraction of --max-steps)",
                                 bounds="[0, inf)")
    lr_decay: float = field(0.1, "step-decay factor", bounds="(0, 1]")
    min_depth: float = field(0.1, "depth range of the sigmoid disparity: nearest", bounds="(0, inf)")
    max_depth: float = field(100.0, "depth range of the sigmoid disparity: farthest", bounds="(0, inf)")
    ssim_weight: float = field(0.85, "photometric error = w * SSIM dissimilarity + (1 - w) * L1", bounds="[0, 1]")
    smoothness: float = field(1e-3, "edge-aware smoothness weight (divided by 2^scale)", bounds="[0, inf)")
    pose_translation_scale: float = field(0.01, "factor on the pose network's translation output (Monodepth2 0.01); with "
                                                "the initial disparity it sets how far away the scene starts",
                                          bounds="(0, inf)")
    pose_forward_init: float = field(0.0, "forward translation per frame the pose network starts out predicting (network "
                                          "units; 0 = Monodepth2's zero-mean init)", bounds="[0, inf)")
    automask: bool = field(True, "auto-mask pixels where an unwarped neighbour already matches")
    min_reprojection: bool = field(True, "per-pixel minimum over the two neighbours (else their mean)")
    color_aug: float = field(0.5, "probability of colour jitter (brightness/contrast/saturation 0.2, hue 0.1) on network inputs",
                             bounds="[0, 1]")
    flip: float = field(0.5, "probability of a horizontal flip of a whole triplet", bounds="[0, 1]")
    split: str = field("train", "frames of this split are training targets")
    on_bad: str = field("skip", "bad frames (unreadable or truncated image, short sequence, missing neighbour, size "
                                "mismatch): skip and list them, or stop before training", choices=["error", "skip"],
                        hash=False)
    init_weights: str = field("", "local torchvision-format ResNet-18 state dict for both encoders (default: random init)")
    seed: int = field(0, "random seed (data order, augmentation, initialisation)", bounds="[0, inf)")
    device: str = field("auto", "auto = cuda when available", choices=["auto", "cpu", "cuda"], hash=False)
    # aliases: the other trainers' names for the same settings; the fields keep their names, so saved
    # configs and run keys (bf16 is hashed) stay valid
    bf16: bool = field(True, "bf16 autocast on CUDA (ignored on CPU)", aliases=("amp",))
    channels_last: bool = field(True, "channels_last memory format on CUDA", hash=False)
    compile: bool = field(False, "torch.compile the networks (CUDA; slower start, faster steps)", hash=False)
    workers: int = field(2, "processes decoding frames into the cache", hash=False, bounds="[1, inf)")
    log_every: int = field(10, "steps between log lines", hash=False, bounds="[1, inf)")
    image_every: int = field(250, "steps between PNG snapshots (0 = only at the end)", hash=False, bounds="[0, inf)")
    ckpt_every: int = field(250, "steps between checkpoints", hash=False, bounds="[1, inf)",
                            aliases=("checkpoint_every",))
    ckpt_minutes: float = field(10.0, "also save when this many minutes passed since the last save (0 = steps only)",
                                hash=False, bounds="[0, inf)", aliases=("checkpoint_minutes",))
    stop_after: int = stop_after_field()
    progress: bool = progress_field()


def resolved(cfg: DepthTrainConfig) -> DepthTrainConfig:
    """Fill the preset-dependent fields (0 = preset) and validate."""
    cfg = apply_preset(cfg, PRESETS, explicit=())  # a field the caller set (non-zero) is kept
    cfg = dataclasses.replace(cfg, recipe=cfg.recipe or "paper")
    # the recipe as a one-entry preset table: it fills only the fields still at their defaults
    cfg = apply_preset(cfg, {cfg.demo_size: RECIPES[cfg.recipe]}, explicit=())
    if cfg.height % 32 or cfg.width % 32 or min(cfg.height, cfg.width) < 64:
        # stride 32 and the decoder's reflection padding need at least 2x2 coarsest features
        raise click.UsageError(f"--height/--width must be multiples of 32 and at least 64, got {cfg.height}x{cfg.width}")
    if not 0 < cfg.min_depth < cfg.max_depth:
        raise click.UsageError(f"need 0 < min_depth < max_depth, got {cfg.min_depth}, {cfg.max_depth}")
    return cfg
