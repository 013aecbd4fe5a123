"""The dense SwAV network: ResNet + FPN + semantic-FPN head + projection, and its prototypes.

    image [B, 3, H, W] -> ResNet C2..C5 (strides 4..32) -> FPN P2..P5 (256 ch)
      -> semantic-FPN head: per level, (3x3 conv 128 + GroupNorm + ReLU [+ 2x upsample]) repeated
         until stride 4, then the four maps are summed (Panoptic FPN, Kirillov et al. 2019)
      -> projection: one 1x1 conv (a 1-layer MLP applied at every location) to 128-d
      -> L2-normalised over channels: z [B, 128, H/4, W/4]
    prototypes: nn.Linear(128, K, bias=False), rows re-normalised to unit length every step.

The backbone is a plain torchvision ResNet held as `self.backbone`, so its weights map 1:1 onto
`torchvision.models.resnet50()` keys (`backbone_state_dict_torchvision`) for downstream use.

Used by the trainer (train/contrastive.py) and by the evaluation stage: the public names are
`DenseSwAVNet`, `.prototypes`, `normalize_images`, `load_pretrained`, `MEAN`, `STD`.
"""
from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

# ImageNet statistics: the convention of torchvision checkpoints given with --init-weights.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

ARCHS = {"resnet50": (256, 512, 1024, 2048), "resnet18": (64, 128, 256, 512)}
OUTPUT_STRIDE = 4


@functools.lru_cache(maxsize=None)
def image_stats(device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, torch.Tensor]:
    """(MEAN, STD) as float32 [1, 3, 1, 1] on `device`, built once per process and device: a training
    loop fetches them before its first step, since a tensor made from Python numbers on a GPU is a
    blocking copy from the host."""
    return (torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(device),
            torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1).to(device))


def normalize_images(images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 [B, H, W, 3] or [B, 3, H, W] (0..255) -> float32 [B, 3, H, W], ImageNet-normalised.

    A floating-point input is taken to be already scaled to 0..1. The layout is read from which
    axis has size 3 (channels-first wins when both do). stats: image_stats() of the images' device
    (default: fetched here).
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch [B, H, W, 3] or [B, 3, H, W], got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        if images.shape[-1] != 3:
            raise ValueError(f"no RGB axis of size 3 in shape {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2)
    x = images.float()
    if not images.is_floating_point():
        x = x / 255.0
    mean, std = stats if stats is not None else image_stats(x.device)
    return (x - mean) / std


class SemanticFPNHead(nn.Module):
    """Panoptic-FPN semantic branch: every FPN level is brought to stride 4 and summed.

    Level of stride 4 * 2^k gets max(1, k) blocks of conv3x3 + GroupNorm + ReLU, each of the first
    k followed by a 2x bilinear upsample, so all levels meet at stride 4 with `channels` channels.
    """

    def __init__(self, in_channels: int = 256, channels: int = 128, n_levels: int = 4, groups: int = 32):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for k in range(n_levels):
            blocks: list[nn.Module] = []
            for j in range(max(1, k)):
                blocks += [
                    nn.Conv2d(in_channels if j == 0 else channels, channels, 3, padding=1, bias=False),
                    nn.GroupNorm(groups, channels),
                    nn.ReLU(inplace=True),
                ]
                if k > 0:
                    blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*blocks))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        # levels[k]: [B, C_fpn, H/(4*2^k), W/(4*2^k)] -> [B, channels, H/4, W/4]
        out = self.scale_heads[0](levels[0])
        for k in range(1, len(levels)):
            y = self.scale_heads[k](levels[k])
            # Odd input sizes leave the upsampled map a pixel off; align to the stride-4 map.
            if y.shape[-2:] != out.shape[-2:]:
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + y
        return out


class DenseSwAVNet(nn.Module):
    """forward(x float [B, 3, H, W], ImageNet-normalised) -> z float32 [B, proj_dim, H/4, W/4], unit norm."""

    def __init__(self, arch: str = "resnet50", num_prototypes: int = 1000, proj_dim: int = 128,
                 fpn_channels: int = 256, head_channels: int = 128):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHS)}")
        self.arch = arch
        self.net_args = dict(arch=arch, num_prototypes=num_prototypes, proj_dim=proj_dim,
                             fpn_channels=fpn_channels, head_channels=head_channels)
        self.backbone = getattr(torchvision.models, arch)(weights=None)
        self.backbone.fc = nn.Identity()  # unused; dropped so DDP sees no parameter without grad
        self.fpn = FeaturePyramidNetwork(list(ARCHS[arch]), fpn_channels)
        self.head = SemanticFPNHead(fpn_channels, head_channels)
        self.projection = nn.Conv2d(head_channels, proj_dim, 1)
        self.prototypes = nn.Linear(proj_dim, num_prototypes, bias=False)
        self._init_new_layers()
        self.normalize_prototypes()

    def _init_new_layers(self) -> None:
        for m in [*self.head.modules(), self.projection]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.prototypes.weight, std=1.0 / math.sqrt(self.prototypes.in_features))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project the prototype rows back onto the unit sphere (done after every optimiser step)."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ResNet stages C2..C5 through the FPN: 4 maps [B, fpn_channels, H/4..H/32, W/4..W/32]."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        feats: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for i, layer in enumerate([b.layer1, b.layer2, b.layer3, b.layer4]):
            x = layer(x)
            feats[str(i)] = x
        return list(self.fpn(feats).values())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projected features before normalisation: [B, proj_dim, H/4, W/4]."""
        return self.projection(self.head(self.pyramid(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised in fp32 even under bf16 autocast: the loss divides z . c by tau = 0.1 and
        # Sinkhorn by 0.05, which would magnify bf16's ~3 significant digits.
        return F.normalize(self.embed(x).float(), dim=1)


def backbone_state_dict_torchvision(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision ResNet keys (`conv1.weight`, `layer1.0...`, no fc.*).

    Accepts the model wrapped by DDP (`module.`) or torch.compile (`_orig_mod.`) too.
    """
    model = unwrap(model)
    return {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items() if not k.startswith("fc.")}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain DenseSwAVNet under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module  # type: ignore[assignment]
        else:
            return model


def load_backbone_weights(model: DenseSwAVNet, path: str | os.PathLike) -> list[str]:
    """Initialise the backbone from a torchvision-format checkpoint (a state dict, or a dict holding
    one under "state_dict"/"model"); fc.* is ignored. Returns the keys it loaded. Any other missing or
    unexpected key is an error naming the file, since a silent partial load would ruin a run."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "backbone"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    result = model.backbone.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: not a torchvision {model.arch} checkpoint "
                         f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    return sorted(sd)


def load_pretrained(ckpt_path: str | os.PathLike, map_location: Any = "cpu") -> tuple[DenseSwAVNet, dict[str, Any]]:
    """Rebuild the network of a training checkpoint (train/contrastive.py) with its weights.

    Returns (model in eval mode, the run's resolved config dict).
    """
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{ckpt_path}: not a dense SwAV checkpoint (no 'model' entry)")
    config = dict(ckpt.get("config") or {})
    net_args = ckpt.get("net_args") or net_args_from_config(config)
    model = DenseSwAVNet(**net_args)
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    return model, config


def net_args_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of DenseSwAVNet from a training config dict (missing keys -> defaults)."""
    args: dict[str, Any] = {}
    if "backbone" in config:
        args["arch"] = config["backbone"]
    if "num_prototypes" in config:
        args["num_prototypes"] = int(config["num_prototypes"])
    if "proj_dim" in config:
        args["proj_dim"] = int(config["proj_dim"])
    return args
