"""Clipping rules: centered clipping (Karimireddy, He and Jaggi, ICML 2021) and norm bounding
with optional weak DP noise (Sun et al., "Can you really backdoor federated learning?", 2019).
Both are tuned in the units of the update norm; left unset, tau and max_norm default to the
round's median distance / norm, which needs no tuning per model."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import Params
from ._common import client_weights, combine, dists_to, generator, guarded, row_norms
from .base import AGGREGATORS, AggregationContext, AggregationResult, honest_majority


class CenteredClippingParams(Params):
    """tau: clipping radius around the current center (None: the median distance of the rows
    to the center at each iteration, the mean of the middle two for even n; a scale-free default
    of ours: the paper tunes tau per task, and with an honest majority the median distance is
    an honest one);
    iters: L, clipping iterations."""

    tau: float | None = Field(default=None, gt=0.0)
    iters: int = Field(default=1, ge=1)


def centered_clipping_coefficients(
    X: torch.Tensor, v0: torch.Tensor, w: torch.Tensor, tau: float | None, iters: int
) -> torch.Tensor:
    """CC in coefficient space over the rows [x_1..x_n, v_0].

    v_{l+1} = v_l + sum_i w_i clip(x_i - v_l, tau), clip(z, tau) = z min(1, tau/||z||).
    Each v_l is a combination c^T [X; v_0] with c >= 0 summing to 1; with s_i = w_i
    min(1, tau/||x_i - v_l||): c <- (1 - sum_i s_i) c + [s; 0]. The distances ||x_i - v_l|| are
    computed directly from X and v_l (``dists_to``: one pass, no n x d differences), and v_l is
    formed once per iteration after the first (O(n d L) in all). Returns c: Tensor[n + 1]
    float64 (the last entry is v_0's coefficient).
    """
    n = w.numel()
    c = torch.zeros(n + 1, dtype=torch.float64)
    c[n] = 1.0
    for it in range(iters):
        v = v0 if it == 0 else combine_with(c, X, v0)
        dist = dists_to(X, v)
        t = float(dist.quantile(0.5)) if tau is None else tau  # mean of the middle two if n even
        s = w * torch.where(dist > t, t / dist.clamp(min=1e-300), torch.ones_like(dist))
        c = c * (1.0 - s.sum())
        c[:n] += s
    return c


def combine_with(c: torch.Tensor, updates: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """c[:n]^T X + c[n] v0 in X's dtype, without stacking v0 under X (no n x d copy)."""
    n = updates.shape[0]
    agg = combine(c[:n], updates)
    if float(c[n]) != 0.0:
        big = torch.finfo(updates.dtype).max
        agg = (agg.double() + float(c[n]) * v0.double()).clamp(-big, big).to(updates.dtype)
    return agg


@AGGREGATORS.register(
    "centered_clipping", CenteredClippingParams,
    requirement=honest_majority("centered_clipping"),
    filters=False, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_centered_clipping(params: CenteredClippingParams):
    """Centered clipping (Karimireddy et al., ICML 2021, Eq. CC):
    v <- v + sum_i w_i clip(x_i - v, tau) for L = iters iterations, starting at v = ctx.previous
    (the previous round's aggregate; zeros if None); w = ctx.weights or 1/n.
    Needs n > 2f: the paper's guarantee is for a Byzantine fraction delta < 1/2 (and our
    default tau, the median distance, is honest only with an honest majority).
    weights: each row's coefficient in the output (agg = sum_i weights_i x_i + c_0 v_0)."""

    @guarded("centered_clipping", params)
    def centered_clipping(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = updates.shape
        v0 = ctx.previous
        if v0 is None:
            v0 = torch.zeros(d, dtype=updates.dtype)
        elif v0.shape != (d,):
            raise ValueError(f"ctx.previous has shape {tuple(v0.shape)}, expected ({d},)")
        w = client_weights(ctx, n)
        c = centered_clipping_coefficients(updates, v0, w, params.tau, params.iters)
        agg = combine_with(c, updates, v0)
        return AggregationResult(agg, c[:n].to(updates.dtype))

    return centered_clipping


class NormBoundingParams(Params):
    """max_norm: M, every update is scaled to norm at most M; noise_sigma: standard deviation of
    the Gaussian noise added to each coordinate of the aggregate (weak DP; 0 = off).
    max_norm None: the median update norm of the round (the mean of the middle two for even n;
    our scale-free default; Sun et al.
    fix M per task, and with an honest majority the median norm is an honest norm)."""

    max_norm: float | None = Field(default=None, gt=0.0)
    noise_sigma: float = Field(default=0.0, ge=0.0)


def norm_bounding_params_requirement(params: NormBoundingParams, n: int, f: int) -> str | None:
    if params.max_norm is None and n <= 2 * f:
        return (f"norm_bounding with defense.max_norm unset clips to the median norm, which "
                f"needs n > 2f (an honest majority), got n={n}, f={f}")
    return None


@AGGREGATORS.register(
    "norm_bounding", NormBoundingParams, requirement=None,
    params_requirement=norm_bounding_params_requirement,
    filters=False, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_norm_bounding(params: NormBoundingParams):
    """Norm bounding (Sun et al. 2019): agg = sum_i w_i x_i / max(1, ||x_i|| / M) + N(0, sigma^2 I)
    with sigma = noise_sigma (noise from ctx.generator). weights: w_i min(1, M/||x_i||), each
    row's coefficient in the aggregate. Requirement: none with a fixed max_norm (Sun et al.
    bound each client's influence whatever their number); with max_norm unset (our median
    default) n > 2f."""

    @guarded("norm_bounding", params)
    def norm_bounding(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = updates.shape
        norms = row_norms(updates)
        m = float(norms.quantile(0.5)) if params.max_norm is None else params.max_norm
        scale = torch.where(
            norms > m, m / norms.clamp(min=1e-300),
            torch.ones_like(norms),
        )
        coef = client_weights(ctx, n) * scale
        agg = combine(coef, updates)
        if params.noise_sigma > 0:
            noise = torch.randn(d, generator=generator(ctx), dtype=updates.dtype)
            agg = agg + params.noise_sigma * noise
        return AggregationResult(agg, coef.to(updates.dtype))

    return norm_bounding
