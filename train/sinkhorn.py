"""Sinkhorn-Knopp: turn prototype scores into balanced soft codes (SwAV, Caron et al. 2020).

The codes are the targets of the swapped prediction: each feature's code is a distribution over
the K prototypes, and across the batch every prototype receives an equal share of the mass. That
equipartition is what stops all features collapsing onto one prototype.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(x: torch.Tensor, op: "dist.ReduceOp.RedOpType" = dist.ReduceOp.SUM) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x, op=op)
    return x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """x summed over the ranks, in place (x itself when no process group with several ranks runs)."""
    return _all_reduce(x)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             distributed: bool = False, n_total: torch.Tensor | None = None) -> torch.Tensor:
    """scores [B, K] (z . c, any dtype) -> codes float32 [B, K]; every row sums to 1, every column
    to about B/K (exactly in the limit of many iterations).

    Always fp32: exp(score / 0.05) spans e^40, far beyond bf16's 8-bit mantissa. The maximum is
    subtracted before exp so nothing overflows; the normalisations cancel that shift.
    `distributed=True` makes prototype totals and B span all ranks (one big batch); it is a no-op
    unless a process group with several ranks is running. Every rank runs the same all-reduces
    whatever its B, 0 included (it then adds nothing to the totals). `n_total`: B summed over the
    ranks, when the caller has already all-reduced it (saves one all-reduce).
    """
    s = scores.detach().float() / epsilon  # [B, K]
    k = s.shape[1]
    # An empty rank's max is -inf: it must not raise the shift the other ranks share.
    s_max = s.max() if s.numel() else s.new_full((), -math.inf)
    # B from the shape, a Python number: a tensor built from it would be a host-to-device copy.
    # Across ranks it is a sum, so there it is a device tensor (made by a fill, not a copy).
    b: float | torch.Tensor = float(s.shape[0])
    if distributed:
        # One shift for all ranks: a per-rank shift would weight the ranks unequally in the first
        # prototype normalisation.
        s_max = _all_reduce(s_max.clone(), dist.ReduceOp.MAX)
        b = _all_reduce(s.new_full((), b)) if n_total is None else n_total.float()
    q = torch.exp(s - s_max).t()  # [K, B]
    tiny = torch.finfo(q.dtype).tiny
    total = q.sum()
    if distributed:
        total = _all_reduce(total)
    q = q / total.clamp_min(tiny)
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)  # [K, 1] mass on each prototype
        if distributed:
            rows = _all_reduce(rows)
        q = q / rows.clamp_min(tiny) / k
        q = q / q.sum(dim=0, keepdim=True).clamp_min(tiny) / b  # [K, B], columns sum to 1/B
    return (q * b).t()  # [B, K], rows sum to 1
