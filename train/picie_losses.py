"""PiCIE's maths (Cho, Mall, Bala, Hariharan, CVPR 2021), as pure functions the trainer composes.

    equivariant_crop   the geometric transform G (random resized crop + horizontal flip), applied
                       to view 1's image before the network and to view 2's feature map after it,
                       so both feature maps show the same crop of the frame, pixel for pixel
    grayscale          the one photometric transform shared/photometric.py does not have
    kmeans_plus_plus   seeds of k-means (squared Euclidean D^2 sampling)
    lloyd              full-batch k-means iterations from given seeds
    minibatch_update   one mini-batch k-means step (per-centroid learning rate 1 / points seen)
    nearest_centroid   cluster labels and squared distances
    cluster_weights    the per-cluster cross-entropy weights of PiCIE's released code
    picie_loss         within-view + cross-view cross-entropy with distance-to-centroid logits

Features are unit vectors (PiCIE's "cosine" metric normalises them) and k-means is Euclidean on
them, as PiCIE's faiss L2 index is; the centroids are plain means, not re-normalised.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601 luma as torchvision rounds it (rgb_to_grayscale)


def equivariant_crop(x: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
                     size: tuple[int, int]) -> torch.Tensor:
    """x [B, C, H, W], boxes [B, 4] (y0, x0, y1, x1) as fractions of the height and width, flips [B]
    bool -> [B, C, h, w] with (h, w) = size: each box resampled bilinearly, mirrored left-right where
    flips is set.

    Coordinates are fractions of the map's extent, never pixel indices, so an image and its stride-s
    feature map cut with the same box and flip agree: output cell (i, j) of both is centred on the
    same point of the frame. (PiCIE's released code rounds the crop to whole pixels of each map
    separately, which lets the two views drift apart by up to one feature cell.)
    """
    b = x.shape[0]
    h, w = size
    dev, dt = x.device, torch.float32
    boxes = boxes.to(dev, dt)
    u = (torch.arange(w, device=dev, dtype=dt) + 0.5) / w  # [w] output cell centres, 0..1
    v = (torch.arange(h, device=dev, dtype=dt) + 0.5) / h  # [h]
    u = torch.where(flips.to(dev).view(b, 1), 1.0 - u.view(1, w), u.view(1, w))  # [B, w]
    gx = boxes[:, 1:2] + u * (boxes[:, 3:4] - boxes[:, 1:2])  # [B, w] fraction of the width
    gy = boxes[:, 0:1] + v.view(1, h) * (boxes[:, 2:3] - boxes[:, 0:1])  # [B, h]
    # grid_sample's -1..1 spans the outer edges of the map (align_corners=False), as fractions do
    grid = torch.stack([(2 * gx - 1).view(b, 1, w).expand(b, h, w),
                        (2 * gy - 1).view(b, h, 1).expand(b, h, w)], dim=-1)  # [B, h, w, 2] (x, y)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """x [B, 3, H, W] float, on [B] bool -> [B, 3, H, W]: luma in all three channels where on."""
    # Python-scalar weights: a weight tensor made per call would be a blocking host-to-GPU copy per step
    gray = (LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]).expand_as(x)
    return torch.where(on.to(x.device).view(-1, 1, 1, 1), gray, x)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """x [N, D], centroids [K, D] -> [N, K] squared Euclidean distances (fp32, clamped at 0)."""
    x, c = x.float(), centroids.float()
    d = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1).view(1, -1)
    return d.clamp_min_(0)


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D] -> (labels int64 [N], squared distance to that centroid [N])."""
    d, labels = squared_distances(x, centroids).min(dim=1)
    return labels, d


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """[K, D] seeds drawn from x [N, D] (CPU generator), each with probability ~ its squared distance
    to the nearest seed already drawn (Arthur and Vassilvitskii 2007)."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least {k} points, got {n}")
    x = x.float()
    seeds = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    seeds[0] = x[int(torch.randint(n, (1,), generator=gen))]
    d = squared_distances(x, seeds[:1])[:, 0]  # [N] to the nearest seed so far
    for c in range(1, k):
        w = d.cpu().double()
        i = int(torch.multinomial(w, 1, generator=gen)) if w.sum() > 0 else int(torch.randint(n, (1,), generator=gen))
        seeds[c] = x[i]
        d = torch.minimum(d, squared_distances(x, seeds[c:c + 1])[:, 0])
    return seeds


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch k-means from seeds: x [N, D], centroids [K, D] -> (centroids [K, D], counts [K]).

    A cluster left empty takes the point farthest from its centroid (faiss splits a large cluster
    instead; either way K centroids come back), so later mini-batch updates never divide by zero.
    """
    x = x.float()
    c = centroids.float().clone()
    k = c.shape[0]
    counts = torch.zeros(k, dtype=torch.float32, device=x.device)
    for _ in range(iterations):
        labels, d = nearest_centroid(x, c)
        counts = torch.bincount(labels, minlength=k).float()
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1).unsqueeze(1)
        for e in torch.nonzero(counts == 0).flatten().tolist():
            far = int(d.argmax())
            new[e], d[far], counts[e] = x[far], -1.0, 1.0
        if torch.equal(new, c):
            break
        c = new
    return c, counts


