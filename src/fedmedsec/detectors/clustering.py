"""The clustering step of FLAME (Nguyen et al., USENIX Security 2022) as a detector."""

from __future__ import annotations

import torch

from ..aggregators.flame import flame_admitted
from ..registry import NoParams
from .base import DETECTORS, DetectionContext, DetectionResult


@DETECTORS.register("flame_cluster", NoParams)
def make_flame_cluster(params: NoParams):
    """Flag every row outside the largest HDBSCAN cluster of pairwise cosine distances
    1 - cos(x_i, x_j), with min_cluster_size = n // 2 + 1 (FLAME's Algorithm 1, step 1:
    ``aggregators.flame.flame_admitted``, the same function the FLAME rule uses). Fewer than
    3 rows, or HDBSCAN finding no cluster: nothing is flagged. Stateless; scores: None."""

    def flame_cluster(updates: torch.Tensor, ctx: DetectionContext) -> DetectionResult:
        if updates.dim() != 2 or not updates.is_floating_point():
            raise ValueError(f"flame_cluster: updates must be a floating Tensor[n, d], got {tuple(updates.shape)}")
        return DetectionResult(~flame_admitted(updates), None)

    return flame_cluster


@DETECTORS.register("none", NoParams)
def make_none(params: NoParams):
    """No detection: nothing is flagged (the default)."""

    def none(updates: torch.Tensor, ctx: DetectionContext) -> DetectionResult:
        return DetectionResult(torch.zeros(updates.shape[0], dtype=torch.bool), None)

    return none
