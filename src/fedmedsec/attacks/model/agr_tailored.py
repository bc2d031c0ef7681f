"""AGR-tailored model poisoning (Shejwalkar and Houmansadr, "Manipulating the Byzantine:
Optimizing Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Sec. IV).

All m attackers send mal(gamma) = mu + gamma * p, with mu the mean of the benign reference
updates x_1..x_{n_ref} and p a perturbation: "std" -std(x), "unit_mean" -mu / ||mu||, "sign"
-sign(mu) (the paper's p^std, p^uv, p^sgn). gamma is chosen against the deployed rule f_agr,
which the attack runs itself (``fedmedsec.aggregators.AGGREGATORS``, the same code and
parameters as the server, so the simulated selection is exactly the server's), over
[benign rows; m copies of mal(gamma)]:

- Krum, Multi-Krum, Bulyan (rules that select updates): the LARGEST gamma such that the rule
  still selects the crafted update (Krum: its output is a crafted row; Multi-Krum: all m
  crafted rows are among the averaged ones; Bulyan: all m are in its selection set), found by
  the expand-and-bisect search of ``min_max.largest_gamma`` (the paper's Alg. 1 with an
  expansion phase, returning the last success), accepted only when the copies are selected
  both after and before the benign rows, then lowered by a relative ``margin`` (1e-3): at
  the exact boundary the server's row order and float rounding decide Krum's pick (measured:
  1 of 200 random placements missed without the margin, 0 with it). "All m", not "one": the copies are identical,
  so Multi-Krum can admit one copy at the cut (stable order) while dropping the rest, and
  Bulyan's last Krum passes score with one neighbour, where two identical copies score 0 at
  any gamma: with "one" the boundary is meaningless. If the rule rejects mal even at
  gamma = 0 the attack sends mu (``last.selected = False``).
- Median, trimmed mean: the gamma maximising the paper's objective
  ||f_agr(benign + m mal(gamma)) - mu||_2 (mu = the benign mean). A geometric scan
  gamma_init * 2^k, k = -20.., up to ``gamma_max`` brackets the global maximum (a step search
  from gamma_init alone can stop at a local one), then the paper's step-halving search refines
  it to a relative tau; among (near) ties the smaller gamma wins (both rules saturate once the
  copies leave the benign range: further gamma only makes the update larger).

Knowledge: "full" uses the round's honest updates as the benign rows (n = n_h + m, the
defender's f = ctx.f). "partial" (NDSS 2021 Sec. III-B): the reference is the attackers' own
benign updates; they estimate mu and sigma from them (``_common`` fallback for one row) and,
since the rule needs a benign set of the round's size, simulate it with n - m draws
x_i = mu + sigma * e_i, e_i ~ N(0, I) from the collusion generator (our choice: it matches
the two moments they know and runs the rule with the real n and f). If the rule's
requirement (e.g. Krum's n > 2f + 2) fails for the simulated (n, f), f is lowered to the
largest value that satisfies it; if none does, mu is sent. Pre-aggregation steps
(bucketing, NNM) are not simulated. Cost: about 60-200 evaluations of the rule per round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, ValidationError

from ...registry import Params
from ..base import ATTACKS, Attack, AttackContext, ThreatModel, format_validation_error
from ._common import check_reference, reference_std, round_size, send_same, with_knowledge
from .min_max import largest_gamma, perturbation

TailoredRule = Literal["krum", "multi_krum", "bulyan", "median", "trimmed_mean"]
Direction = Literal["std", "unit_mean", "sign"]
SELECTING = ("krum", "multi_krum", "bulyan")
SUPPORTED = ("krum", "multi_krum", "bulyan", "median", "trimmed_mean")

#: Objective values within this relative distance of the best count as ties (smaller gamma wins).
TIE_RTOL = 1e-9

THREAT = ThreatModel("availability", "colluding hospitals", "honest updates, aggregation rule")

RuleFn = Callable[[torch.Tensor, Any], Any]


def build_rule(name: str, params: Mapping[str, Any] | BaseModel | None = None) -> RuleFn:
    """The registered aggregation rule ``name`` with its parameters (a dict of the rule's
    keys or its validated model), as the server builds it. ValueError naming ``defense.<key>``
    for a bad key."""
    from ...aggregators import AGGREGATORS  # lazy: aggregators never import attacks

    entry = AGGREGATORS.get(name)
    raw = params.model_dump() if isinstance(params, BaseModel) else dict(params or {})
    try:
        validated = entry.params.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, "defense")) from None
    return entry.obj(validated)


def feasible_f(name: str, n: int, f: int) -> int | None:
    """The largest f' <= f for which rule ``name``'s requirement holds with n rows (None if
    even f' = 0 fails)."""
    from ...aggregators import AGGREGATORS

    req = AGGREGATORS.get(name).meta.get("requirement")
    for g in range(max(f, 0), -1, -1):
        if req is None or req(n, g) is None:
            return g
    return None


def maximise_gamma(
    objective: Callable[[float], float], gamma_init: float = 10.0, tau: float = 1e-5,
    gamma_max: float = 1e4, span: int = 20,
) -> tuple[float, float]:
    """(gamma, objective(gamma)) maximising ``objective`` over [0, gamma_max].

    Scan 0 and gamma_init * 2^k (k >= -span, up to gamma_max, which is included); around the
    best point b (its grid neighbours lo < b < hi) the paper's step search: try b +- step,
    move on a strict improvement, halve the step, stop when step <= tau * b. Values within
    TIE_RTOL of the best count as equal, so the smallest maximising gamma is kept."""
    grid = [0.0]
    g = gamma_init * 2.0 ** (-span)
    while g < gamma_max:
        grid.append(g)
        g *= 2.0
    grid.append(gamma_max)
    vals = [objective(x) for x in grid]

    def better(v: float, best: float) -> bool:
        return v > best + TIE_RTOL * abs(best)

    i = 0
    for j in range(1, len(grid)):
        if better(vals[j], vals[i]):
            i = j
    best_g, best_v = grid[i], vals[i]
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    step = 0.5 * max(best_g - lo, hi - best_g)
    while step > tau * max(best_g, 1e-300) and step > 0:
        for cand in (best_g - step, best_g + step):
            if lo <= cand <= hi:
                v = objective(cand)
                if better(v, best_v) or (v >= best_v - TIE_RTOL * abs(best_v) and cand < best_g):
                    best_g, best_v = cand, v
        step *= 0.5
    return best_g, best_v


@dataclass(frozen=True)
class TailoredResult:
    """mal: Tensor[d] the crafted update; gamma; selected: the rule selects it (selecting
    rules) / True (median, trimmed mean); objective: ||f_agr(...) - mu|| at gamma; f: the f
    the simulated rule used (None: the rule could not be simulated)."""

    mal: torch.Tensor
    gamma: float
    selected: bool
    objective: float
    f: int | None


def agr_tailored(
    benign: torch.Tensor, m: int, rule_name: str, rule: RuleFn, f: int,
    direction: Direction = "std", gamma_init: float = 10.0, tau: float = 1e-5,
    gamma_max: float = 1e4, mu: torch.Tensor | None = None, p: torch.Tensor | None = None,
    margin: float = 0.0,
) -> TailoredResult:
    """Craft mu + gamma p against ``rule`` (see the module docstring).

    benign: Tensor[n_h, d] the benign rows the rule will see beside the m crafted copies;
    mu / p: the mean and direction (default: from ``benign``; partial knowledge passes the
    attackers' estimates). The rule runs on [benign; m copies] with AggregationContext(f).
    Selecting rules: accepted = selected with the copies last and first; the largest accepted
    gamma is then lowered by the relative ``margin`` when still accepted there (the server's
    rows come in another order and float rounding at the exact boundary can flip Krum)."""
    from ...aggregators import AggregationContext

    check_reference(benign)
    if m < 1:
        raise ValueError(f"agr_tailored needs m >= 1 attackers, got {m}")
    h = benign.to(torch.float64)
    n_h = h.shape[0]
    mu = h.mean(dim=0) if mu is None else mu.to(torch.float64)
    p = perturbation(h, direction) if p is None else p.to(torch.float64)
    dtype = benign.dtype
    f_sim = feasible_f(rule_name, n_h + m, f)
    if f_sim is None:
        return TailoredResult(mu.to(dtype), 0.0, False, float("nan"), None)
    actx = AggregationContext(f=f_sim, generator=torch.Generator().manual_seed(0))

    def run(gamma: float):
        mal = (mu + gamma * p).to(dtype)
        return mal, rule(torch.cat([benign, mal.unsqueeze(0).expand(m, -1)]), actx)

    def shift(res) -> float:
        return float((res.aggregate.to(torch.float64) - mu).norm())

    def accepted(gamma: float) -> bool:
        """Selected with the copies after the benign rows AND before them: at the boundary
        the server's float rounding (its row order) must not decide."""
        mal, res = run(gamma)
        if not _selected(res, n_h):
            return False
        first = rule(torch.cat([mal.unsqueeze(0).expand(m, -1), benign]), actx).weights
        return _selected_first(first, m)

    try:
        mal0, res0 = run(0.0)
    except ValueError:  # e.g. multi_krum's m > n: the rule refuses the simulated round
        return TailoredResult(mu.to(dtype), 0.0, False, float("nan"), None)
    if not bool(torch.any(p != 0)):
        sel = rule_name not in SELECTING or _selected(res0, n_h)
        return TailoredResult(mal0, 0.0, sel, shift(res0), f_sim)
    if rule_name in SELECTING:
        if not accepted(0.0):
            return TailoredResult(mal0, 0.0, False, shift(res0), f_sim)
        gamma = largest_gamma(accepted, gamma_init, tau, gamma_max=gamma_max)
        backed = gamma * (1.0 - margin)
        if margin > 0 and accepted(backed):
            gamma = backed
        mal, res = run(gamma)
        return TailoredResult(mal, gamma, _selected(res, n_h), shift(res), f_sim)
    gamma, obj = maximise_gamma(lambda g: shift(run(g)[1]), gamma_init, tau, gamma_max)
    return TailoredResult(run(gamma)[0], gamma, True, obj, f_sim)


def _selected(result, n_h: int) -> bool:
    """Every crafted row (index >= n_h) has a positive weight in the rule's result (Krum's
    one-hot weights: its output is a crafted row, as the copies are identical)."""
    w = result.weights
    if w is None:
        return False
    crafted = w[n_h:] > 0
    return bool(crafted.all()) or (int((w > 0).sum()) == 1 and bool(crafted.any()))


def _selected_first(weights, m: int) -> bool:
    """``_selected`` for the copies in the first m rows."""
    if weights is None:
        return False
    crafted = weights[:m] > 0
    return bool(crafted.all()) or (int((weights > 0).sum()) == 1 and bool(crafted.any()))


def simulate_benign(reference: torch.Tensor, n_h: int, rng: torch.Generator) -> torch.Tensor:
    """Partial knowledge: n_h rows mu + sigma * e_i, e_i ~ N(0, I) (rng), with mu, sigma the
    mean and std of the reference rows (``_common`` fallback for one row). Tensor[n_h, d]."""
    r = reference.to(torch.float64)
    mu, sigma = r.mean(dim=0), reference_std(r)
    e = torch.randn((n_h, r.shape[1]), generator=rng, dtype=torch.float64)
    return (mu + sigma * e).to(reference.dtype)


class AgrTailoredParams(Params):
    """rule: the rule to tailor to (None = the server's ``defense.name``). direction: p.
    gamma_init: the search's first gamma; tau: relative precision of gamma; gamma_max: cap
    on gamma (the search never returns more). margin: selecting rules, the relative step back
    from the largest accepted gamma (robust to the server's row order and rounding)."""

    rule: TailoredRule | None = None
    direction: Direction = "std"
    gamma_init: float = Field(10.0, gt=0.0)
    tau: float = Field(1e-5, gt=0.0, lt=1.0)
    gamma_max: float = Field(1e4, gt=0.0)
    margin: float = Field(1e-3, ge=0.0, lt=1.0)


@dataclass
class AgrTailored(Attack):
    rule_name: str = "krum"
    rule: RuleFn | None = None
    direction: Direction = "std"
    gamma_init: float = 10.0
    tau: float = 1e-5
    gamma_max: float = 1e4
    margin: float = 1e-3
    last: TailoredResult | None = field(default=None, repr=False)  # latest round, for logs

    @property
    def last_gamma(self) -> float | None:
        return None if self.last is None else self.last.gamma

    def collude(self, reference, malicious, rng, ctx):
        m = malicious.shape[0]
        if ctx.knowledge == "partial":
            check_reference(reference)
            r = reference.to(torch.float64)
            n_h = max(round_size(reference, malicious, ctx) - m, 1)
            benign = simulate_benign(reference, n_h, rng)
            mu, p = r.mean(dim=0), perturbation(r, self.direction)
        else:
            benign, mu, p = reference, None, None
        self.last = agr_tailored(
            benign, m, self.rule_name, self.rule, ctx.f, self.direction, self.gamma_init,
            self.tau, self.gamma_max, mu=mu, p=p, margin=self.margin,
        )
        return send_same(self.last.mal, malicious)


@ATTACKS.register("agr_tailored", AgrTailoredParams, kind="model")
def make_agr_tailored(params: AgrTailoredParams, ctx: AttackContext) -> AgrTailored:
    name = params.rule if params.rule is not None else ctx.defense_rule
    supported = ", ".join(SUPPORTED)
    if name is None:
        raise ValueError(
            f"attack.rule: not set and the defense is unknown; choose one of {supported}"
        )
    if name not in SUPPORTED:
        key = "attack.rule" if params.rule is not None else "defense.name"
        raise ValueError(
            f"{key} = {name!r}: agr_tailored is tailored to one of {supported} (set attack.rule)"
        )
    # the server's own parameters when tailoring to the deployed rule, the defaults otherwise
    rule_params = ctx.defense_params if name == ctx.defense_rule else {}
    return with_knowledge(AgrTailored(
        threat=THREAT,
        needs_honest_updates=True,
        rule_name=name,
        rule=build_rule(name, rule_params),
        direction=params.direction,
        gamma_init=params.gamma_init,
        tau=params.tau,
        gamma_max=params.gamma_max,
        margin=params.margin,
    ), ctx)
