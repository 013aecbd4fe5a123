"""PiCIE's maths (train/picie_losses.py) against hand-computed answers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.picie_losses import (cluster_weights, equivariant_crop, grayscale, kmeans_plus_plus, lloyd,
                                minibatch_update, nearest_centroid, picie_loss, squared_distances)


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points of 4 well-separated blobs in 3-D: (x [N, 3], true labels [N], true means [4, 3])."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    sizes = [30, 7, 50, 13]  # unequal, so a method that splits by count would fail
    x = torch.cat([c + 0.5 * torch.randn(n, 3, generator=g) for c, n in zip(centres, sizes)])
    y = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    means = torch.stack([x[y == i].mean(0) for i in range(4)])
    return x, y, means


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when labels a and b [N] split the points the same way, whatever the cluster numbers."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kmeans_recovers_separable_blobs(seed):
    x, y, means = _blobs(seed)
    centroids, counts = lloyd(x, kmeans_plus_plus(x, 4, torch.Generator().manual_seed(seed)), iterations=20)
    labels, _ = nearest_centroid(x, centroids)
    assert _same_partition(labels, y)
    # each centroid is its blob's mean, and counts are the blob sizes
    order = [int(labels[y == i][0]) for i in range(4)]
    torch.testing.assert_close(centroids[order], means, atol=1e-5, rtol=0)
    assert counts[order].tolist() == [30.0, 7.0, 50.0, 13.0]


def test_kmeans_plus_plus_is_seeded_and_picks_points_of_the_data():
    x, _, means = _blobs()
    a = kmeans_plus_plus(x, 4, torch.Generator().manual_seed(5))
    b = kmeans_plus_plus(x, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert all(bool((x == s).all(1).any()) for s in a)
    # D^2 seeding on far-apart blobs puts one seed in each blob
    assert sorted(nearest_centroid(a, means)[0].tolist()) == [0, 1, 2, 3]


def test_lloyd_refills_an_empty_cluster():
    x = torch.tensor([[0.0, 0], [0, 1], [5, 5]])
    # two identical seeds: the second never wins a point and must take the farthest point instead
    c, counts = lloyd(x, torch.tensor([[0.0, 0.5], [0.0, 0.5], [5.0, 5.0]]), iterations=10)
    assert counts.min() >= 1
    assert sorted(map(tuple, c.tolist())) == [(0.0, 0.0), (0.0, 1.0), (5.0, 5.0)]


def test_minibatch_update_by_hand():
    c = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    counts = torch.tensor([1.0, 3.0])
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [10.0, 14.0]])
    new, new_counts = minibatch_update(c, counts, x)
    # cluster 0: 2 points with mean (2, 0), rate 2 / (1 + 2); cluster 1: 1 point (10, 14), rate 1 / 4
    torch.testing.assert_close(new, torch.tensor([[4 / 3, 0.0], [10.0, 11.0]]))
    assert new_counts.tolist() == [3.0, 4.0]


def test_minibatch_centroid_is_the_running_mean_of_its_points():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(40, 5, generator=g) + 100  # one cluster far from the other centroid
    c = torch.stack([pts[0], torch.zeros(5) - 100])
    counts = torch.tensor([1.0, 1.0])
    for s in range(1, 40, 7):
        c, counts = minibatch_update(c, counts, pts[s:s + 7])
    torch.testing.assert_close(c[0], pts.mean(0), atol=1e-4, rtol=0)
    assert counts.tolist() == [40.0, 1.0]


def test_squared_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert squared_distances(x, c).tolist() == [[0.0, 1.0], [25.0, 18.0]]


def test_picie_loss_known_answer():
    # two orthogonal unit centroids; each feature sits on its own centroid: logits 0 and -||c0 - c1||^2 = -2
    c = torch.eye(2)
    f = torch.eye(2)
    y = torch.tensor([0, 1])
    t = picie_loss(f, f, y, y, c, c)
    expected = math.log(1 + math.exp(-2.0))
    for v in (t.total, t.within, t.across):
        assert float(v) == pytest.approx(expected, rel=1e-6)
    # wrong labels cost more: log(1 + e^2)
    t_bad = picie_loss(f, f, 1 - y, 1 - y, c, c)
    assert float(t_bad.total) == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-6)


def test_picie_loss_pairs_views_with_the_right_centroids_and_labels():
    g = torch.Generator().manual_seed(0)
    f1, f2 = F.normalize(torch.randn(12, 4, generator=g), dim=1), F.normalize(torch.randn(12, 4, generator=g), dim=1)
    c1, c2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    y1, y2 = torch.randint(3, (12,), generator=g), torch.randint(3, (12,), generator=g)
    w1, w2 = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.1, 0.3])

    def ce(f, c, y, w):
        logits = -torch.cdist(f, c) ** 2
        nll = -logits.log_softmax(1)[torch.arange(len(y)), y]
        return (w[y] * nll).sum() / w[y].sum()

    t = picie_loss(f1, f2, y1, y2, c1, c2, w1, w2)
    within = (ce(f1, c1, y1, w1) + ce(f2, c2, y2, w2)) / 2
    across = (ce(f1, c2, y2, w2) + ce(f2, c1, y1, w1)) / 2
    torch.testing.assert_close(t.within, within, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.across, across, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t.total, (within + across) / 2, atol=1e-5, rtol=1e-5)


def test_cluster_weights_are_pixel_shares():
    assert cluster_weights(torch.tensor([1, 3, 0, 4])).tolist() == [0.125, 0.375, 0.0, 0.5]


def test_grayscale_only_where_asked():
    x = torch.rand(2, 3, 4, 5)
    out = grayscale(x, torch.tensor([True, False]))
    luma = 0.2989 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    for ch in range(3):
        torch.testing.assert_close(out[0, ch], luma)
    assert torch.equal(out[1], x[1])


# ---- the equivariance transform


def test_crop_known_answers():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).view(2, 3, 4, 8)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    torch.testing.assert_close(equivariant_crop(x, full, torch.tensor([False, False]), (4, 8)), x)
    torch.testing.assert_close(equivariant_crop(x, full, torch.tensor([True, False]), (4, 8)),
                               torch.stack([x[0].flip(-1), x[1]]))
    # the left half at half the width: output pixel j samples exactly input pixel j
    left = torch.tensor([[0.0, 0.0, 1.0, 0.5]] * 2)
    torch.testing.assert_close(equivariant_crop(x, left, torch.tensor([False, False]), (4, 4)), x[..., :4])
    # the bottom-right quarter, flipped, at its own resolution
    quarter = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    torch.testing.assert_close(equivariant_crop(x, quarter, torch.tensor([True, True]), (2, 4)),
                               x[:, :, 2:, 4:].flip(-1))


def _coordinates(h: int, w: int) -> torch.Tensor:
    """[1, 2, h, w]: every pixel holds its own centre (x, y) as fractions of the width and height."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs, ys]).unsqueeze(0)


