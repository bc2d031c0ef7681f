"""Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning"
(USENIX Security 2020), full-knowledge directed deviation, on updates (models minus G).

s_j = sign of the mean honest update's coordinate j (the direction the global parameter
moves without attack; 0 counts as +1). The attackers deviate opposite to s.

Trimmed mean / median (Sec. 4.2-4.3): with w_max,j / w_min,j the honest max / min of
coordinate j and b = 2, each of the m attackers samples independently, per coordinate,
  s_j = -1 (push up):   uniform in [w_max,j, b w_max,j]  if w_max,j > 0,
                        uniform in [w_max,j, w_max,j / b] otherwise;
  s_j = +1 (push down): uniform in [w_min,j / b, w_min,j] if w_min,j > 0,
                        uniform in [b w_min,j, w_min,j]  otherwise,
so every crafted value lies beyond the honest range in the direction -s_j.

Krum (Sec. 4.1): all attackers send w_1 - G = -lambda * s. lambda starts at the paper's
upper bound, with n clients (m attackers, n_h = n - m honest), d parameters:
  lambda_0 = 1 / ((n - 2m - 1) sqrt(d)) * min_{i honest} sum_{l in N_i} ||x_l - x_i||
             + 1 / sqrt(d) * max_{i honest} ||x_i||
(N_i: the n - m - 2 honest updates nearest x_i) and halves until Krum, with the defender's f
(ctx.f, or m when 0), selects a crafted update, or lambda < ``lambda_threshold``.

Partial knowledge (Sec. 4, "partial knowledge"): the attackers know only their own
before-attack (benign) updates, the reference rows. s_j comes from their mean mu_j. Trimmed
mean / median: with sigma_j their std (``_common`` fallback sigma = |x| for one row), each
attacker samples, per coordinate, uniformly in [mu_j + 3 sigma_j, mu_j + 4 sigma_j] when
s_j = -1 and in [mu_j - 4 sigma_j, mu_j - 3 sigma_j] when s_j = +1. Krum: the same search with
the reference rows standing in for the honest ones (and the round's n in lambda_0); when the
simulated set [reference; m crafted] has 2 rows or fewer (one attacker) Krum cannot be
simulated and lambda_0 is sent without the search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ...registry import Params
from ..base import ATTACKS, Attack, AttackContext
from ._common import (
    COLLUDING,
    check_reference,
    pairwise_sq_dists,
    reference_std,
    round_size,
    send_same,
    with_knowledge,
)

TargetRule = Literal["krum", "trimmed_mean", "median"]


def benign_direction(reference: torch.Tensor) -> torch.Tensor:
    """s = sign(mean reference update), Tensor[d] in {-1, +1} (0 -> +1), float64."""
    s = torch.sign(reference.to(torch.float64).mean(dim=0))
    return torch.where(s == 0, torch.ones_like(s), s)


def fang_trimmed_mean_partial(
    reference: torch.Tensor, m: int, rng: torch.Generator
) -> torch.Tensor:
    """Partial knowledge: Tensor[n_ref, d] own benign updates -> Tensor[m, d], per coordinate
    uniform in [mu + 3 sigma, mu + 4 sigma] (s = -1) or [mu - 4 sigma, mu - 3 sigma] (s = +1)."""
    check_reference(reference)
    h = reference.to(torch.float64)
    s = benign_direction(h)
    mu, sigma = h.mean(dim=0), reference_std(h)
    lo = torch.where(s < 0, mu + 3.0 * sigma, mu - 4.0 * sigma)
    u = torch.rand((m, h.shape[1]), generator=rng, dtype=torch.float64)
    return (lo + u * sigma).to(reference.dtype)


def fang_trimmed_mean(
    honest: torch.Tensor, m: int, rng: torch.Generator, b: float = 2.0
) -> torch.Tensor:
    """Tensor[n_h, d] -> Tensor[m, d] crafted updates against trimmed mean and median."""
    check_reference(honest)
    h = honest.to(torch.float64)
    s = benign_direction(h)
    w_max, w_min = h.max(dim=0).values, h.min(dim=0).values
    # s = -1: interval from w_max outwards (up); s = +1: from w_min outwards (down)
    up_lo = w_max
    up_hi = torch.where(w_max > 0, b * w_max, w_max / b)
    down_lo = torch.where(w_min > 0, w_min / b, b * w_min)
    down_hi = w_min
    lo = torch.where(s < 0, up_lo, down_lo)
    hi = torch.where(s < 0, up_hi, down_hi)
    u = torch.rand((m, h.shape[1]), generator=rng, dtype=torch.float64)
    return (lo + u * (hi - lo)).to(honest.dtype)


def krum_index(updates: torch.Tensor, f: int) -> int:
    """Krum's choice (Blanchard et al., NeurIPS 2017): argmin_i sum of squared distances to
    its n - f - 2 nearest other updates (at least 1). Tensor[n, d] -> row index. Local to
    the attack, so attacks do not depend on the aggregators package."""
    n = updates.shape[0]
    k = min(n - 1, max(1, n - f - 2))
    d2 = pairwise_sq_dists(updates)
    d2.fill_diagonal_(float("inf"))
    scores = d2.topk(k, dim=1, largest=False).values.sum(dim=1)
    return int(torch.argmin(scores))


def fang_krum_lambda_bound(honest: torch.Tensor, m: int, n: int | None = None) -> float:
    """lambda_0, the paper's upper bound on lambda (module docstring); n = n_h + m unless
    given (partial knowledge: the round's n, with the reference rows as the benign set)."""
    h = honest.to(torch.float64)
    n_h, d = h.shape
    n = n_h + m if n is None else n
    dist = pairwise_sq_dists(h).sqrt()
    k = min(n_h - 1, max(0, n - m - 2))
    if k > 0:
        dist.fill_diagonal_(float("inf"))
        near = dist.topk(k, dim=1, largest=False).values.sum(dim=1).min()
    else:
        near = torch.tensor(0.0, dtype=torch.float64)
    denom = max(1, n - 2 * m - 1) * math.sqrt(d)
    return float(near / denom + h.norm(dim=1).max() / math.sqrt(d))


def fang_krum(
    honest: torch.Tensor, m: int, f: int | None = None, threshold: float = 1e-5,
    n: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Tensor[n_h, d] -> (crafted update -lambda * s, Tensor[d]; lambda). Halve lambda from
    the bound until Krum over [honest; m copies] picks a copy or lambda < threshold.
    n: the round's n for lambda_0 (default n_h + m). With 2 rows or fewer in
    [honest; m copies] Krum is undefined: lambda_0 is returned unsearched."""
    check_reference(honest)
    h = honest.to(torch.float64)
    n_h = h.shape[0]
    f = m if not f else f
    s = benign_direction(h)
    lam = fang_krum_lambda_bound(h, m, n)
    if n_h + max(1, m) <= 2:
        return (-lam * s).to(honest.dtype), lam
    while True:
        mal = -lam * s
        stacked = torch.cat([h, mal.unsqueeze(0).expand(max(1, m), -1)])
        if krum_index(stacked, f) >= n_h or lam < threshold:
            return mal.to(honest.dtype), lam
        lam /= 2.0


class FangParams(Params):
    """target_rule: the aggregator the attack is tailored to. lambda_threshold: Krum search
    stops below it. b: the trimmed-mean/median sampling factor (the paper's b = 2)."""

    target_rule: TargetRule = "trimmed_mean"
    lambda_threshold: float = Field(1e-5, gt=0.0)
    b: float = Field(2.0, gt=1.0)


@dataclass
class Fang(Attack):
    target_rule: TargetRule = "trimmed_mean"
    lambda_threshold: float = 1e-5
    b: float = 2.0
    last_lambda: float | None = None

    def collude(self, reference, malicious, rng, ctx):
        m = malicious.shape[0]
        partial = ctx.knowledge == "partial"
        if self.target_rule == "krum":
            n = round_size(reference, malicious, ctx)
            mal, self.last_lambda = fang_krum(reference, m, ctx.f, self.lambda_threshold, n)
            return send_same(mal, malicious)
        if partial:
            return fang_trimmed_mean_partial(reference, m, rng).to(malicious.dtype)
        return fang_trimmed_mean(reference, m, rng, self.b).to(malicious.dtype)


@ATTACKS.register("fang", FangParams, kind="model")
def make_fang(params: FangParams, ctx: AttackContext) -> Fang:
    return with_knowledge(Fang(
        threat=COLLUDING,
        needs_honest_updates=True,
        target_rule=params.target_rule,
        lambda_threshold=params.lambda_threshold,
        b=params.b,
    ), ctx)
