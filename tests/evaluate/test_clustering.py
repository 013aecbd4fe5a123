"""Clustering of prototypes / features into classes, and pixel -> cluster assignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluate.clustering import (Codebook, agglomerative_labels, assign_clusters, kmeans_codebook,
                                 nearest_centre, prototype_codebook, spherical_kmeans)


def _cosine_blobs(n_clusters: int, per: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Unit vectors in n_clusters tight cones around random directions, shuffled; with their truth."""
    g = torch.Generator().manual_seed(seed)
    axes = F.normalize(torch.randn(n_clusters, dim, generator=g), dim=1)
    truth = np.repeat(np.arange(n_clusters), per)
    x = axes[truth] + spread * torch.randn(len(truth), dim, generator=g)
    # scale each vector differently: cosine clustering must not care about norms
    x = x * (0.1 + 5 * torch.rand(len(truth), 1, generator=g))
    order = torch.randperm(len(truth), generator=g)
    return x[order], truth[order.numpy()]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_agglomerative_recovers_well_separated_cosine_clusters():
    protos, truth = _cosine_blobs(n_clusters=6, per=12, dim=16, spread=0.05, seed=0)
    labels = agglomerative_labels(protos.numpy(), 6)
    assert labels.shape == (72,) and set(labels.tolist()) == set(range(6))
    assert _same_partition(labels, truth)
    # numbered by first member: the first vector is cluster 0, the next new one is 1, ...
    _, first_member = np.unique(labels, return_index=True)
    assert first_member[0] == 0 and np.all(np.diff(first_member) > 0)


def test_agglomerative_uses_cosine_not_euclidean():
    # two directions; along each, vectors of very different lengths. Euclidean average linkage
    # would split by length (short vs long); cosine must split by direction.
    d1, d2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    v = np.stack([d1 * 0.1, d1 * 0.12, d1 * 10, d1 * 11, d2 * 0.1, d2 * 0.11, d2 * 10, d2 * 12])
    labels = agglomerative_labels(v, 2)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_more_clusters_than_prototypes_keeps_each_alone():
    assert agglomerative_labels(np.eye(3), 5).tolist() == [0, 1, 2]


def test_spherical_kmeans_recovers_blobs_and_is_deterministic():
    x, truth = _cosine_blobs(n_clusters=4, per=50, dim=8, spread=0.05, seed=1)
    c1 = spherical_kmeans(x, 4, seed=7)
    c2 = spherical_kmeans(x, 4, seed=7)
    assert torch.equal(c1, c2)
    assert torch.allclose(c1.norm(dim=1), torch.ones(4), atol=1e-5)
    assign = (F.normalize(x, dim=1) @ c1.T).argmax(1).numpy()
    assert _same_partition(assign, truth)


def test_kmeans_refills_empty_clusters():
    # two identical seeds: the second one's cluster is empty after the first assignment and must be
    # re-seeded with the worst-served point (e2), so the three centroids end on the three directions
    x = torch.tensor([[1.0, 0, 0]] * 20 + [[0, 1.0, 0], [0, 0, 1.0]])
    init = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    centres = spherical_kmeans(x, 3, init=init)
    assert torch.allclose(centres, torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]), atol=1e-6)
    # k-means++ seeding never picks a duplicate of a chosen seed here, so the codebook covers all three
    cb = kmeans_codebook(x, 3, seed=0)
    assert sorted(cb.centres.argmax(1).tolist()) == [0, 1, 2]
    assert cb.cluster_of.tolist() == [0, 1, 2]


def test_nearest_centre_upsamples_and_normalises():
    # a 1x2 feature map: left pixel along e0 (length 3), right pixel along e1 (length 0.2)
    feats = torch.tensor([[3.0, 0.0], [0.0, 0.2]]).view(1, 2, 1, 2)
    # centre 0 is e1 but 10 long: compared un-normalised it would win wherever e1 has any weight
    centres = torch.tensor([[0.0, 10.0], [1.0, 0.0]])
    idx = nearest_centre(feats, centres, size=(2, 4))
    # bilinear 1x2 -> 2x4 (align_corners=False) samples the input at x = -0.25, 0.25, 0.75, 1.25:
    # columns 0, 3 = the pixels themselves; column 1 = (2.25, 0.05), column 2 = (0.75, 0.15).
    # By cosine, columns 0-2 are nearest e0 (centre 1) and column 3 nearest e1 (centre 0).
    assert idx.tolist() == [[[1, 1, 1, 0], [1, 1, 1, 0]]]


def test_assign_clusters_maps_prototypes_through_their_cluster():
    protos = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    cb = prototype_codebook(protos, 2)
    assert cb.cluster_of.tolist() == [0, 0, 1, 1]
    feats = torch.tensor([[0.95, 0.0], [0.05, 1.0]]).view(1, 2, 1, 2)
    out = assign_clusters(feats, cb, size=(1, 2))
    assert out.tolist() == [[[0, 1]]]
    manual = Codebook(protos, torch.tensor([1, 1, 0, 0]), 2)
    assert assign_clusters(feats, manual, size=(1, 2)).tolist() == [[[1, 0]]]


def test_chunking_does_not_change_the_answer():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 5, 7, generator=g)
    centres = torch.randn(13, 8, generator=g)
    a = nearest_centre(feats, centres, (10, 14), chunk=7)
    b = nearest_centre(feats, centres, (10, 14), chunk=10_000)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(2, 3), 3)
