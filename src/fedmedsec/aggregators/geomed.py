"""Geometric median by the smoothed Weiszfeld algorithm (RFA; Pillutla, Kakade and Harchaoui,
IEEE TSP 2022, Algorithm 2)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import Params
from ._common import client_weights, combine, guarded, robust_gram
from .base import AGGREGATORS, AggregationContext, AggregationResult, honest_majority


class GeometricMedianParams(Params):
    """nu: smoothing (distances are floored at nu); max_iter: Weiszfeld iterations at most;
    tol: stop when an iteration moves the iterate by at most tol times the median distance of
    the rows to it (the scale of the honest rows under an honest majority)."""

    nu: float = Field(default=1e-6, gt=0.0)
    max_iter: int = Field(default=100, ge=1)
    tol: float = Field(default=1e-7, ge=0.0)


def weiszfeld_coefficients(
    G: torch.Tensor, alpha: torch.Tensor, nu: float, max_iter: int, tol: float
) -> tuple[torch.Tensor, int]:
    """Smoothed Weiszfeld in coefficient space.

    Every iterate is an affine combination v = sum_i a_i x_i (sum a = 1) of the updates, so
    ||v - x_i||^2 = G_ii - 2 (G a)_i + a^T G a with G the (centered) Gram matrix: each
    iteration costs O(n^2) instead of O(n d). Iteration (RFA, Pillutla et al.):
        beta_i = alpha_i / max(nu, ||v - x_i||),   v <- sum_i beta_i x_i / sum_i beta_i,
    from v = sum_i alpha_i x_i.

    Stopping: when ||v_{t+1} - v_t|| <= tol * median_i ||v_{t+1} - x_i||, or after max_iter.
    RFA's reference code stops on the objective's relative decrease, which ends early when one
    far row dominates the objective (a row at 1e9 makes every honest-scale improvement a
    relative change below 1e-6); the iterate's step measured against the rows' median distance
    does not depend on the outliers. Returns the coefficients of the last iterate (each
    smoothed Weiszfeld step decreases the smoothed objective, so it is never worse than the
    weighted mean; keeping the "best" objective instead would stall at float64 resolution when
    a far row dominates the objective) and the number of iterations run.
    """
    g = G.diagonal()

    def dists(a: torch.Tensor) -> torch.Tensor:
        return (g - 2.0 * (G @ a) + a @ G @ a).clamp(min=0.0).sqrt()

    a = alpha.clone()
    dist = dists(a)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is read after the loop
        beta = alpha / dist.clamp(min=nu)
        new = beta / beta.sum()
        step = new - a
        moved = float((step @ G @ step).clamp(min=0.0).sqrt())
        a = new
        dist = dists(a)
        if moved <= tol * float(dist.median()):
            break
    return a, it


@AGGREGATORS.register(
    "geometric_median", GeometricMedianParams,
    requirement=honest_majority("geometric_median"),
    filters=False, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_geometric_median(params: GeometricMedianParams):
    """Geometric median (RFA): argmin_v sum_i alpha_i ||v - x_i||, alpha = ctx.weights (equal
    by default), by smoothed Weiszfeld. Needs n > 2f: the geometric median's breakdown point is
    1/2 (Pillutla et al., Sec. on robustness), so it resists only a Byzantine minority.
    weights: the final coefficients a_i (agg = sum a_i x_i, a_i > 0, sum 1)."""

    @guarded("geometric_median", params)
    def geometric_median(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = updates.shape[0]
        alpha = client_weights(ctx, n)
        a, _ = weiszfeld_coefficients(
            robust_gram(updates), alpha, params.nu, params.max_iter, params.tol
        )
        return AggregationResult(combine(a, updates), a.to(updates.dtype))

    return geometric_median
