"""The trained depth network as the other stages use it: the checkpoint reader and the predictor.

The depth trainer writes checkpoints (train/depth.py); regions, depth inference and depth evaluation
read them through this module, so no stage imports another stage's code.

Units: *relative depth*. The network's sigmoid disparity is mapped to depth in
[min_depth, max_depth] of its training config (default 0.1-100), but monocular self-supervision
only knows depth up to one global scale, so a value is "metres times an unknown factor" (about
constant over a dataset). Ratios, normals and occlusion boundaries are meaningful; absolute values
are not until scaled (the evaluation median-scales each image; the regions stage normalises the
scale itself).

    DepthPredictor(ckpt).predict(rgb uint8 [H,W,3]) -> float32 [H,W]   (what the regions stage calls)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.checkpoint import load_checkpoint
from shared.frames import DataError
from shared.nets.depth_net import DepthDecoder, ResNetEncoder, disp_to_depth


def load_depth_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Read a depth checkpoint; DataError naming the file when it is missing or not one."""
    # mmap: inference reads the depth weights without paging in the pose net and Adam state
    state = load_checkpoint(path, map_location=device, mmap=True)
    if state is None:
        raise DataError(path, "depth checkpoint not found")
    if not isinstance(state, dict) or "model" not in state or state.get("config_class") != "DepthTrainConfig":
        raise DataError(path, "not a depth checkpoint written by `python -m train depth-train`")
    return state


class DepthPredictor:
    """A trained depth network for inference. Thread-safe for reading; one per process."""

    def __init__(self, ckpt_path: str | os.PathLike, device: str = "cpu"):
        self.path = Path(ckpt_path)
        self.device = torch.device(device)
        state = load_depth_checkpoint(self.path, "cpu")
        cfg = state["config"]
        self.height, self.width = int(cfg["height"]), int(cfg["width"])
        self.min_depth, self.max_depth = float(cfg["min_depth"]), float(cfg["max_depth"])
        self.encoder, self.decoder = ResNetEncoder(1), DepthDecoder()
        try:
            self.encoder.load_state_dict({k[len("depth_encoder."):]: v for k, v in state["model"].items()
                                          if k.startswith("depth_encoder.")})
            self.decoder.load_state_dict({k[len("depth_decoder."):]: v for k, v in state["model"].items()
                                          if k.startswith("depth_decoder.")})
        except RuntimeError as e:
            raise DataError(self.path, f"depth network weights do not match the architecture ({e})") from e
        del state  # drops the pose network and optimizer state
        self.encoder.to(self.device).eval()
        self.decoder.to(self.device).eval()
        if self.device.type == "cuda":
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)

    @property
    def units(self) -> str:
        return f"relative depth (network range {self.min_depth:g}-{self.max_depth:g}, one unknown global scale)"

    @torch.inference_mode()
    def predict_batch(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [B,H,W,3] -> float32 [B,H,W] relative depth at the input size."""
        if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [B,H,W,3], got {rgb.dtype} {rgb.shape}")
        B, H, W, _ = rgb.shape
        x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if (H, W) != (self.height, self.width):
            x = F.interpolate(x, (self.height, self.width), mode="bilinear", align_corners=False,
                              antialias=True).clamp_(0, 1)
        cuda = self.device.type == "cuda"
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            disp = self.decoder(self.encoder(x))[0].float()  # [B,1,h,w]
        # Upsample the disparity, not the depth: it is what the network predicts smoothly.
        disp = F.interpolate(disp, (H, W), mode="bilinear", align_corners=False)
        return disp_to_depth(disp, self.min_depth, self.max_depth)[:, 0].cpu().numpy().astype(np.float32)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H,W,3] -> float32 [H,W] relative depth (> 0) at the input size."""
        if rgb.ndim != 3:
            raise ValueError(f"expected one uint8 image [H,W,3], got shape {rgb.shape}")
        return self.predict_batch(rgb[None])[0]
