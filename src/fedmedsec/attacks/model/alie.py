"""ALIE, "A Little Is Enough" (Baruch, Baruch and Goldberg, NeurIPS 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field
from scipy.stats import norm

from ...registry import Params
from ..base import ATTACKS, Attack, AttackContext
from ._common import (
    COLLUDING,
    check_reference,
    reference_std,
    round_size,
    send_same,
    with_knowledge,
)


def alie_z(n: int, m: int) -> float:
    """z_max of ALIE for n clients in the round of which m are malicious.

    s = floor(n/2 + 1) - m (honest clients the attackers must win over for a majority);
    z_max = Phi^{-1}((n - s) / n), the standard normal quantile (``norm.ppf``; not the cdf,
    a known bug in one public port). E.g. n = 50, m = 10: s = 16, z = ppf(0.68) = 0.4677.
    When m >= floor(n/2 + 1) the paper's s <= 0 leaves z undefined; s is clamped to 1."""
    if n < 1 or not 0 <= m <= n:
        raise ValueError(f"ALIE needs n >= 1 clients and 0 <= m <= n attackers, got n={n}, m={m}")
    s = max(1, math.floor(n / 2 + 1) - m)
    return float(norm.ppf((n - s) / n))


def alie(reference: torch.Tensor, z: float) -> torch.Tensor:
    """Crafted update, per coordinate j: mu_j - z * sigma_j, with mu, sigma the mean and the
    sample standard deviation (correction 1) of the reference updates (Baruch et al. 2019,
    Alg. 1): the honest updates (full knowledge) or the attackers' own benign updates
    (partial knowledge; the paper's attackers estimate from their own data).

    reference: Tensor[n_ref, d] -> Tensor[d]. Each coordinate stays within z * sigma_j of the
    mean, which is what lets it pass median, trimmed mean, Krum and Bulyan. For n_ref = 1
    sigma = |x| (``_common`` fallback)."""
    check_reference(reference)
    r = reference.to(torch.float64)
    return (r.mean(dim=0) - z * reference_std(r)).to(reference.dtype)


class AlieParams(Params):
    """z: override z_max (None = Phi^{-1}((n - s)/n) from the round's n and m)."""

    z: float | None = Field(None, gt=0.0)


@dataclass
class Alie(Attack):
    z: float | None = None

    def collude(self, reference, malicious, rng, ctx):
        """z from the round's n (n_ref + m with full knowledge, ctx.n_clients with partial)."""
        n = round_size(reference, malicious, ctx)
        z = self.z if self.z is not None else alie_z(n, malicious.shape[0])
        return send_same(alie(reference, z), malicious)


@ATTACKS.register("alie", AlieParams, kind="model")
def make_alie(params: AlieParams, ctx: AttackContext) -> Alie:
    return with_knowledge(Alie(threat=COLLUDING, needs_honest_updates=True, z=params.z), ctx)
