"""FLTrust (Cao, Fang, Liu and Gong, NDSS 2021)."""

from __future__ import annotations

import torch

from ..registry import NoParams
from ._common import combine, dots_with, guarded, row_norms
from .base import AGGREGATORS, AggregationContext, AggregationResult


@AGGREGATORS.register(
    "fltrust", NoParams, requirement=None,
    filters=True, needs_reference=True, mean_sensitivity=False, sum_only=False,
)
def make_fltrust(params: NoParams):
    """FLTrust: g0 = ctx.reference, the server's update on its clean root set
    (``needs_reference``: the server must compute it every round).

    TS_i = ReLU(cos(x_i, g0)); x_i is rescaled to ||g0||; agg = sum_i TS_i ||g0||/||x_i|| x_i /
    sum_i TS_i, and the zero update if every TS_i = 0. Rows of norm 0 get trust 0. The output
    norm is at most ||g0|| (a convex combination of vectors of norm ||g0||).
    No requirement on (n, f): the trust comes from the root set, not from a majority, and Cao
    et al. design it to tolerate any number of malicious clients (their experiments go beyond
    half). Cosines and norms in float64 (no float32 overflow).
    weights: TS_i / sum_j TS_j (each row's share of the rescaled average; 0 = excluded).
    """

    @guarded("fltrust", params)
    def fltrust(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = updates.shape
        g0 = ctx.reference
        if g0 is None:
            raise ValueError(
                "fltrust needs the server's root-set update: ctx.reference is None "
                "(configure a root dataset for the server)"
            )
        if g0.shape != (d,):
            raise ValueError(f"ctx.reference has shape {tuple(g0.shape)}, expected ({d},)")
        norms = row_norms(updates)
        g0_norm = float(row_norms(g0.unsqueeze(0))[0])
        dots = dots_with(updates, g0)
        denom = norms * g0_norm
        cos = torch.where(denom > 0, dots / denom.clamp(min=1e-300), torch.zeros_like(dots))
        ts = cos.clamp(min=0.0, max=1.0)
        total = ts.sum()
        if total <= 0:
            return AggregationResult(
                torch.zeros(d, dtype=updates.dtype), torch.zeros(n, dtype=updates.dtype)
            )
        share = ts / total
        coef = share * g0_norm / norms.clamp(min=1e-300)
        return AggregationResult(combine(coef, updates), share.to(updates.dtype))

    return fltrust
