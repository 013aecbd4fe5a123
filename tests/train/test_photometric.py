"""Batched colour jitter and blur against torchvision's per-image reference operations."""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from train.photometric import IDENTITY, apply_photometric, draw_params


def _images(b=3, h=24, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_identity_params_leave_images_unchanged():
    x = _images()
    y = apply_photometric(x, torch.tensor([IDENTITY] * 3))
    assert torch.allclose(y, x.float() / 255, atol=1e-5)


def test_colour_ops_match_torchvision_per_image():
    x = _images().float() / 255
    params = torch.tensor([[1.3, 1.0, 1.0, 0.0, 0.0], [1.0, 0.6, 1.0, 0.0, 0.0], [1.0, 1.0, 1.4, 0.0, 0.0]])
    y = apply_photometric(x, params)
    ref = [TF.adjust_brightness(x[0], 1.3), TF.adjust_contrast(x[1], 0.6), TF.adjust_saturation(x[2], 1.4)]
    for i in range(3):
        assert torch.allclose(y[i], ref[i], atol=1e-5), i


def test_blur_matches_torchvision_and_is_per_image():
    x = _images().float() / 255
    params = torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.5], [1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.7]])
    y = apply_photometric(x, params, max_sigma=1.5)  # kernel 2 * ceil(4.5) + 1 = 11
    assert torch.allclose(y[0], TF.gaussian_blur(x[0], [11, 11], [1.5, 1.5]), atol=1e-5)
    assert torch.allclose(y[1], x[1], atol=1e-6)
    assert torch.allclose(y[2], TF.gaussian_blur(x[2], [11, 11], [0.7, 0.7]), atol=1e-5)


def test_hue_rotation_keeps_grays_and_luma_and_turns_full_circle():
    x = _images().float() / 255
    x[:, :, :4] = x[:, :1, :4]  # a gray band: hue cannot move it
    rot = apply_photometric(x, torch.tensor([[1.0, 1.0, 1.0, 0.1, 0.0]] * 3))
    assert torch.allclose(rot[:, :, :4], x[:, :, :4], atol=1e-5)
    assert (rot - x).abs().max() > 0.05
    inside = ((rot > 0) & (rot < 1)).all(dim=1, keepdim=True)  # pixels the clamp did not touch
    assert inside.float().mean() > 0.3
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # YIQ's Y
    assert torch.allclose(((rot - x) * luma).sum(1, keepdim=True)[inside], torch.tensor(0.0), atol=1e-5)
    full = apply_photometric(x, torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]] * 3))
    assert torch.allclose(full, x, atol=1e-5)


def test_draw_params_ranges_and_probabilities():
    rng = np.random.default_rng(0)
    p = np.stack([draw_params(rng, 0.8, 0.4, 0.4, 0.4, 0.1, 0.5, (0.1, 2.0)) for _ in range(4000)])
    jittered = (p[:, :4] != np.array([1, 1, 1, 0])).any(1)
    assert abs(jittered.mean() - 0.8) < 0.03 and abs((p[:, 4] > 0).mean() - 0.5) < 0.03
    assert p[:, 0].min() >= 0.6 and p[:, 0].max() <= 1.4 and np.abs(p[:, 3]).max() <= 0.1
    assert p[p[:, 4] > 0, 4].min() >= 0.1 and p[:, 4].max() <= 2.0
