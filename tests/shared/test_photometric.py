"""The colour maths: the matrices copy-paste composes, the batched trainer form against them and
against torchvision's per-image reference operations, and the trainer's blur."""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from shared.photometric import (GREY_ROWS, IDENTITY, LUMA, RGB_TO_YIQ, apply_photometric, colour_jitter, draw_params,
                                hue_matrices, hue_matrices_batched, luma, saturation_matrices)

# torchvision's grey level weighs red 0.2989, ours 0.299: contrast and saturation differ from its by at
# most 1e-4 of a grey level times |1 - factor|
TV_ATOL = 1e-4


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
        assert torch.allclose(y[i], ref[i], atol=TV_ATOL), i


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


def test_matrices_known_answers():
    np.testing.assert_allclose(LUMA, [0.299, 0.587, 0.114])
    np.testing.assert_allclose(RGB_TO_YIQ[0], LUMA)  # YIQ's Y is the luma the other operations use
    np.testing.assert_allclose(saturation_matrices(np.array([0.0]))[0], GREY_ROWS)  # f = 0: grey
    np.testing.assert_allclose(saturation_matrices(np.array([1.0]))[0], np.eye(3), atol=1e-15)
    np.testing.assert_allclose(saturation_matrices(np.array([2.0]))[0], 2 * np.eye(3) - GREY_ROWS)
    a = np.array([0.0, 0.7, np.pi, 2 * np.pi])
    M = hue_matrices(a)
    np.testing.assert_allclose(M[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(M[3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(LUMA @ M, np.broadcast_to(LUMA, (4, 3)), atol=1e-12)  # hue keeps luma
    np.testing.assert_allclose(M @ np.ones(3), np.ones((4, 3)), atol=1e-12)  # and greys
    np.testing.assert_allclose(M[1] @ M[1], hue_matrices(np.array([1.4]))[0], atol=1e-12)  # angles add
    half = M[2] @ np.array([1.0, 0.0, 0.0])  # red turned half way: I and Q negated about its luma
    yiq = RGB_TO_YIQ @ np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(RGB_TO_YIQ @ half, yiq * [1, -1, -1], atol=1e-12)


def test_batched_hue_equals_the_matrices():
    turns = torch.tensor([0.0, 0.1, -0.25, 0.5, 0.93], dtype=torch.float64)
    np.testing.assert_allclose(hue_matrices_batched(turns).numpy(), hue_matrices(2 * np.pi * turns.numpy()),
                               atol=1e-12)


def test_batched_jitter_is_the_matrices_applied_per_pixel():
    """Inside 0..1 (no clamping), the trainer's saturation and hue are copy-paste's matrices."""
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)  # far from the clamp
    y = colour_jitter(x, torch.tensor([[1.0, 1.0, 0.6, 0.0], [1.0, 1.0, 1.0, 0.15]], dtype=torch.float64))
    m_sat, m_hue = saturation_matrices(np.array([0.6]))[0], hue_matrices(np.array([2 * np.pi * 0.15]))[0]
    for img, out, m in ((0, y[0], m_sat), (1, y[1], m_hue)):
        expect = np.einsum("ij,jhw->ihw", m, x[img].numpy())
        np.testing.assert_allclose(out.numpy(), expect, atol=1e-12)
    grey = colour_jitter(x, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(grey, luma(x).expand_as(x))
    r, gch, b = x[:, 0], x[:, 1], x[:, 2]
    torch.testing.assert_close(luma(x)[:, 0], 0.299 * r + 0.587 * gch + 0.114 * b)


def test_contrast_pulls_towards_the_mean_luma():
    x = torch.tensor([[[[0.2, 0.6]], [[0.4, 0.8]], [[0.1, 0.5]]]])  # [1, 3, 1, 2]
    mean = float(luma(x).mean())
    y = colour_jitter(x, torch.tensor([[1.0, 0.5, 1.0, 0.0]]))
    torch.testing.assert_close(y, 0.5 * x + 0.5 * mean)
