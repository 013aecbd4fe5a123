"""Self-supervised monocular depth networks (Monodepth2 architecture, docs/design.md#constants).

  * `ResNetEncoder`: torchvision ResNet-18 trunk, random init; `num_input_images=2` widens the first
    convolution to 6 channels for the pose network (a pretrained 3-channel kernel is tiled and
    halved, so a frame pair of identical images gives the same activations as one image).
  * `DepthDecoder`: U-Net decoder with skip connections; a sigmoid disparity at 4 scales
    (1, 1/2, 1/4, 1/8 of the input).
  * `PoseDecoder`: 6-DoF relative pose (axis-angle + translation) from the pair's features.
  * `DepthModel`: the four together, the unit a checkpoint stores.

Inputs are RGB in [0, 1], [B, 3, H, W] with H and W multiples of 32.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

NUM_SCALES = 4


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Sigmoid output in [0,1] -> depth in [min_depth, max_depth] (linear in inverse depth)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * disp)


def load_torchvision_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local torchvision-format ResNet-18 state dict (a plain dict or {"state_dict": ...})."""
    from shared.frames import DataError

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise DataError(path, f"cannot read encoder weights ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "conv1.weight" not in sd:
        raise DataError(path, "not a torchvision ResNet state dict (no conv1.weight)")
    return sd


class ResNetEncoder(nn.Module):
    """ResNet-18 features at strides 2, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels."""

    channels = (64, 64, 128, 256, 512)

    def __init__(self, num_input_images: int = 1, init_weights: str | os.PathLike | None = None):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if num_input_images != 1:
            net.conv1 = nn.Conv2d(3 * num_input_images, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if init_weights:
            sd = {k: v for k, v in load_torchvision_weights(init_weights).items() if not k.startswith("fc.")}
            if num_input_images != 1:
                sd["conv1.weight"] = torch.cat([sd["conv1.weight"]] * num_input_images, 1) / num_input_images
            missing, unexpected = net.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                from shared.frames import DataError
                raise DataError(init_weights, f"ResNet-18 keys missing {missing[:3]} / unexpected {unexpected[:3]}")
        del net.fc
        self.net = net
        self.register_buffer("mean", torch.tensor(0.45), persistent=False)
        self.register_buffer("std", torch.tensor(0.225), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        x = (x - self.mean) / self.std
        f0 = n.relu(n.bn1(n.conv1(x)))  # [B,64,H/2,W/2]
        f1 = n.layer1(n.maxpool(f0))  # [B,64,H/4,W/4]
        f2 = n.layer2(f1)  # [B,128,H/8,W/8]
        f3 = n.layer3(f2)  # [B,256,H/16,W/16]
        f4 = n.layer4(f3)  # [B,512,H/32,W/32]
        return [f0, f1, f2, f3, f4]


class ConvBlock(nn.Sequential):
    """Reflection-padded 3x3 convolution + ELU (reflection avoids dark borders in the disparity)."""

    def __init__(self, cin: int, cout: int, act: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        if act:
            layers.append(nn.ELU(inplace=True))
        super().__init__(*layers)


class DepthDecoder(nn.Module):
    decoder_channels = (16, 32, 64, 128, 256)

    def __init__(self, encoder_channels: tuple[int, ...] = ResNetEncoder.channels, num_scales: int = NUM_SCALES):
        super().__init__()
        self.num_scales = num_scales
        enc, dec = encoder_channels, self.decoder_channels
        self.up0 = nn.ModuleList()
        self.up1 = nn.ModuleList()
        for i in range(4, -1, -1):
            cin = enc[-1] if i == 4 else dec[i + 1]
            self.up0.append(ConvBlock(cin, dec[i]))
            cskip = dec[i] + (enc[i - 1] if i > 0 else 0)
            self.up1.append(ConvBlock(cskip, dec[i]))
        self.disp = nn.ModuleList(ConvBlock(dec[s], 1, act=False) for s in range(num_scales))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features -> disparities [disp_0 [B,1,H,W], disp_1 [B,1,H/2,W/2], ...] in (0, 1)."""
        x = feats[-1]
        out: list[torch.Tensor] = [None] * self.num_scales  # type: ignore[list-item]
        for k, i in enumerate(range(4, -1, -1)):
            x = F.interpolate(self.up0[k](x), scale_factor=2.0, mode="nearest")
            if i > 0:
                x = torch.cat([x, feats[i - 1]], 1)
            x = self.up1[k](x)
            if i < self.num_scales:
                out[i] = torch.sigmoid(self.disp[i](x).float())
        return out


class PoseDecoder(nn.Module):
    def __init__(self, encoder_channels: int = 512, translation_scale: float = 0.01):
        super().__init__()
        self.translation_scale = translation_scale
        self.squeeze = nn.Conv2d(encoder_channels, 256, 1)
        self.convs = nn.Sequential(
            nn.ReLU(inplace=True), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 6, 1))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (axis-angle [B,3], translation [B,3])."""
        x = self.convs(self.squeeze(feats[-1])).float().mean((2, 3))
        # Small outputs at init: the first warps start near identity instead of wild poses. The
        # translation's factor also sets the scene's initial distance in units of the camera's step:
        # the sigmoid disparity starts near depth 0.2, so 0.01 (Monodepth2) puts everything some 60
        # steps away, where the photometric loss has almost no slope (docs/depth.md).
        return 0.01 * x[:, :3], self.translation_scale * x[:, 3:]


class DepthModel(nn.Module):
    """Depth network + pose network; one state dict for the checkpoint."""

    def __init__(self, init_weights: str | os.PathLike | None = None, pose_translation_scale: float = 0.01,
                 pose_forward_init: float = 0.0):
        """pose_forward_init: the translation along the optical axis (network units) that the pose
        network starts out predicting for every pair, a camera moving forward; 0 = Monodepth2's
        zero-mean init."""
        super().__init__()
        self.depth_encoder = ResNetEncoder(1, init_weights)
        self.depth_decoder = DepthDecoder()
        self.pose_encoder = ResNetEncoder(2, init_weights)
        self.pose_decoder = PoseDecoder(translation_scale=pose_translation_scale)
        if pose_forward_init:
            with torch.no_grad():  # the pair's motion maps the earlier camera's points into the later one: z shrinks
                self.pose_decoder.convs[-1].bias[5] = -pose_forward_init / pose_translation_scale

    def disparities(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image [B,3,H,W] in [0,1] -> sigmoid disparity at 4 scales (finest first)."""
        return self.depth_decoder(self.depth_encoder(image))

    def pose(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative motion of a temporally ordered pair (earlier, later) -> (axis-angle, translation)."""
        return self.pose_decoder(self.pose_encoder(torch.cat([first, second], 1)))
