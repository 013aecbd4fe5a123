"""Positive groups at feature resolution (docs/design.md#constants, sampling row).

The network's output has one feature per 4x4 pixel cell (output stride 4). A feature location
"shows" the pixel at the centre of its cell; its maps are sampled there (nearest), which is what
the data loader does after augmentation. Two keys are derived per location:

  pixel key : which source pixel it shows, quantised to the source frame's own feature grid
              (cells of `cell` x `cell` source pixels), so two locations match when they look at
              the same feature cell of the same source frame; -1 = shows no source pixel.
  region key: its region id; -1 = no region.

A positive group = all sampled locations (in any image of the step) with one key. Locations whose
key occurs only once are useless (nothing to agree with) and are never sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

# 288k features at 384x768 with 16 images (docs/design.md#constants): 16 * 96 * 192 = 294,912 feature locations.
REFERENCE_LOCATIONS = 16 * (384 // 4) * (768 // 4)


def feature_budget(features_per_step: int, n_locations: int) -> int:
    """The number of features to sample when a step has `n_locations` feature locations: the
    paper's number scaled by size, so tiny runs sample the same share of their locations."""
    return max(2, round(features_per_step * n_locations / REFERENCE_LOCATIONS))


def split_budget(n: int, lam: float) -> tuple[int, int]:
    """(pixel, region) sample counts: all to one level at lambda 1 or 0, else half each."""
    if lam >= 1:
        return n, 0
    if lam <= 0:
        return 0, n
    return n - n // 2, n // 2


def centre_rows(size: int, stride: int) -> torch.Tensor:
    """Pixel row (or column) that each feature cell samples: [size // stride] int64."""
    return torch.arange(size // stride) * stride + stride // 2


def pixel_keys(source_ids: torch.Tensor, height: int, width: int, cell: int) -> torch.Tensor:
    """source_ids int64 [...] (source * H * W + y * W + x of an H x W source frame, -1 = none)
    -> keys int64 [...]: source * Hc * Wc + (y // cell) * Wc + x // cell, -1 = none."""
    hc, wc = -(-height // cell), -(-width // cell)
    valid = source_ids >= 0
    s = source_ids.clamp_min(0)
    frame, rest = s // (height * width), s % (height * width)
    y, x = rest // width, rest % width
    keys = frame * (hc * wc) + (y // cell) * wc + x // cell
    return torch.where(valid, keys, torch.full_like(keys, -1))


def region_keys(regions: torch.Tensor) -> torch.Tensor:
    """region ids (any int dtype, 0 = none) -> int64 keys, -1 = none."""
    r = regions.to(torch.int64)
    return torch.where(r > 0, r, torch.full_like(r, -1))


def sample_groups(keys: torch.Tensor, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """keys int64 [L] (-1 = unusable) -> (index [m] int64 into keys, group [m] int64 in 0..G-1, G).

    Draws up to n locations uniformly among those whose key occurs at least twice, then drops the
    ones left alone in their group by the draw, so every returned group has >= 2 members and all
    members of a group share one key. m <= n. Runs on the keys' device; the draw uses `generator`
    (a CPU generator, so the draw is the same on every device).
    """
    cand = torch.nonzero(keys >= 0).squeeze(1)  # [c]
    if cand.numel() == 0 or n <= 0:
        empty = keys.new_zeros(0)
        return empty, empty, 0
    _, inv, counts = torch.unique(keys[cand], return_inverse=True, return_counts=True)
    cand = cand[counts[inv] >= 2]
    if cand.numel() > n:
        pick = torch.randperm(cand.numel(), generator=generator)[:n].to(cand.device)
        cand = cand[pick.sort().values]  # sorted: the features are gathered in memory order
    _, inv, counts = torch.unique(keys[cand], return_inverse=True, return_counts=True)
    cand = cand[counts[inv] >= 2]
    _, group = torch.unique(keys[cand], return_inverse=True)
    n_groups = int(group.max().item()) + 1 if group.numel() else 0
    return cand, group, n_groups


class PositiveGroups(NamedTuple):
    """One level's sampled positives, in the order dense_swav_loss takes them."""

    index: torch.Tensor  # [m] int64 rows of the step's features [B * h * w, D]
    group: torch.Tensor  # [m] int64 positive group of each row, 0..count-1
    count: int  # G, a Python int: it sizes tensors, so it never has to be read back from a device


@dataclass(frozen=True)
class Positives:
    """A step's positive groups at both levels and the feature grid their indices refer to."""

    pixel: PositiveGroups
    region: PositiveGroups
    locations: int  # B * h * w, the rows of the step's features

    @classmethod
    def from_batch(cls, batch: dict[str, Any], device: torch.device) -> Positives:
        """From a loader batch (train/shard_loader.py collate_groups), the index tensors copied to
        `device` without waiting for the copy (the loader pins them on CUDA)."""
        def level(name: str) -> PositiveGroups:
            return PositiveGroups(batch[f"{name}_index"].to(device, non_blocking=True),
                                  batch[f"{name}_group"].to(device, non_blocking=True), batch[f"{name}_groups"])

        return cls(level("pixel"), level("region"), batch["locations"])

    def counts(self) -> tuple[int, int, int, int]:
        """(pixel samples, pixel groups, region samples, region groups), from shapes: no device read."""
        return self.pixel.index.shape[0], self.pixel.count, self.region.index.shape[0], self.region.count
