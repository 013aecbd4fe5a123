"""The numba SLIC of shared.regions.slic gives exactly scikit-image's labels: every comparison here is
label for label, so one pixel assigned differently fails the test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.segmentation import slic

from shared.regions.grouping import compact_labels, slic_superpixels
from shared.regions.slic import slic_labels


def reference(rgb: np.ndarray, n_segments: int, compactness: float = 10.0, sigma: float = 1.0) -> np.ndarray:
    return slic(rgb, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0, channel_axis=-1)


def assert_same(rgb: np.ndarray, n_segments: int, compactness: float = 10.0, sigma: float = 1.0) -> None:
    want = reference(rgb, n_segments, compactness, sigma)
    got = slic_labels(rgb, n_segments, compactness, sigma)
    assert got.dtype == np.int32 and got.shape == rgb.shape[:2]
    differ = int((got != want).sum())
    assert differ == 0, f"{differ} of {want.size} labels differ from skimage ({rgb.shape}, n_segments {n_segments})"


@pytest.fixture(scope="module")
def city_frames(tmp_path_factory) -> list[np.ndarray]:
    """Three street frames at 96x192 and one at 192x384 from the built-in synthetic city."""
    from preprocess.synth import generate
    from shared.datasets.synthetic import read_synthetic
    from shared.imageio import read_rgb

    tmp = tmp_path_factory.mktemp("slic")
    out = []
    for name, frames, size in (("small", 3, (96, 192)), ("large", 1, (192, 384))):
        generate(tmp / name, 1, frames, size, seed=0, progress=False)
        out += [read_rgb(f.image) for f in read_synthetic(tmp / name)]
    return out


def test_synthetic_city_frames_at_paper_density(city_frames):
    # 10000 segments at 384x768 is one per ~30 pixels; keep that density at the test sizes
    for rgb in city_frames:
        assert_same(rgb, int(round(10000 * rgb.shape[0] * rgb.shape[1] / (384 * 768))))


def test_synthetic_city_frame_other_parameters(city_frames):
    rgb = city_frames[0]
    assert_same(rgb, 10000)  # more segments than pixels: every pixel is a seed
    assert_same(rgb, 200, compactness=1.0, sigma=0.0)  # no smoothing, colour-dominated
    assert_same(rgb, 300, compactness=40.0, sigma=2.0)


def real_images(root: Path) -> list[Path]:
    paths = sorted((root / "cityscapes" / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    paths += sorted((root / "kitti").glob("*/*/image_02/data/*.png"))[:1]
    paths += sorted((root / "kitti_stereo2015" / "training" / "image_2").glob("*.png"))[:1]
    return paths


def test_real_cityscapes_and_kitti_samples(sample_data):
    from shared.imageio import read_rgb

    paths = real_images(sample_data)
    if not paths:
        pytest.skip(f"no Cityscapes / KITTI images found under {sample_data}")
    for p in paths:
        rgb = read_rgb(p, (192, 384))
        assert_same(rgb, 2500)


def test_noise_images_and_odd_sizes():
    rng = np.random.default_rng(7)
    assert_same(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), 50)
    assert_same(rng.integers(0, 256, (61, 29, 3), dtype=np.uint8), 40, compactness=0.5)
    assert_same(rng.integers(0, 256, (33, 97, 3), dtype=np.uint8), 400, compactness=100.0, sigma=0.0)
    assert_same(rng.integers(100, 104, (45, 45, 3), dtype=np.uint8), 60)  # few grey levels: many ties
    assert_same(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), 1)
    assert_same(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), 500)  # more segments than pixels


def test_constant_and_two_colour_images():
    # constant: max == min skips the rescale, every colour distance ties
    assert_same(np.full((37, 53, 3), 7, dtype=np.uint8), 50)
    assert_same(np.zeros((40, 64, 3), dtype=np.uint8), 100, sigma=0.0)
    half = np.zeros((48, 80, 3), dtype=np.uint8)
    half[:, 37:] = (200, 30, 90)
    assert_same(half, 120)


def test_grouping_uses_it_and_keeps_contiguous_ids(city_frames):
    rgb = city_frames[1]
    got = slic_superpixels(rgb, 600, 10.0, 1.0)
    want = compact_labels(reference(rgb, 600).astype(np.int32))
    assert got.dtype == np.int32
    assert np.array_equal(got, want)


def test_rejects_what_it_does_not_reproduce():
    with pytest.raises(TypeError):
        slic_labels(np.zeros((8, 8, 3), dtype=np.float32), 4, 10.0, 1.0)
    with pytest.raises(ValueError):
        slic_labels(np.zeros((8, 8), dtype=np.uint8), 4, 10.0, 1.0)
