"""Clustering filters from the Byzantine-robustness benchmarks: SignGuard (Xu, Huang, Zhang
and Zhao, "SignGuard: Byzantine-robust federated learning through collaborative malicious
gradient filtering", ICDCS 2022) and ClippedClustering (Li, Xie, Wang, Ma and Lu, "An
experimental study of Byzantine-robust aggregation schemes in federated learning", IEEE
Trans. Big Data 2023; the Blades benchmark's implementation)."""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from ..registry import Params
from ._common import client_weights, combine, cosine_matrix, generator, guarded, row_norms
from .base import AGGREGATORS, AggregationContext, AggregationResult, honest_majority


def _pick_largest(labels: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest cluster (labels >= 0); on equal sizes the cluster with the
    smallest ``tiebreak`` mean (a per-row float64 value independent of the row order)."""
    valid = labels[labels >= 0]
    if valid.size == 0:
        return np.ones(labels.shape, dtype=bool)
    ids, counts = np.unique(valid, return_counts=True)
    best = ids[counts == counts.max()]
    if best.size > 1:
        means = [float(np.mean(tiebreak[labels == c])) for c in best]
        best = best[[int(np.argmin(means))]]
    return labels == best[0]


def _clip_and_average(
    updates: torch.Tensor, keep: torch.Tensor, norms: torch.Tensor, bound: float,
    ctx: AggregationContext,
) -> AggregationResult:
    """mean over the kept rows (ctx.weights renormalised over them) of x_i min(1, bound/||x_i||)."""
    n = updates.shape[0]
    share = client_weights(ctx, n) * keep.double()
    share = share / share.sum()
    scale = torch.where(norms > bound, bound / norms.clamp(min=1e-300), torch.ones_like(norms))
    return AggregationResult(combine(share * scale, updates), share.to(updates.dtype))


class SignGuardParams(Params):
    """lower, upper: L and R, rows with L <= ||x_i|| / median_j ||x_j|| <= R pass the norm
    filter (paper: 0.1 and 3.0); coord_fraction: fraction of the d coordinates sampled for the
    sign statistics (at least one coordinate)."""

    lower: float = Field(default=0.1, ge=0.0)
    upper: float = Field(default=3.0, gt=0.0)
    coord_fraction: float = Field(default=0.1, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self):
        if self.lower > self.upper:
            raise ValueError(
                f"defense.lower = {self.lower} must be <= defense.upper = {self.upper}")
        return self


def sign_features(updates: torch.Tensor, coords: torch.Tensor) -> np.ndarray:
    """[n, 3] float64: the fractions of positive, zero and negative values of each row on the
    sampled coordinates ``coords``."""
    sub = updates.index_select(1, coords)
    k = coords.numel()
    pos = (sub > 0).sum(1).double() / k
    zero = (sub == 0).sum(1).double() / k
    neg = (sub < 0).sum(1).double() / k
    return torch.stack([pos, zero, neg], 1).numpy()


def sign_cluster(features: np.ndarray, k: int) -> np.ndarray:
    """Boolean [n]: the largest MeanShift cluster of the sign features (scikit-learn MeanShift,
    as in the paper, flat kernel, every point seeded and assigned; bandwidth from
    ``estimate_bandwidth`` (quantile 0.3, all points), floored at 1/(2k) so that only identical
    feature vectors merge when it would be 0 (fractions of k coordinates differ by >= 1/k))."""
    from sklearn.cluster import MeanShift, estimate_bandwidth  # local: slow to import

    n = features.shape[0]
    if n < 2 or np.ptp(features, axis=0).max() == 0:
        return np.ones(n, dtype=bool)
    with threadpool_limits(1):  # n points: thread start-up would cost more than the work
        bw = max(float(estimate_bandwidth(features, quantile=0.3)), 0.5 / k)
        labels = MeanShift(bandwidth=bw, cluster_all=True).fit_predict(features)
    return _pick_largest(labels, features @ np.array([1.0, 2.0, 3.0]))


@AGGREGATORS.register(
    "signguard", SignGuardParams, requirement=honest_majority("signguard"),
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_signguard(params: SignGuardParams):
    """SignGuard (Xu et al., ICDCS 2022, Algorithm 1), plain variant (sign statistics only):

    1. norm filter: M = median_i ||x_i||; S1 = {i : L M <= ||x_i|| <= R M};
    2. sign filter: sample ceil(coord_fraction d) coordinates without replacement
       (ctx.generator); features (fraction > 0, == 0, < 0) per row; S2 = the largest MeanShift
       cluster (``sign_cluster``);
    3. S = S1 & S2 (if empty, which the paper does not cover: S1, our choice);
    4. agg = mean over S of x_i min(1, M / ||x_i||) (clipped to the median norm).

    Needs n > 2f: the paper assumes a benign majority (the median norm and the largest cluster
    are benign). weights: each kept row's share before clipping, 0 for the filtered rows.
    """

    @guarded("signguard", params)
    def signguard(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        d = updates.shape[1]
        norms = row_norms(updates)
        M = float(norms.quantile(0.5))  # the median (mean of the middle two for even n)
        s1 = (norms >= params.lower * M) & (norms <= params.upper * M)
        k = min(d, max(1, math.ceil(params.coord_fraction * d)))
        coords = torch.randperm(d, generator=generator(ctx))[:k].sort().values
        s2 = torch.from_numpy(sign_cluster(sign_features(updates, coords), k))
        keep = s1 & s2
        if not keep.any():
            keep = s1
        return _clip_and_average(updates, keep, norms, M, ctx)

    return signguard


class ClippedClusteringParams(Params):
    """history: clip to the median of all norms seen so far by this rule (ctx.state
    "norm_history", as in Blades) instead of the round's median norm; max_tau: upper bound on
    the clipping threshold (Blades: 1e5)."""

    history: bool = True
    max_tau: float = Field(default=1e5, gt=0.0)


def cosine_two_clusters(updates: torch.Tensor) -> np.ndarray:
    """Boolean [n]: the larger of the 2 clusters of agglomerative clustering (scikit-learn,
    average linkage) on the precomputed cosine distances 1 - cos(x_i, x_j) (rows of norm 0 have
    cosine 0 with everything). On equal sizes: the cluster with the smaller mean distance to
    the other rows (the more central one). n < 3: all rows."""
    from sklearn.cluster import AgglomerativeClustering  # local: slow to import

    n = updates.shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    dist = (1.0 - cosine_matrix(updates)).clamp(min=0.0)
    dist.fill_diagonal_(0.0)
    dist = ((dist + dist.T) / 2).numpy()
    with threadpool_limits(1):
        labels = AgglomerativeClustering(
            n_clusters=2, metric="precomputed", linkage="average"
        ).fit_predict(dist)
    return _pick_largest(labels, dist.mean(axis=1))


@AGGREGATORS.register(
    "clipped_clustering", ClippedClusteringParams,
    requirement=honest_majority("clipped_clustering"),
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_clipped_clustering(params: ClippedClusteringParams):
    """ClippedClustering (Li et al. 2023; Blades' ``Clippedclustering``):

    1. tau = min(max_tau, median of the norms): of the history of all update norms seen by this
       rule, this round's included (ctx.state["norm_history"], Blades' choice; history=False:
       this round's norms only); clip x_i to x_i min(1, tau / ||x_i||);
    2. agglomerative clustering, average linkage, of the cosine distances into 2 clusters
       (``cosine_two_clusters``; clipping does not change cosines);
    3. agg = mean of the clipped rows of the larger cluster.

    Needs n > 2f: the larger cluster is taken as the honest one. weights: each kept row's share
    before clipping, 0 for the other cluster. Mutates ctx.state (history) by design.
    """

    @guarded("clipped_clustering", params)
    def clipped_clustering(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        norms = row_norms(updates)
        if params.history:
            hist: list = ctx.state.setdefault("norm_history", [])
            hist.extend(norms.tolist())
            med = float(np.median(np.asarray(hist, dtype=np.float64)))
        else:
            med = float(np.median(norms.numpy()))
        tau = min(med, params.max_tau)
        keep = torch.from_numpy(cosine_two_clusters(updates))
        return _clip_and_average(updates, keep, norms, tau, ctx)

    return clipped_clustering
