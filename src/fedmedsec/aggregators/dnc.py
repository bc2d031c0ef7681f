"""Divide-and-Conquer, DnC (Shejwalkar and Houmansadr, NDSS 2021, Algorithm 2)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import Params
from ._common import client_weights, combine, generator, guarded
from .base import AGGREGATORS, AggregationContext, AggregationResult


class DncParams(Params):
    """niters: repetitions; b: coordinates sampled per repetition (all if b >= d);
    c: filtering fraction, c * f rows are dropped per repetition (paper: niters=1, b=10000, c=1)."""

    niters: int = Field(default=1, ge=1)
    b: int = Field(default=10_000, ge=1)
    c: float = Field(default=1.0, ge=0.0)


def dnc_requirement(n: int, f: int) -> str | None:
    if n <= 2 * f:
        return f"dnc needs n > 2f (an honest majority), got n={n}, f={f}"
    return None


def dnc_params_requirement(params: DncParams, n: int, f: int) -> str | None:
    n_drop = int(params.c * f)
    if n_drop >= n:
        return f"defense.c = {params.c}: dnc drops floor(c f) = {n_drop} of n = {n} rows"
    return None


def dnc_good_set(
    updates: torch.Tensor, f: int, niters: int, b: int, c: float, gen: torch.Generator
) -> torch.Tensor:
    """Boolean Tensor[n] of rows kept by DnC. Each repetition: sample b coordinates r (uniformly
    without replacement), center x_i[r] by their mean, take the top right singular vector v of
    the centered [n, b] matrix, score s_i = <x_i[r] - mu, v>^2, keep the n - floor(c f) rows
    with the lowest scores. The result is the intersection over repetitions (if that is empty,
    which the paper does not cover, the rows kept in the most repetitions)."""
    n, d = updates.shape
    n_drop = int(c * f)
    if n_drop >= n:
        raise ValueError(f"defense.c = {c}: dnc drops floor(c f) = {n_drop} of n = {n} rows")
    good = torch.ones(n, dtype=torch.bool)
    kept = torch.zeros(n, dtype=torch.long)
    for _ in range(niters):
        if b >= d:
            sub = updates
        else:
            r = torch.randperm(d, generator=gen)[:b].sort().values
            sub = updates.index_select(1, r)
        Z = sub.double()
        Z = Z - Z.mean(0, keepdim=True)
        # top right singular vector of Z via the top eigenvector of Z Z^T (n x n):
        # <z_i, v>^2 = sigma_1^2 u_{1i}^2
        evals, evecs = torch.linalg.eigh(Z @ Z.T)
        scores = evals[-1].clamp(min=0.0) * evecs[:, -1] ** 2
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.argsort(scores, stable=True)[: n - n_drop]] = True
        good &= keep
        kept += keep
    if not good.any():  # empty intersection: keep the rows kept most often (our choice)
        good = kept == kept.max()
    return good


@AGGREGATORS.register(
    "dnc", DncParams, requirement=dnc_requirement, params_requirement=dnc_params_requirement,
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_dnc(params: DncParams):
    """DnC: agg = mean of the rows in the good set (``dnc_good_set``), weighted by ctx.weights
    renormalised over it (equal by default). Coordinates sampled with ctx.generator.
    Needs n > 2f, implied by the paper: its spectral filter (from robust mean estimation,
    Diakonikolas et al.) separates a minority of outliers from the bulk, and floor(c f) < n.
    weights: each kept row's share, 0 for the dropped ones."""

    @guarded("dnc", params)
    def dnc(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = updates.shape[0]
        good = dnc_good_set(updates, ctx.f, params.niters, params.b, params.c, generator(ctx))
        w = client_weights(ctx, n) * good
        w = w / w.sum()
        return AggregationResult(combine(w, updates), w.to(updates.dtype))

    return dnc
