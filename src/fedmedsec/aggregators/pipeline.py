"""Apply pre-aggregation steps, then a rule: ``aggregate(updates, rule, ctx, pre=[...])``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from .base import AggregationContext, AggregationResult, PreconditionError

PreStep = Callable[[torch.Tensor, AggregationContext], torch.Tensor]
Rule = Callable[[torch.Tensor, AggregationContext], AggregationResult]


def aggregate(
    updates: torch.Tensor,
    rule: Rule,
    ctx: AggregationContext,
    pre: Sequence[PreStep] = (),
) -> AggregationResult:
    """updates: Tensor[n, d] -> AggregationResult for the original n clients.

    Each pre step maps the current rows to new rows; the rule runs on the last ones. With no
    pre step this is ``rule(updates, ctx)``. After a pre step the rows are no longer clients,
    so the rule sees a context without per-client information (weights=None, client_ids=(),
    f unchanged: a Byzantine client corrupts at most one bucket and NNM keeps n rows) and the
    result's per-client ``weights`` is None (no per-client share or detection is defined).

    The rule's precondition (``rule.requirement``, set on every registered rule) is checked on
    the rows that reach it; a failure raises PreconditionError with a one-line message
    (``base.precondition_problem`` gives the same answer before any work is done).
    """
    n = updates.shape[0] if isinstance(updates, torch.Tensor) and updates.dim() == 2 else None
    rows = updates
    for step in pre:
        rows = step(rows, ctx)
        ctx = dataclasses.replace(ctx, weights=None, client_ids=())
    req = getattr(rule, "requirement", None)
    if req is not None and isinstance(rows, torch.Tensor) and rows.dim() == 2:
        m = rows.shape[0]
        msg = req(m, ctx.f)
        if msg is not None:
            if pre and m != n:
                msg = f"{msg} ({n} updates -> {m} rows after the pre steps)"
            raise PreconditionError(msg)
    result = rule(rows, ctx)
    if not pre:
        return result
    return AggregationResult(result.aggregate, None)
