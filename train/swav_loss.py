"""The dense SwAV loss with positive groups (Eqn 5 of the method).

For one level (pixel or region) we have n sampled features z_i (unit vectors), each in a positive
group g(i). With prototypes C (unit rows):
    scores  s_i = z_i . C^T                                   [n, K]
    codes   q_i = Sinkhorn(s)_i  (fp32, no gradient)          [n, K]
    target  qbar_g = mean of q_i over the members of group g  [G, K]
    loss    L = mean_i  -sum_k qbar_g(i),k log softmax(s_i / tau)_k
Averaging the codes over a group is what makes it contrastive: every member must predict the
consensus assignment of all the places that show the same source pixel (or the same region).
Total: L = lambda L_pixel + (1 - lambda) L_region.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from train.sinkhorn import all_reduce_sum, sinkhorn


def group_mean(values: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """values [n, K], group [n] int64 in 0..n_groups-1 -> per-group mean [n_groups, K]."""
    sums = values.new_zeros((n_groups, values.shape[1])).index_add_(0, group, values)
    # Counted by index_add_ rather than bincount, which reads the largest group id back to the
    # host (a GPU sync) to size its output; n_groups already gives the size.
    counts = values.new_zeros(n_groups).index_add_(0, group, values.new_ones(group.shape[0])).clamp_min(1)  # [G]
    return sums / counts[:, None]


def group_swav_loss(scores: torch.Tensor, group: torch.Tensor, n_groups: int, temperature: float = 0.1,
                    epsilon: float = 0.05, iterations: int = 3, distributed: bool = False) -> torch.Tensor:
    """scores [n, K] = z . C^T, group [n] int64 -> scalar loss (fp32).

    One process: the mean over the n samples; n = 0 gives a zero that still carries the graph.
    distributed: this rank's share of the mean over all ranks' samples (its sum / their count), so
    the shares add up to the loss of one big batch whatever each rank's n. No early return there:
    every rank runs the same all-reduces, and an empty rank's share is a zero on the graph, so its
    backward (and DDP's gradient all-reduce) runs too."""
    if not distributed:
        if scores.shape[0] == 0:
            return scores.float().sum() * 0.0
        q = sinkhorn(scores, epsilon, iterations)  # [n, K], fp32, no grad
    else:
        # n from the shape, summed by a fill + all-reduce: no host-to-device copy, no host read.
        n_total = all_reduce_sum(scores.new_full((), scores.shape[0], dtype=torch.float32))
        q = sinkhorn(scores, epsilon, iterations, distributed, n_total)
    target = group_mean(q, group, n_groups)[group]  # [n, K]
    log_p = F.log_softmax(scores.float() / temperature, dim=1)  # [n, K]
    per_sample = -(target * log_p).sum(dim=1)  # [n]
    if not distributed:
        return per_sample.mean()
    return per_sample.sum() / n_total.clamp_min(1)


@dataclass
class LossTerms:
    total: torch.Tensor
    pixel: torch.Tensor
    region: torch.Tensor


def dense_swav_loss(features: torch.Tensor, prototypes: torch.Tensor,
                    pixel_index: torch.Tensor, pixel_group: torch.Tensor, n_pixel_groups: int,
                    region_index: torch.Tensor, region_group: torch.Tensor, n_region_groups: int,
                    lam: float = 0.5, temperature: float = 0.1, epsilon: float = 0.05,
                    iterations: int = 3, distributed: bool = False) -> LossTerms:
    """features [L, D] (every feature location of the step, unit norm), prototypes [K, D] (unit rows);
    *_index [n] int64 rows of `features` that were sampled, *_group [n] their positive group.
    A level whose weight is 0 is not computed. `distributed`: every term is this rank's share,
    and the terms summed over the ranks are the loss of all ranks' samples as one batch."""
    zero = features.float().sum() * 0.0
    pixel = region = zero
    if lam > 0:
        s = features[pixel_index] @ prototypes.t()  # [n_pix, K]
        pixel = group_swav_loss(s, pixel_group, n_pixel_groups, temperature, epsilon, iterations, distributed)
    if lam < 1:
        s = features[region_index] @ prototypes.t()  # [n_reg, K]
        region = group_swav_loss(s, region_group, n_region_groups, temperature, epsilon, iterations, distributed)
    return LossTerms(lam * pixel + (1 - lam) * region, pixel, region)