@pytest.mark.parametrize("flip", [False, True])
def test_a_pixels_feature_lands_where_its_pixel_lands(flip):
    """Crop-then-network equals network-then-crop for a stride-4 'network' (4x4 mean pooling) on an
    image whose pixels hold their own coordinates: every output cell names the same frame point."""
    h, w = 64, 128
    img = _coordinates(h, w)
    box = torch.tensor([[0.2, 0.15, 0.8, 0.75]])  # inside the frame: no border clamping on either side
    flips = torch.tensor([flip])
    net = lambda x: F.avg_pool2d(x, 4)  # noqa: E731
    a = net(equivariant_crop(img, box, flips, (32, 64)))  # view 1's path: transform the image
    b = equivariant_crop(net(img), box, flips, (8, 16))  # view 2's path: transform the feature map
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # and that point is where the box says: cell (i, j) centre in the frame
    u = (torch.arange(16) + 0.5) / 16
    u = 1 - u if flip else u
    torch.testing.assert_close(a[0, 0, 0], 0.15 + 0.6 * u, atol=1e-5, rtol=0)
    # negative control: a flip on one side only puts features on the mirrored pixels
    c = equivariant_crop(net(img), box, ~flips, (8, 16))
    assert (a - c).abs().max() > 0.3


def test_feature_maps_of_other_strides_agree_too():
    img = _coordinates(96, 96)
    box, flips = torch.tensor([[0.1, 0.3, 0.7, 0.9]]), torch.tensor([True])
    for s in (2, 8):
        a = F.avg_pool2d(equivariant_crop(img, box, flips, (48, 48)), s)
        b = equivariant_crop(F.avg_pool2d(img, s), box, flips, (48 // s, 48 // s))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
