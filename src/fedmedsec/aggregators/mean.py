"""FedAvg: the (weighted) mean of the updates (McMahan et al., AISTATS 2017)."""

from __future__ import annotations

import torch

from ..registry import NoParams
from .base import AGGREGATORS, AggregationContext, AggregationResult


def mean(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
    """updates: Tensor[n, d] -> sum_i w_i x_i with w = ctx.weights or 1/n."""
    n = updates.shape[0]
    w = ctx.weights if ctx.weights is not None else torch.full((n,), 1.0 / n, dtype=updates.dtype)
    w = w.to(updates.dtype)
    return AggregationResult(aggregate=w @ updates, weights=w)


@AGGREGATORS.register("fedavg", NoParams, filters=False, mean_sensitivity=True, sum_only=True)
def make_mean(params: NoParams) -> "type[mean]":
    return mean