def minibatch_update(centroids: torch.Tensor, counts: torch.Tensor,
                     x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One mini-batch k-means step (Sculley 2010, as PiCIE runs it): centroids [K, D], counts [K]
    (points each centroid has absorbed), batch x [M, D] -> (centroids, counts).

    Centroid k moves towards the mean m_k of its n_k batch points by n_k / (counts_k + n_k), so it
    stays the running mean of every point it was ever assigned.
    """
    x = x.float()
    k = centroids.shape[0]
    labels, _ = nearest_centroid(x, centroids)
    n = torch.bincount(labels, minlength=k).float()  # [K]
    sums = torch.zeros_like(centroids, dtype=torch.float32).index_add_(0, labels, x)
    new_counts = counts.float() + n
    rate = (n / new_counts.clamp_min(1e-6)).unsqueeze(1)  # [K, 1], 0 for clusters without points
    mean = sums / n.clamp_min(1).unsqueeze(1)
    return centroids.float() + rate * (mean - centroids.float()), new_counts


def cluster_weights(label_counts: torch.Tensor) -> torch.Tensor:
    """[K] pixel counts of each cluster in an epoch's labels -> [K] cross-entropy weights.

    PiCIE's released code weights each cluster by its share of the labelled pixels (counts / total);
    with cross_entropy's weighted mean that makes frequent clusters count more, not less.
    """
    c = label_counts.float()
    return c / c.sum().clamp_min(1)


@dataclass
class PicieTerms:
    total: torch.Tensor  # (within + across) / 2
    within: torch.Tensor  # view 1 against its own clusters, view 2 against its own
    across: torch.Tensor  # view 1 against view 2's clusters and labels, and the reverse


def picie_loss(f1: torch.Tensor, f2: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor,
               c1: torch.Tensor, c2: torch.Tensor, w1: torch.Tensor | None = None,
               w2: torch.Tensor | None = None) -> PicieTerms:
    """PiCIE's clustering loss on aligned pixel features of the two views.

    f1, f2 [N, D]: unit features of the same N frame pixels in view 1 and view 2 (fp32);
    y1, y2 [N]: their cluster labels under the view's own centroids c1, c2 [K, D];
    w1, w2 [K]: per-cluster weights of the cross-entropy (None: unweighted).
    The logit of cluster k is -||f - c_k||^2 (the paper's distance-to-centroid softmax); PiCIE's
    released code uses f . c_k, which for unit f is half of that plus (1 + ||c_k||^2) / 2.
    """
    def ce(f: torch.Tensor, c: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(-squared_distances(f, c), y, weight=w)

    within = (ce(f1, c1, y1, w1) + ce(f2, c2, y2, w2)) / 2
    across = (ce(f1, c2, y2, w2) + ce(f2, c1, y1, w1)) / 2
    return PicieTerms((within + across) / 2, within, across)
