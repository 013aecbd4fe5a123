"""Colour jitter and Gaussian blur for a whole batch at once, each image with its own parameters.

Why batched tensors and not per-image PIL/torchvision calls in the loader: at 384x768 a hue shift
costs ~50 ms and a sigma-2 blur ~100 ms per image on a CPU core, four times the rest of the
loading (decode, source ids, crop), so 16-core machines could not feed a GPU that trains 400+
images/s. On the GPU the same operations cost well under a millisecond per step. The loader draws
the parameters (seeded per sample, so runs stay reproducible) and the images are jittered either
on the training device (default on CUDA) or in the loader workers (CPU runs), by this same code.

params [B, 5] float: brightness, contrast, saturation factors (1 = unchanged), hue rotation in
turns (0 = unchanged, +-0.5 = opposite hue), blur sigma in pixels (0 = no blur).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IDENTITY = (1.0, 1.0, 1.0, 0.0, 0.0)
LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601 luma as torchvision rounds it (rgb_to_grayscale)


def draw_params(rng: np.random.Generator, jitter: float, brightness: float, contrast: float, saturation: float,
                hue: float, blur: float, blur_sigma: tuple[float, float]) -> np.ndarray:
    """One image's parameters [5]. Always the same number of draws, so later draws do not depend
    on which branches were taken."""
    u = rng.random(7)
    on = u[0] < jitter
    b = 1 - brightness + 2 * brightness * u[1]
    c = 1 - contrast + 2 * contrast * u[2]
    s = 1 - saturation + 2 * saturation * u[3]
    h = -hue + 2 * hue * u[4]
    sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * u[6] if u[5] < blur else 0.0
    return np.array([b, c, s, h, sigma] if on else [1.0, 1.0, 1.0, 0.0, sigma], dtype=np.float32)


RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))  # YIQ, row 0 = luma Y


@dataclass(frozen=True)
class ColourMatrices:
    """The constant tensors of the colour operations (float32, on one device)."""

    luma: torch.Tensor  # [1, 3, 1, 1] LUMA weights
    rgb2yiq: torch.Tensor  # [3, 3]
    yiq2rgb: torch.Tensor  # [3, 3], the inverse of rgb2yiq


@functools.lru_cache(maxsize=None)
def colour_matrices(device: torch.device = torch.device("cpu")) -> ColourMatrices:
    """ColourMatrices on `device`, built once per process and device: a training loop fetches them
    before its first step, since a tensor made from Python numbers on a GPU is a blocking copy
    from the host, and the inverse of a constant matrix needs computing only once."""
    rgb2yiq = torch.tensor(RGB2YIQ, dtype=torch.float32)
    m = ColourMatrices(torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1), rgb2yiq, torch.linalg.inv(rgb2yiq))
    return ColourMatrices(*(t.to(device) for t in (m.luma, m.rgb2yiq, m.yiq2rgb)))


def _gray(x: torch.Tensor, m: ColourMatrices) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] luma."""
    return (x * m.luma).sum(dim=1, keepdim=True)


def _hue_matrices(turns: torch.Tensor, m: ColourMatrices) -> torch.Tensor:
    """[B] hue rotations -> [B, 3, 3] RGB matrices: rotate the chroma plane of YIQ, keep luma Y."""
    a = turns * 2 * math.pi
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.zeros(turns.shape[0], 3, 3, dtype=turns.dtype, device=turns.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return m.yiq2rgb @ rot @ m.rgb2yiq


def _blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, sigma [B] per image (0 = none), reflect padding (as torchvision's
    gaussian_blur). One kernel size for the batch, 2 * ceil(3 * max_sigma) + 1, fixed by the caller
    rather than read from `sigma`, so the GPU never waits for the host; max_sigma 0 = no image is
    blurred (the caller knows it from host data), nothing to do."""
    b, c, h, w = x.shape
    if max_sigma <= 0:
        return x
    r = min(int(math.ceil(3 * max_sigma)), h - 1, w - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)  # [k]
    s = sigma.clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)  # [B, k]
    k = torch.where((sigma > 0)[:, None], k, (t[None] == 0).to(x.dtype))  # no blur: a unit impulse
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*3, k]
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def apply_photometric(images: torch.Tensor, params: torch.Tensor, max_sigma: float = 2.0,
                      matrices: ColourMatrices | None = None) -> torch.Tensor:
    """images uint8 (0..255) or float (0..1) [B, 3, H, W], params [B, 5] -> float32 [B, 3, H, W] in 0..1.

    brightness, contrast (around each image's mean luma), saturation (towards luma), hue, blur, in
    that order, clamped to 0..1 after each colour step like torchvision's ColorJitter. max_sigma:
    the largest blur sigma any image may have (0: none has blur); matrices: colour_matrices() of
    the images' device (default: fetched here)."""
    x = images.float() / 255.0 if not images.is_floating_point() else images.float()
    m = matrices if matrices is not None else colour_matrices(x.device)
    p = params.to(device=x.device, dtype=torch.float32)  # [B, 5]
    col = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731  [B] -> [B, 1, 1, 1]
    x = (x * col(p[:, 0])).clamp_(0, 1)
    mean = _gray(x, m).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    x = (col(p[:, 1]) * x + (1 - col(p[:, 1])) * mean).clamp_(0, 1)
    x = (col(p[:, 2]) * x + (1 - col(p[:, 2])) * _gray(x, m)).clamp_(0, 1)
    x = torch.einsum("bij,bjhw->bihw", _hue_matrices(p[:, 3], m), x).clamp_(0, 1)
    return _blur(x, p[:, 4], max_sigma)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
