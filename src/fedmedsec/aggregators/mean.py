"""FedAvg: the (weighted) mean of the updates (McMahan et al., AISTATS 2017)."""

from __future__ import annotations

import torch

from ..registry import NoParams
from ._common import check_updates, client_weights, combine, guarded
from .base import AGGREGATORS, AggregationContext, AggregationResult


def mean(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
    """updates: Tensor[n, d] -> sum_i w_i x_i with w = ctx.weights (normalised) or 1/n; finite
    for finite float32 rows anywhere in the range (see ``combine``). weights: w."""
    n, _ = check_updates(updates, "fedavg")
    w = client_weights(ctx, n)
    return AggregationResult(aggregate=combine(w, updates), weights=w.to(updates.dtype))


@AGGREGATORS.register(
    "fedavg", NoParams, requirement=None,
    filters=False, needs_reference=False, mean_sensitivity=True, sum_only=True,
)
def make_mean(params: NoParams):
    """FedAvg, no precondition on (n, f) (no robustness is claimed). The only rule with
    ``mean_sensitivity`` (DP-FedAvg's accounting holds) and ``sum_only`` (a function of the sum:
    it runs under secure aggregation); both hold for equal weights, and for ctx.weights fixed
    in advance (not reported by the clients)."""
    return guarded("fedavg", params)(mean)
