"""FLAME (Nguyen et al., USENIX Security 2022): cluster, clip, add noise."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ..registry import Params
from ._common import combine, cosine_matrix, generator, guarded, row_norms
from .base import AGGREGATORS, AggregationContext, AggregationResult, honest_majority


class FlameParams(Params):
    """lam: noise level lambda; the noise standard deviation is lambda * S_t, S_t the median
    update norm (paper: lambda = 0.001 for image classification)."""

    lam: float = Field(default=0.001, ge=0.0)


def flame_admitted(updates: torch.Tensor) -> torch.Tensor:
    """Boolean Tensor[n]: the rows HDBSCAN puts in the largest cluster.

    HDBSCAN (scikit-learn) on the precomputed cosine distances 1 - cos(x_i, x_j), with
    min_cluster_size = n // 2 + 1, min_samples = 1, allow_single_cluster = True (the paper:
    the majority cluster is admitted, outliers and smaller clusters are dropped). If HDBSCAN
    labels everything as noise, every row is admitted (no majority could be found).
    """
    from sklearn.cluster import HDBSCAN  # local import: sklearn is slow to import
    from threadpoolctl import threadpool_limits

    n = updates.shape[0]
    if n < 3:
        return torch.ones(n, dtype=torch.bool)
    dist = (1.0 - cosine_matrix(updates)).clamp(min=0.0)
    dist.fill_diagonal_(0.0)
    dist = ((dist + dist.T) / 2).numpy()
    with threadpool_limits(1):  # n points: thread start-up would cost more than the work
        labels = HDBSCAN(
            metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1,
            allow_single_cluster=True, copy=False,  # dist is our own temporary
        ).fit_predict(dist)
    valid = labels[labels >= 0]
    if valid.size == 0:
        return torch.ones(n, dtype=torch.bool)
    majority = np.bincount(valid).argmax()
    return torch.from_numpy(labels == majority)


@AGGREGATORS.register(
    "flame", FlameParams, requirement=honest_majority("flame"),
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_flame(params: FlameParams):
    """FLAME (Nguyen et al. 2022, Algorithm 1) on updates x_i (deltas from the global model):

    1. admit the majority HDBSCAN cluster of cosine distances (``flame_admitted``);
    2. S_t = median_i ||x_i|| over ALL n updates; clip admitted x_i to x_i min(1, S_t/||x_i||);
    3. agg = mean of the clipped admitted updates + N(0, (lambda S_t)^2 I) (ctx.generator).

    Needs n > 2f: the paper assumes fewer than n/2 malicious clients (the admitted cluster is
    the majority one, and S_t is a median).
    weights: 1/L on the L admitted rows (before clipping), 0 for the excluded ones.
    """

    @guarded("flame", params)
    def flame(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        d = updates.shape[1]
        admitted = flame_admitted(updates)
        norms = row_norms(updates)
        S = float(norms.quantile(0.5))  # the median norm (mean of the middle two if n is even)
        scale = torch.where(norms > S, S / norms.clamp(min=1e-300), torch.ones_like(norms))
        share = admitted.double() / admitted.sum()
        agg = combine(share * scale, updates)
        if params.lam > 0 and S > 0:
            noise = torch.randn(d, generator=generator(ctx), dtype=updates.dtype)
            agg = agg + (params.lam * S) * noise
        return AggregationResult(agg, share.to(updates.dtype))

    return flame
