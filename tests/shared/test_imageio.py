from fractions import Fraction

import numpy as np
from PIL import Image

from shared.imageio import read_label, resize_nearest


def test_resize_nearest_takes_the_pixel_under_each_centre():
    a = np.arange(16).reshape(4, 4)
    assert resize_nearest(a, (2, 2)).tolist() == [[5, 7], [13, 15]]  # centres at input 1.0 and 3.0
    assert resize_nearest(np.array([[1, 2], [3, 4]]), (4, 4)).tolist() == \
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_resize_nearest_is_exact_on_ties():
    # 1024 -> 384 puts some output centres exactly on input pixel borders, where float versions drift
    for src, dst in ((1024, 384), (2048, 768), (375, 192), (1242, 640)):
        got = resize_nearest(np.arange(src)[:, None], (dst, 1))[:, 0]
        want = [int(Fraction(2 * i + 1, 2) * src / dst) for i in range(dst)]
        assert got.tolist() == want


def test_resize_nearest_keeps_channels_and_identity():
    a = np.random.default_rng(0).random((6, 8, 3))
    assert resize_nearest(a, (6, 8)) is a
    assert resize_nearest(a, (3, 4)).shape == (3, 4, 3)


def test_read_label_resizes_with_the_same_rule(tmp_path):
    lab = np.random.default_rng(1).integers(0, 34, (1024, 2048), dtype=np.uint8)
    Image.fromarray(lab).save(tmp_path / "l.png")
    assert np.array_equal(read_label(tmp_path / "l.png", (384, 768)), resize_nearest(lab, (384, 768)))
