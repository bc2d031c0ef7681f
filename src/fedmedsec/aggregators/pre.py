"""Pre-aggregation steps that compose with any rule: bucketing (Karimireddy, He and Jaggi,
ICLR 2022) and nearest neighbour mixing, NNM (Allouah et al., AISTATS 2023).

A pre-aggregator maps ``updates: Tensor[n, d]`` to ``Tensor[m, d]``; the rule then runs on the
m rows (see ``pipeline.aggregate``)."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..registry import NoParams, Params
from ._common import (
    all_finite,
    check_updates,
    column_slices,
    combine,
    generator,
    pairwise_sq_dists,
)
from .base import PRE_AGGREGATORS, AggregationContext, PreconditionError


def mix(A: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    """A @ updates (A: Tensor[m, n] of non-negative rows summing to 1) in the dtype of updates,
    recomputed in float64 chunks if the fast product overflows (rows near the float32 max)."""
    out = A.to(updates.dtype) @ updates
    if all_finite(out):
        return out
    A64 = A.double()
    big = torch.finfo(updates.dtype).max
    for sl in column_slices(updates.shape[0], updates.shape[1]):
        out[:, sl] = (A64 @ updates[:, sl].double()).clamp(-big, big).to(updates.dtype)
    return out


class BucketingParams(Params):
    """s: bucket size (paper: s = 2 is typical; s = 1 is a random permutation)."""

    s: int = Field(default=2, ge=1)


def bucket_means(updates: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
    """Tensor[n, d] -> Tensor[ceil(n/s), d]: permute the rows with a uniformly random
    permutation pi (from ``gen``), then y_k = mean of x_{pi(i)} for i in [k s, min((k+1) s, n)).
    The last bucket holds n mod s rows when s does not divide n."""
    n = updates.shape[0]
    m = math.ceil(n / s)
    perm = torch.randperm(n, generator=gen)
    out = torch.empty(m, updates.shape[1], dtype=updates.dtype)
    for k in range(m):  # bucket k: rows perm[k s : (k + 1) s]; a gather of s rows, no n x n GEMM
        rows = updates.index_select(0, perm[k * s:(k + 1) * s])
        size = rows.shape[0]
        out[k] = combine(torch.full((size,), 1.0 / size, dtype=torch.float64), rows)
    return out


@PRE_AGGREGATORS.register(
    "bucketing", BucketingParams, rows=lambda n, p: math.ceil(n / p.s), requirement=None,
)
def make_bucketing(params: BucketingParams):
    """Bucketing (Karimireddy et al., ICLR 2022, Algorithm 1): random buckets of size s, one
    averaged row per bucket. Randomness from ctx.generator."""

    def bucketing(updates: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
        check_updates(updates, "bucketing")
        return bucket_means(updates, params.s, generator(ctx))

    return bucketing


def nnm_mix(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Tensor[n, d] -> Tensor[n, d]: y_i = mean of the n - f rows nearest to x_i (squared
    Euclidean distance, x_i itself included; Allouah et al. 2023, Algorithm 1)."""
    n = updates.shape[0]
    k = n - f
    msg = nnm_requirement(n, f)
    if msg is not None:
        raise PreconditionError(msg)
    D = pairwise_sq_dists(updates)
    D.fill_diagonal_(-1.0)  # x_i is always among its own neighbours
    idx = torch.topk(D, k, dim=1, largest=False).indices
    A = torch.zeros(n, n, dtype=torch.float64)
    A.scatter_(1, idx, 1.0 / k)
    return mix(A, updates)


def nnm_requirement(n: int, f: int) -> str | None:
    return None if n > f else f"nnm needs n > f, got n={n}, f={f}"


@PRE_AGGREGATORS.register("nnm", NoParams, rows=lambda n, p: n, requirement=nnm_requirement)
def make_nnm(params: NoParams):
    """Nearest neighbour mixing with the defender's f (ctx.f)."""

    def nnm(updates: torch.Tensor, ctx: AggregationContext) -> torch.Tensor:
        check_updates(updates, "nnm")
        return nnm_mix(updates, ctx.f)

    return nnm
