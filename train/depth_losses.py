"""Self-supervised depth losses (Monodepth2, docs/design.md#depth): photometric error from SSIM and L1,
per-pixel minimum reprojection over the source frames, auto-masking of static pixels, and
edge-aware smoothness of the mean-normalised disparity. Images are [B,3,H,W] in [0,1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel and channel over 3x3 windows, in [0, 1]. [B,C,H,W] -> [B,C,H,W].

    Reflection padding keeps the border windows full-sized, so identical images score exactly 0.
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return ((1.0 - num / den) / 2.0).clamp(0.0, 1.0)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """ssim_weight * SSIM dissimilarity + (1 - ssim_weight) * L1, averaged over channels.
    [B,3,H,W] x2 -> [B,1,H,W]."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if ssim_weight == 0.0:
        return l1
    return ssim_weight * ssim_dissimilarity(pred, target).mean(1, keepdim=True) + (1.0 - ssim_weight) * l1


def min_reprojection(reprojection: torch.Tensor, identity: torch.Tensor | None,
                     tie_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum over source frames, with auto-masking.

    reprojection [B,S,H,W]: error of each warped source vs the target.
    identity [B,S,H,W] or None: error of each *unwarped* source vs the target; where one of these
    is the minimum, the pixel looks static relative to the camera (or textureless) and carries no
    depth signal, so it is masked out. tie_noise [B,S,H,W]: tiny noise added to identity so
    exact ties (e.g. an untextured sky) are broken at random rather than always one way.
    Returns (loss per pixel [B,1,H,W], auto-mask [B,1,H,W] bool: True = pixel used).
    """
    if identity is None:
        loss, _ = reprojection.min(1, keepdim=True)
        return loss, torch.ones_like(loss, dtype=torch.bool)
    if tie_noise is not None:
        identity = identity + tie_noise
    combined = torch.cat([identity, reprojection], 1)  # [B,2S,H,W]
    loss, idx = combined.min(1, keepdim=True)
    return loss, idx >= identity.shape[1]


def smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised disparity: gradients are free across image edges.
    disp [B,1,H,W], image [B,3,H,W] at the same size -> scalar."""
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    grad_dx = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    grad_dy = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    w_x = torch.exp(-(image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True))
    w_y = torch.exp(-(image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True))
    return (grad_dx * w_x).mean() + (grad_dy * w_y).mean()
