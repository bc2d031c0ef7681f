"""The aggregation interface: a pure function of a stacked update tensor.

Symbols: ``n`` clients in the round, ``f`` Byzantine clients the defender assumes, ``d``
parameters. An aggregator never mutates its inputs and never imports flwr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel

from ..registry import Registry

#: (n, f) -> None when a rule may run on n rows with f assumed Byzantine, else the one-line
#: reason, e.g. "krum needs n > 2f + 2, got n=5, f=2"
Requirement = Callable[[int, int], "str | None"]


class PreconditionError(ValueError):
    """A rule's (or pre step's) precondition fails for the rows it actually receives, e.g.
    Krum with n <= 2f + 2 after bucketing halved the rows or replies were dropped. The round
    loop checks ``precondition_problem`` first and keeps the global model for that round;
    a rule or ``pipeline.aggregate`` raises this if called anyway. A ValueError, so a user's
    config mistake still reads as one."""


@dataclass
class AggregationContext:
    """What a rule may know besides the updates.

    f: clients the defender assumes Byzantine (``defense.f``; not the true number).
    weights: Tensor[n] client weights summing to 1, or None for equal weights (the default:
        a malicious client can lie about ``num-examples``).
    round: the server round, from 1.
    previous: Tensor[d] the previous round's aggregate update (centered clipping), or None.
    reference: Tensor[d] the server's own update on its clean root set (FLTrust), or None.
    client_ids: partition ids of the n rows, for rules with per-client history (FoolsGold).
    generator: seeded torch.Generator for randomised rules (DnC, SignGuard, bucketing, noise).
    state: dict kept by the server across rounds for this rule (history), mutable by design.
    """

    f: int = 0
    weights: torch.Tensor | None = None
    round: int = 1
    previous: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    client_ids: tuple[int, ...] = ()
    generator: torch.Generator | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregationResult:
    """aggregate: Tensor[d]. weights: Tensor[n], each row's share of the aggregate
    (0 = excluded); None for coordinate-wise rules that keep no row as a whole.
    """

    aggregate: torch.Tensor
    weights: torch.Tensor | None = None


class Aggregator(Protocol):
    def __call__(self, updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult: ...


#: name -> factory(params) -> Aggregator. Every entry's meta holds:
#:
#: - ``filters`` (bool): the rule excludes whole clients (weight 0), so detection rates
#:   (tpr/fpr of excluded malicious/honest clients) are defined.
#: - ``needs_reference`` (bool): the rule needs ``ctx.reference``, the server's own update on
#:   its clean root set (FLTrust); the server must train one each round.
#: - ``mean_sensitivity`` (bool): on updates clipped to norm S the output has the L2
#:   sensitivity S/n of the mean (replacing one client's update moves it by at most 2S/n,
#:   as for the mean), so DP-FedAvg's Gaussian-noise accounting (McMahan et al. 2018) is
#:   valid. Only the (unweighted) mean; robust rules are not certified and get no epsilon.
#: - ``sum_only`` (bool): the output is a function of the sum of the updates (and n) only, so
#:   the rule runs under secure aggregation, which reveals the sum and nothing else.
#: - ``requirement`` (Requirement | None): the paper's precondition on (n, f), checked on the
#:   rows that reach the rule (after pre steps and dropped replies).
#: - ``params_requirement`` (optional, callable (params, n, f) -> str | None): a further
#:   precondition that depends on the rule's parameters (e.g. Multi-Krum's m <= n).
#:
#: A rule called on rows that fail either precondition raises PreconditionError.
AGGREGATORS: Registry = Registry("defense")
#: The capability flags every AGGREGATORS entry declares as bools.
CAPABILITIES = ("filters", "needs_reference", "mean_sensitivity", "sum_only")
#: name -> factory(params) -> callable(updates, ctx) -> Tensor[m, d]: pre-aggregation
#: transforms (bucketing, NNM) that compose with any rule. Meta: ``rows`` (callable
#: (n, params) -> m, the rows it outputs for n rows in), ``requirement`` (as above, or None).
PRE_AGGREGATORS: Registry = Registry("defense.pre")


def honest_majority(name: str) -> Requirement:
    """The requirement n > 2f (fewer Byzantine than honest rows), named after the rule."""

    def requirement(n: int, f: int) -> str | None:
        if n <= 2 * f:
            return f"{name} needs n > 2f (an honest majority), got n={n}, f={f}"
        return None

    return requirement


def rule_problem(name: str, n: int, f: int, params: BaseModel | None = None) -> str | None:
    """The failed precondition of rule ``name`` (registered in AGGREGATORS) on n rows, or None.
    params: the rule's parameter model (default: its defaults)."""
    if n < 1:
        return f"{name} needs at least one update, got n={n}"
    entry = AGGREGATORS.get(name)
    req = entry.meta.get("requirement")
    msg = req(n, f) if req is not None else None
    if msg is None and entry.meta.get("params_requirement") is not None:
        msg = entry.meta["params_requirement"](entry.params() if params is None else params, n, f)
    return msg


def rows_after(pre: Sequence[str | tuple[str, BaseModel]], n_rows: int, f: int
               ) -> tuple[int, str | None]:
    """(rows that leave the pre steps, None) for n_rows rows in, or (rows at the failing step,
    its one-line problem). Each step is a PRE_AGGREGATORS name (default parameters) or a
    (name, params) pair; e.g. bucketing with bucket size s maps n rows to ceil(n / s)."""
    m = n_rows
    for step in pre:
        pname, pparams = (step, None) if isinstance(step, str) else step
        entry = PRE_AGGREGATORS.get(pname)
        pparams = entry.params() if pparams is None else pparams
        if m < 1:
            return m, f"{pname} needs at least one update, got n={m}"
        req = entry.meta.get("requirement")
        msg = req(m, f) if req is not None else None
        if msg is not None:
            return m, msg
        m = int(entry.meta["rows"](m, pparams))
    return m, None


def precondition_problem(
    name: str,
    n_rows: int,
    f: int,
    pre: Sequence[str | tuple[str, BaseModel]] = (),
    params: BaseModel | None = None,
) -> str | None:
    """None when rule ``name`` can aggregate ``n_rows`` valid updates with f assumed Byzantine
    after the pre steps ``pre`` (names in order, as in ``defense.pre``, or (name, params)
    pairs), else the one-line reason. The round loop calls this on the replies that survived
    validation; on a problem it records "precondition failed" and keeps the global model.

    params: the rule's parameter model (default: its defaults), for parameter-dependent
    preconditions such as Multi-Krum's m <= n."""
    m, msg = rows_after(pre, n_rows, f)
    if msg is None:
        msg = rule_problem(name, m, f, params)
    if msg is not None and m != n_rows:
        names = ", ".join(s if isinstance(s, str) else s[0] for s in pre)
        msg = f"{msg} ({n_rows} updates -> {m} rows after {names})"
    return msg
