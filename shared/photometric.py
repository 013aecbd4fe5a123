"""Colour jitter, grayscale and blur: the one set of colour maths for copy-paste synthesis and both trainers.

The operations (rgb in 0..1 or 0..255; luma = LUMA . rgb, the ITU-R 601 weights):
  brightness f   rgb -> f rgb
  contrast f     rgb -> f rgb + (1 - f) mean luma (of the image; of the pasted region in copy-paste)
  saturation f   rgb -> f rgb + (1 - f) luma
  hue theta      rotate the (I, Q) chroma plane of YIQ by theta, keep Y: a linear stand-in for HSV's
                 hue shift, so it composes with the others into one matrix
  grayscale      every channel := luma

Two forms of the same maths:
  - 3x3 matrices (numpy float64) that copy-paste composes per paste into one affine colour transform
    and clamps once. The shards are built from these: changing a constant here changes them (bump
    preprocess.copy_paste.SYNTHESIS_VERSION).
  - batched tensors (torch), each image with its own parameters, clamped after each step like
    torchvision's ColorJitter: the trainers' augmentation, on the training device or in loader workers.
    Constants enter as Python scalars, so a step builds no tensor from host data and never waits for
    the host. torch is imported inside these functions: the preprocessing stages use the matrices
    only and do not load it.

Why batched tensors rather than per-image PIL/torchvision calls in the loader: at 384x768 a hue shift
costs ~50 ms and a sigma-2 blur ~100 ms per image on a CPU core, four times the rest of the loading,
so 16-core machines could not feed a GPU that trains 400+ images/s; on the GPU the same operations
cost well under a millisecond per step.

Trainer parameters, params [B, 5] float: brightness, contrast, saturation factors (1 = unchanged), hue
rotation in turns (0 = unchanged, +-0.5 = opposite hue), blur sigma in pixels (0 = no blur).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# ITU-R 601 luma; torchvision's rgb_to_grayscale rounds the red weight to 0.2989.
LUMA = np.array([0.299, 0.587, 0.114])  # [3]
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])  # [3, 3]
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)  # [3, 3], computed once
GREY_ROWS = np.outer(np.ones(3), LUMA)  # [3, 3]: every channel := luma
IDENTITY = (1.0, 1.0, 1.0, 0.0, 0.0)  # trainer parameters that change nothing


# ----------------------------------------------------------------------------------------------
# matrices (numpy float64)

def saturation_matrices(factor: np.ndarray) -> np.ndarray:
    """factor [P] -> [P, 3, 3]: f I + (1 - f) GREY_ROWS (f = 0: grey, f = 1: unchanged)."""
    f = factor[:, None, None]
    return f * np.eye(3) + (1 - f) * GREY_ROWS


def hue_matrices(angle: np.ndarray) -> np.ndarray:
    """angle [P] radians -> [P, 3, 3] RGB matrices YIQ_TO_RGB R(angle) RGB_TO_YIQ, R rotating (I, Q)."""
    co, si = np.cos(angle), np.sin(angle)
    R = np.zeros((angle.shape[0], 3, 3))
    R[:, 0, 0] = 1.0
    R[:, 1, 1], R[:, 1, 2], R[:, 2, 1], R[:, 2, 2] = co, -si, si, co
    return YIQ_TO_RGB @ R @ RGB_TO_YIQ


# hue_matrices(a) = FIXED + cos(a) COS + sin(a) SIN: the parts the batched form combines with scalars
_HUE_FIXED = YIQ_TO_RGB @ np.diag([1.0, 0.0, 0.0]) @ RGB_TO_YIQ
_HUE_COS = YIQ_TO_RGB @ np.diag([0.0, 1.0, 1.0]) @ RGB_TO_YIQ
_HUE_SIN = YIQ_TO_RGB @ np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]) @ RGB_TO_YIQ


# ----------------------------------------------------------------------------------------------
# batched tensors (torch)

def luma(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W]."""
    r, g, b = (float(w) for w in LUMA)
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def hue_matrices_batched(turns: torch.Tensor) -> torch.Tensor:
    """turns [B] (1 = a full turn) -> [B, 3, 3] on turns' device, equal to hue_matrices(2 pi turns)."""
    import torch

    a = turns * (2 * math.pi)
    co, si = torch.cos(a), torch.sin(a)
    entries = [float(_HUE_FIXED[i, j]) + float(_HUE_COS[i, j]) * co + float(_HUE_SIN[i, j]) * si
               for i in range(3) for j in range(3)]
    return torch.stack(entries, dim=1).view(-1, 3, 3)


def colour_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """x float [B, 3, H, W] in 0..1, params [B, 4] (brightness, contrast, saturation, hue turns) ->
    float [B, 3, H, W] in 0..1: the four operations in that order, clamped after each."""
    import torch

    col = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731  [B] -> [B, 1, 1, 1]
    x = (x * col(params[:, 0])).clamp_(0, 1)
    mean = luma(x).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    x = (col(params[:, 1]) * x + (1 - col(params[:, 1])) * mean).clamp_(0, 1)
    x = (col(params[:, 2]) * x + (1 - col(params[:, 2])) * luma(x)).clamp_(0, 1)
    return torch.einsum("bij,bjhw->bihw", hue_matrices_batched(params[:, 3]), x).clamp_(0, 1)


def blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """x [B, C, H, W], sigma [B] per image (0 = none) -> [B, C, H, W]: separable Gaussian, reflect
    padding (as torchvision's gaussian_blur). One kernel size for the batch, 2 * ceil(3 * max_sigma) + 1,
    fixed by the config rather than read from `sigma`, so the GPU never waits for the host;
    max_sigma 0 = no image is blurred, nothing to do."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    if max_sigma <= 0:  # no image of the batch is blurred: the caller knows it from host data
        return x
    r = min(int(math.ceil(3 * max_sigma)), h - 1, w - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)  # [k]
    s = sigma.clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)  # [B, k]
    k = torch.where((sigma > 0)[:, None], k, (t[None] == 0).to(x.dtype))  # no blur: a unit impulse
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, k]
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def apply_photometric(images: torch.Tensor, params: torch.Tensor, max_sigma: float = 2.0) -> torch.Tensor:
    """images uint8 (0..255) or float (0..1) [B, 3, H, W], params [B, 5] -> float32 [B, 3, H, W] in 0..1:
    colour_jitter, then blur."""
    import torch

    x = images.float() / 255.0 if not images.is_floating_point() else images.float()
    p = params.to(device=x.device, dtype=torch.float32)  # [B, 5]
    return blur(colour_jitter(x, p[:, :4]), p[:, 4], max_sigma)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float 0..1 -> uint8 0..255, rounded."""
    import torch

    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def draw_params(rng: np.random.Generator, jitter: float, brightness: float, contrast: float, saturation: float,
                hue: float, blur_prob: float, blur_sigma: tuple[float, float]) -> np.ndarray:
    """One image's trainer parameters [5]. Always the same number of draws, so later draws do not
    depend on which branches were taken."""
    u = rng.random(7)
    on = u[0] < jitter
    b = 1 - brightness + 2 * brightness * u[1]
    c = 1 - contrast + 2 * contrast * u[2]
    s = 1 - saturation + 2 * saturation * u[3]
    h = -hue + 2 * hue * u[4]
    sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * u[6] if u[5] < blur_prob else 0.0
    return np.array([b, c, s, h, sigma] if on else [1.0, 1.0, 1.0, 0.0, sigma], dtype=np.float32)
