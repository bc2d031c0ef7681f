"""Min-Max and Min-Sum (Shejwalkar and Houmansadr, "Manipulating the Byzantine", NDSS 2021).

AGR-agnostic attacks: with mu the mean of the reference updates x_1..x_{n_ref} (the honest
updates under full knowledge, the attackers' own benign updates under partial knowledge) and
a perturbation direction p, send mal = mu + gamma * p with the LARGEST gamma such that

    min-max:  max_i ||mal - x_i||      <= max_{i,j} ||x_i - x_j||
    min-sum:  sum_i ||mal - x_i||^2    <= max_i sum_j ||x_i - x_j||^2

p in {"std": -std(x), "unit_vec" (alias "unit_mean"): -mu / ||mu||, "sign": -sign(mu)}.

Both objectives are convex in gamma and hold at gamma = 0 (the mean lies in the honest hull,
and it minimises the sum of squared distances), so the feasible gammas form an interval
[.., gamma*] containing 0 and a bisection finds gamma*. The paper's search (Alg. 1) starts at
gamma_init = 10 with step gamma_init / 2: on success move gamma up by the step, on failure
down, halve the step, and return the LAST SUCCESSFUL gamma (returning the last tried gamma,
or moving the wrong way, is the known reimplementation error, blades #73). We do the same
bisection, but first double gamma_init while it is feasible, so gamma* is found even when it
exceeds 2 * gamma_init, and stop when the bracket is within a relative tau. The returned
vector (in the input dtype) is then checked against the constraint with direct float64
differences and gamma shrunk until it holds: the constraint holds to float64 rounding even
for rows far from the origin. One reference row: see ``_common`` (sigma = |x|, thresholds
sqrt(2) ||sigma|| and 2 ||sigma||^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ...registry import Params
from ..base import ATTACKS, Attack, AttackContext
from ._common import (
    COLLUDING,
    check_reference,
    max_pairwise_dist,
    max_sum_sq_dist,
    reference_std,
    send_same,
    with_knowledge,
)

Perturbation = Literal["std", "unit_vec", "unit_mean", "sign"]


def perturbation(reference: torch.Tensor, kind: Perturbation) -> torch.Tensor:
    """The direction p (Tensor[d], float64) for Tensor[n_ref, d] reference updates:
    -std (sample std, correction 1; ``_common`` fallback for one row), -mu / ||mu||
    ("unit_vec" = "unit_mean"; 0 if mu = 0) or -sign(mu)."""
    h = reference.to(torch.float64)
    mu = h.mean(dim=0)
    if kind == "std":
        return -reference_std(h)
    if kind in ("unit_vec", "unit_mean"):
        norm = mu.norm()
        return -mu / norm if norm > 0 else torch.zeros_like(mu)
    if kind == "sign":
        return -torch.sign(mu)
    raise ValueError(
        f"attack.perturbation = {kind!r}: choose one of std, unit_vec, unit_mean, sign"
    )


def largest_gamma(
    feasible: Callable[[float], bool], gamma_init: float = 10.0, tau: float = 1e-5,
    max_iter: int = 200, gamma_max: float = float("inf"),
) -> float:
    """Largest gamma >= 0 with ``feasible(gamma)``, for a feasible set [0, gamma*].

    Expand: while gamma_init * 2^k succeeds it is the last success (``gamma_max`` caps the
    expansion: returned when feasible). Bisect between the last success and the first
    failure: success -> step up, failure -> step down, the step halves; stop at
    (fail - success) <= tau * success or after ``max_iter`` evaluations. Returns the last
    successful gamma (0 if only gamma = 0 is feasible)."""
    succ, fail, it = 0.0, min(gamma_init, gamma_max), 0
    while feasible(fail):
        succ, it = fail, it + 1
        if succ >= gamma_max or it >= max_iter:
            return succ
        fail = min(fail * 2.0, gamma_max)
    while fail - succ > tau * succ and it < max_iter:
        mid = 0.5 * (succ + fail)
        if feasible(mid):
            succ = mid
        else:
            fail = mid
        it += 1
    return succ


def _craft(reference, kind, gamma_init, tau, objective, threshold):
    check_reference(reference)
    h = reference.to(torch.float64)
    mu = h.mean(dim=0)
    p = perturbation(h, kind)
    if not bool(torch.any(p != 0)):
        return mu.to(reference.dtype), 0.0  # no direction: every gamma gives mu
    # ||mu + g p - x_i||^2 = a_i + 2 g b_i + g^2 c: one O(n d) pass, then O(n) per gamma tried
    diff = mu - h
    a, b, c = (diff * diff).sum(dim=1), diff @ p, float(p @ p)

    def feasible(gamma: float) -> bool:
        return objective((a + 2.0 * gamma * b + gamma * gamma * c).clamp_min(0.0)) <= threshold

    gamma = largest_gamma(feasible, gamma_init, tau)

    def sent(g: float) -> torch.Tensor:  # the vector as it leaves, in the input dtype
        return (mu + g * p).to(reference.dtype)

    def holds(v: torch.Tensor) -> bool:  # direct float64 differences, no expansion
        diff = v.to(torch.float64) - h
        return objective((diff * diff).sum(dim=1)) <= threshold

    for _ in range(64):
        if holds(sent(gamma)):
            return sent(gamma), gamma
        gamma *= 1.0 - max(tau, 1e-12)
    return sent(0.0), 0.0


def _max_dist(sq_dists: torch.Tensor) -> float:
    return float(sq_dists.max().sqrt())


def _sum_sq_dist(sq_dists: torch.Tensor) -> float:
    return float(sq_dists.sum())


def min_max(
    reference: torch.Tensor, kind: Perturbation = "std", gamma_init: float = 10.0,
    tau: float = 1e-5,
) -> tuple[torch.Tensor, float]:
    """Min-Max: Tensor[n_ref, d] -> (mal Tensor[d], gamma); see the module docstring."""
    check_reference(reference)
    return _craft(reference, kind, gamma_init, tau, _max_dist, max_pairwise_dist(reference))


def min_sum(
    reference: torch.Tensor, kind: Perturbation = "std", gamma_init: float = 10.0,
    tau: float = 1e-5,
) -> tuple[torch.Tensor, float]:
    """Min-Sum: Tensor[n_ref, d] -> (mal Tensor[d], gamma); see the module docstring."""
    check_reference(reference)
    return _craft(reference, kind, gamma_init, tau, _sum_sq_dist, max_sum_sq_dist(reference))


class MinMaxParams(Params):
    perturbation: Perturbation = "std"
    gamma_init: float = Field(10.0, gt=0.0)
    tau: float = Field(1e-5, gt=0.0, lt=1.0)


@dataclass
class MinMax(Attack):
    rule: Callable = min_max
    perturbation: Perturbation = "std"
    gamma_init: float = 10.0
    tau: float = 1e-5
    last_gamma: float | None = None  # the gamma of the latest round, for the logs

    def collude(self, reference, malicious, rng, ctx):
        mal, self.last_gamma = self.rule(reference, self.perturbation, self.gamma_init, self.tau)
        return send_same(mal, malicious)


def _make(rule):
    def make(params: MinMaxParams, ctx: AttackContext) -> MinMax:
        return with_knowledge(MinMax(
            threat=COLLUDING,
            needs_honest_updates=True,
            rule=rule,
            perturbation=params.perturbation,
            gamma_init=params.gamma_init,
            tau=params.tau,
        ), ctx)

    return make


make_min_max = ATTACKS.register("min_max", MinMaxParams, kind="model")(_make(min_max))
make_min_sum = ATTACKS.register("min_sum", MinMaxParams, kind="model")(_make(min_sum))
