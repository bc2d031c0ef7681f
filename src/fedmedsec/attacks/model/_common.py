"""Helpers shared by the colluding model attacks: statistics of the benign reference updates.

The reference rows are what the attackers know of the benign updates: the round's honest
updates under full knowledge, their own benign updates under partial knowledge
(Shejwalkar and Houmansadr, NDSS 2021, Sec. III-B; ``AttackContext.knowledge``).

One reference row (a single attacker with partial knowledge, or one honest client) has no
spread: its sample std is undefined and the largest honest distance is 0, so every
statistics-based attack would collapse to sending the benign update. The papers never
consider that case (NDSS 2021 uses m = 10 of 50). Our fallback, one rule for every attack:
the attacker assumes a per-coordinate coefficient of variation of ``SINGLE_ROW_CV`` (= 1)
around its one update x, i.e. sigma = |x|; distances follow from that model: two benign
updates x_i = mu + sigma * e_i, e ~ N(0, I), are E||x_i - x_j||^2 = 2 ||sigma||^2 apart, so
the min-max threshold is sqrt(2) ||sigma|| and the min-sum threshold 2 ||sigma||^2.
"""

from __future__ import annotations

import math

import torch

from ..base import Attack, AttackContext, ThreatModel

#: The colluding, omniscient adversary of ALIE, IPM, min-max/min-sum and Fang: the attackers
#: see the round's honest updates (simulation) and all send the crafted vector.
#: ``Attack.threat_for("partial")`` turns "honest updates" into "own benign updates".
COLLUDING = ThreatModel("availability", "colluding hospitals", "honest updates")

#: Coefficient of variation the attackers assume when they know a single benign update.
SINGLE_ROW_CV = 1.0


def check_reference(reference: torch.Tensor) -> None:
    if reference.ndim != 2 or reference.shape[0] < 1:
        raise ValueError(
            f"reference updates must be Tensor[n_ref >= 1, d], got {tuple(reference.shape)}"
        )


def reference_std(reference: torch.Tensor) -> torch.Tensor:
    """Per-coordinate sample standard deviation (correction 1) of Tensor[n_ref, d], float64;
    for n_ref = 1 the fallback sigma = SINGLE_ROW_CV * |x| (module docstring)."""
    r = reference.to(torch.float64)
    if r.shape[0] < 2:
        return SINGLE_ROW_CV * r[0].abs()
    return r.std(dim=0, correction=1)


def pairwise_sq_dists(x: torch.Tensor) -> torch.Tensor:
    """Tensor[n, d] -> Tensor[n, n] float64 squared Euclidean distances.

    Gram matrix of the rows centred at their coordinate-wise median, in float64:
    ||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij with G = (X - med)(X - med)^T. An uncentred Gram
    loses the distances of rows far from the origin to cancellation (offset 1e4, spread 1e-2:
    relative errors ~1e-6, enough to break min-max's constraint); centred, the error is float64
    rounding of the distances to the median, which stays inside the bulk even when a minority
    of rows is huge. Clamped at 0, diagonal exactly 0."""
    x64 = x.to(torch.float64)
    c = x64 - x64.median(dim=0).values
    G = c @ c.T
    g = G.diagonal()
    d2 = (g[:, None] + g[None, :] - 2.0 * G).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    return d2


def max_pairwise_dist(reference: torch.Tensor) -> float:
    """max_{i,j} ||x_i - x_j|| over the reference rows (min-max's threshold); for one row,
    sqrt(2) ||sigma|| with the fallback sigma (module docstring)."""
    if reference.shape[0] < 2:
        return math.sqrt(2.0) * float(reference_std(reference).norm())
    return float(pairwise_sq_dists(reference).max().sqrt())


def max_sum_sq_dist(reference: torch.Tensor) -> float:
    """max_i sum_j ||x_i - x_j||^2 over the reference rows (min-sum's threshold); for one
    row, 2 ||sigma||^2 with the fallback sigma (module docstring)."""
    if reference.shape[0] < 2:
        return 2.0 * float(reference_std(reference).square().sum())
    return float(pairwise_sq_dists(reference).sum(dim=1).max())


def round_size(reference: torch.Tensor, malicious: torch.Tensor, ctx: AttackContext) -> int:
    """n, the clients in the round: n_ref + m under full knowledge (the reference IS the
    honest set); ctx.n_clients under partial knowledge (the reference is the attackers' own
    rows), never less than m + 1."""
    m = malicious.shape[0]
    if ctx.knowledge == "partial":
        return max(int(ctx.n_clients), m + 1)
    return reference.shape[0] + m


def send_same(vec: torch.Tensor, malicious: torch.Tensor) -> torch.Tensor:
    """All m colluding attackers send the same crafted Tensor[d]: -> Tensor[m, d]."""
    return vec.to(malicious.dtype).unsqueeze(0).repeat(malicious.shape[0], 1)


def with_knowledge(attack: Attack, ctx: AttackContext) -> Attack:
    """Set the attack's threat model to the knowledge level of ``ctx`` (factories of the
    colluding attacks call it; ``Attack.threat_for`` gives any other level)."""
    attack.threat = attack.threat_for(ctx.knowledge)
    return attack
