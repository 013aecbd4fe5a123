"""From dense features to cluster maps: a codebook of unit vectors, each belonging to one cluster.

  prototype_codebook   the K learned prototypes, grouped into C clusters by agglomerative
                       clustering (cosine distance, average linkage): the paper's evaluation.
  kmeans_codebook      C centroids of spherical k-means on sampled pixel features (alternative for
                       models whose prototypes are not meaningful, e.g. PiCIE-style evaluation).
  assign_clusters      every pixel -> its nearest codebook vector (cosine) -> that vector's cluster,
                       with the features bilinearly upsampled to the label size and re-normalised.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import cut_tree, linkage


@dataclass(frozen=True)
class Codebook:
    centres: torch.Tensor  # float32 [M, D], unit rows
    cluster_of: torch.Tensor  # int64 [M]: the cluster (0..n_clusters-1) of each centre
    n_clusters: int


def agglomerative_labels(vectors: np.ndarray, n_clusters: int) -> np.ndarray:
    """int64 [K]: cluster 0..n_clusters-1 of each row of `vectors` [K, D]; cosine, average linkage.

    Clusters are numbered in order of their first member, so the result does not depend on
    scipy's internal numbering.
    """
    k = vectors.shape[0]
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if n_clusters >= k:
        return np.arange(k, dtype=np.int64)
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    tree = linkage(v, method="average", metric="cosine")
    raw = cut_tree(tree, n_clusters=[n_clusters]).reshape(-1)  # [K], labels 0..n_clusters-1
    _, first = np.unique(raw, return_index=True)  # first member of each raw label
    rank = np.argsort(np.argsort(first))  # raw label -> its rank by first member
    return rank[raw].astype(np.int64)


def prototype_codebook(prototypes: torch.Tensor, n_clusters: int) -> Codebook:
    """The prototypes [K, D] (rows of `model.prototypes.weight`) grouped into n_clusters."""
    protos = F.normalize(prototypes.detach().float().cpu(), dim=1)
    labels = agglomerative_labels(protos.numpy(), n_clusters)
    return Codebook(protos, torch.from_numpy(labels), n_clusters)


def kmeans_plus_plus(x: torch.Tensor, n_clusters: int, gen: torch.Generator) -> torch.Tensor:
    """[C, D] seeds drawn from unit rows x [N, D] with probability ~ squared cosine distance."""
    n = x.shape[0]
    centres = torch.empty(n_clusters, x.shape[1])
    centres[0] = x[torch.randint(n, (1,), generator=gen)]
    dist = 1.0 - x @ centres[0]  # [N] cosine distance to the nearest chosen seed
    for c in range(1, n_clusters):
        w = dist.clamp_min(0) ** 2
        idx = torch.multinomial(w, 1, generator=gen) if w.sum() > 0 else torch.randint(n, (1,), generator=gen)
        centres[c] = x[idx]
        dist = torch.minimum(dist, 1.0 - x @ centres[c])
    return centres


def spherical_kmeans(x: torch.Tensor, n_clusters: int, iters: int = 30, seed: int = 0,
                     init: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [C, D] unit centroids of vectors x [N, D] (cosine k-means, k-means++ seeding or `init`).

    Deterministic for a seed. An emptied cluster is re-seeded with the point worst served by the
    current centroids, so exactly C centroids come back whenever N >= C distinct points exist.
    """
    x = F.normalize(x.float(), dim=1)
    n = x.shape[0]
    if n < n_clusters:
        raise ValueError(f"k-means needs at least {n_clusters} samples, got {n}")
    if init is None:
        centres = kmeans_plus_plus(x, n_clusters, torch.Generator().manual_seed(seed))
    else:
        centres = F.normalize(init.float(), dim=1)
    for _ in range(iters):
        sim = x @ centres.T  # [N, C]
        best, assign = sim.max(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters)
        for c in torch.nonzero(counts == 0).flatten().tolist():
            far = int(best.argmin())
            sums[c] = x[far]
            best[far] = 2.0  # not picked again for another empty cluster
        new = F.normalize(sums, dim=1)
        if torch.allclose(new, centres, atol=1e-6):
            break
        centres = new
    return centres


def kmeans_codebook(features: torch.Tensor, n_clusters: int, seed: int = 0, iters: int = 30) -> Codebook:
    """Spherical k-means centroids of sampled pixel features [N, D]; centroid c is cluster c."""
    centres = spherical_kmeans(features, n_clusters, iters=iters, seed=seed)
    return Codebook(centres, torch.arange(n_clusters), n_clusters)


def nearest_centre(features: torch.Tensor, centres: torch.Tensor, size: tuple[int, int],
                   chunk: int = 32768) -> torch.Tensor:
    """int64 [B, H, W]: index of the most similar centre [M, D] for every pixel.

    features [B, D, h, w] are upsampled (bilinear) to size = (H, W) and L2-normalised before the
    comparison; pixels are processed in chunks so B*H*W x M similarities are never held at once.
    """
    b, d = features.shape[:2]
    centres = F.normalize(centres.to(features.device, torch.float32), dim=1)
    up = F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False)
    up = F.normalize(up, dim=1).permute(0, 2, 3, 1).reshape(-1, d)  # [B*H*W, D]
    out = torch.empty(up.shape[0], dtype=torch.int64, device=features.device)
    for s in range(0, up.shape[0], chunk):
        out[s:s + chunk] = (up[s:s + chunk] @ centres.T).argmax(1)
    return out.view(b, *size)


def assign_clusters(features: torch.Tensor, codebook: Codebook, size: tuple[int, int]) -> torch.Tensor:
    """int64 [B, H, W] cluster map: pixel -> nearest codebook centre -> its cluster."""
    idx = nearest_centre(features, codebook.centres, size)
    return codebook.cluster_of.to(idx.device)[idx]
