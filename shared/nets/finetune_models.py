"""The fine-tuning networks and how they take their initial weights (docs/design.md#constants, "fine-tuning").

    SemanticFPN   the pre-training network's ResNet + FPN + Panoptic-FPN semantic head (GroupNorm,
                  stride 4) with a new 1x1 classifier; logits upsampled 4x to the input size.
    Mask R-CNN    torchvision's (ResNet-50 FPN; ResNet-18 FPN for tests), whose backbone body and FPN
                  are the same torchvision modules as ours, so they load key for key.

Initialisations (`init_kind`):
    scratch      nothing is loaded
    checkpoint   a `make train` checkpoint: backbone, FPN and (semantic task) head as pre-trained
    torchvision  a torchvision-format ResNet state dict: the backbone only

`load_init` returns the names of the parameters it loaded: the trainer gives those the pre-trained
learning rate and every other parameter the new-layer rate. Used by train/finetune.py (training) and
evaluate/finetune.py (rebuilding a fine-tuned checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork

from shared.frames import DataError
from shared.nets.semantic_fpn import ARCHS, MEAN, STD, DenseSwAVNet, SemanticFPNHead

TASKS = ("semantic", "instance")
# Modules of the pre-training network a checkpoint initialises, per task (prefixes of state-dict keys).
PRETRAINED_MODULES = {"semantic": ("backbone.", "fpn.", "head."), "instance": ("backbone.", "fpn.")}


class SemanticFPN(nn.Module):
    """forward(x float [B, 3, H, W], ImageNet-normalised) -> logits float [B, n_classes, H, W].

    Module names match DenseSwAVNet (backbone, fpn, head), so a pre-training checkpoint loads key for key."""

    def __init__(self, n_classes: int, arch: str = "resnet50", fpn_channels: int = 256, head_channels: int = 128):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHS)}")
        self.arch = arch
        self.backbone = getattr(torchvision.models, arch)(weights=None)
        self.backbone.fc = nn.Identity()
        self.fpn = FeaturePyramidNetwork(list(ARCHS[arch]), fpn_channels)
        self.head = SemanticFPNHead(fpn_channels, head_channels)
        self.classifier = nn.Conv2d(head_channels, n_classes, 1)
        for m in self.head.modules():  # the same initialisation as the pre-training network's new layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    # The same ResNet C2..C5 -> FPN path as pre-training: it reads only self.backbone and self.fpn.
    pyramid = DenseSwAVNet.pyramid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.head(self.pyramid(x)))  # [B, C, H/4, W/4]
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _NoResize(GeneralizedRCNNTransform):
    """Mask R-CNN's input transform without its resize to an 800-pixel short side: our data pipeline
    does the scale augmentation, and evaluation runs at the label resolution."""

    def resize(self, image, target=None):
        return image, target


def build_mask_rcnn(n_classes: int, arch: str = "resnet50") -> nn.Module:
    """torchvision Mask R-CNN with a random backbone (no weights are downloaded). n_classes counts
    the background, so Cityscapes' 8 instance classes give 9. Batch norm trains (no frozen statistics)."""
    if arch == "resnet50":
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=n_classes)
    elif arch in ARCHS:  # smaller ResNets: the same body + FPN through resnet_fpn_backbone (tests)
        model = MaskRCNN(resnet_fpn_backbone(backbone_name=arch, weights=None, trainable_layers=5,
                                             norm_layer=nn.BatchNorm2d),
                         num_classes=n_classes)
    else:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHS)}")
    t = model.transform
    model.transform = _NoResize(t.min_size, t.max_size, list(MEAN), list(STD), size_divisible=32)
    return model


def build_model(task: str, arch: str, n_classes: int) -> nn.Module:
    if task == "semantic":
        return SemanticFPN(n_classes, arch)
    if task == "instance":
        return build_mask_rcnn(n_classes, arch)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def _target_prefixes(task: str) -> dict[str, str]:
    """Prefix of a pre-training module -> prefix of the same module in the fine-tuning network."""
    if task == "semantic":
        return {p: p for p in PRETRAINED_MODULES["semantic"]}
    return {"backbone.": "backbone.body.", "fpn.": "backbone.fpn."}


def init_kind(path: str | os.PathLike) -> str:
    """"checkpoint" (a `make train` checkpoint) or "torchvision" (a ResNet state dict) for a file."""
    sd = _load(path)
    return "checkpoint" if isinstance(sd.get("model"), dict) and any(
        k.startswith("fpn.") for k in sd["model"]) else "torchvision"


def _load(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "initialisation file not found")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(p, f"not a torch checkpoint ({e!r})") from e
    if not isinstance(sd, dict):
        raise DataError(p, "expected a state dict or a training checkpoint")
    return sd


def checkpoint_arch(path: str | os.PathLike) -> str:
    """The backbone of a `make train` checkpoint (its net_args, else its config)."""
    sd = _load(path)
    args = sd.get("net_args") or {}
    return str(args.get("arch") or (sd.get("config") or {}).get("backbone") or "resnet50")


def load_init(model: nn.Module, task: str, arch: str, path: str | os.PathLike) -> list[str]:
    """Load the pre-trained part of `model` from `path` (either kind); returns the parameter names it set.

    Every expected key must be present with the expected shape: a silent partial load would make a
    "pre-trained" run a scratch run. Errors name the file."""
    sd, kind = _load(path), init_kind(path)
    if kind == "checkpoint":
        src = sd["model"]
        prefixes = _target_prefixes(task)
    else:
        for k in ("state_dict", "model", "backbone"):
            if isinstance(sd.get(k), dict):
                sd = sd[k]
        src = {"backbone." + k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
        src = {k: v for k, v in src.items() if not k.startswith("backbone.fc.")}
        prefixes = {"backbone.": _target_prefixes(task)["backbone."]}
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        for a, b in prefixes.items():
            if key.startswith(a):
                mapped[b + key[len(a):]] = value
    expected = {k for k in own if any(k.startswith(b) for b in prefixes.values()) and not k.startswith("backbone.fc.")}
    missing, extra = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    wrong = sorted(k for k in expected & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or extra or wrong:
        raise DataError(path, f"does not fit a {arch} {task} network ({kind}): missing {missing[:4]}, "
                              f"unexpected {extra[:4]}, wrong shape {wrong[:4]}")
    model.load_state_dict(mapped, strict=False)
    params = {n for n, _ in model.named_parameters()}
    return sorted(k for k in mapped if k in params)
