"""Malicious-client detection, kept apart from aggregation.

A detector flags clients of one round from the update stack ``updates: Tensor[n, d]`` (deltas
from the global model) and the history it keeps in ``ctx.state``; flagged rows are removed
before the pre-aggregation steps and the rule (``aggregate_with_detection``), so any detector
composes with any rule. Detectors never mutate their inputs and never import flwr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..aggregators.base import AggregationContext, AggregationResult
from ..aggregators.pipeline import PreStep, Rule, aggregate
from ..registry import Registry


@dataclass
class DetectionContext:
    """What a detector may know besides the updates.

    client_ids: partition ids of the n rows (history is keyed by them; empty: row index).
    round: the server round, from 1.
    global_update: Tensor[d], the change of the global model since the detector's previous
        call, w_now - w_prev (the aggregate applied last round, server noise included), or None
        at the first call.
    state: dict kept by the server across rounds for this detector, mutable by design.
    generator: seeded torch.Generator for randomised detectors (gap statistic references).
    """

    client_ids: tuple[int, ...] = ()
    round: int = 1
    global_update: torch.Tensor | None = None
    state: dict[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class DetectionResult:
    """flagged: Tensor[n] bool (True = treated as malicious, excluded before the rule).
    scores: Tensor[n] float64, higher = more suspicious (NaN where a row has no score), or None
    for detectors without a per-client score."""

    flagged: torch.Tensor
    scores: torch.Tensor | None = None


class Detector(Protocol):
    def __call__(self, updates: torch.Tensor, ctx: DetectionContext) -> DetectionResult: ...


#: name -> factory(params) -> Detector (config section ``[detection]``, key ``name``).
DETECTORS: Registry = Registry("detection")


def row_ids(ctx: DetectionContext, n: int, who: str) -> tuple[int, ...]:
    """ctx.client_ids, or 0..n-1 when empty; a length mismatch is a ValueError."""
    ids = tuple(ctx.client_ids) if ctx.client_ids else tuple(range(n))
    if len(ids) != n:
        raise ValueError(f"{who}: ctx.client_ids has {len(ids)} ids for n={n} updates")
    if len(set(ids)) != n:
        raise ValueError(f"{who}: ctx.client_ids must be distinct, got {ids}")
    return ids


def aggregate_with_detection(
    updates: torch.Tensor,
    detector: Detector,
    dctx: DetectionContext,
    rule: Rule,
    actx: AggregationContext,
    pre: Sequence[PreStep] = (),
) -> tuple[DetectionResult, AggregationResult]:
    """Detect, drop the flagged rows, then ``aggregate(kept, rule, actx_kept, pre)``.

    The rule sees a context restricted to the kept rows: ``client_ids`` and ``weights``
    (renormalised) subset, ``f`` unchanged (the defender's assumption). The returned
    AggregationResult's ``weights`` is Tensor[n] over the original rows (0 for flagged ones)
    when the rule reports per-row weights, else None (coordinate-wise rules, pre steps): a
    row is then accepted iff it is not flagged. If every row is flagged the aggregate is zero
    (the global model stays) and every weight is 0.
    """
    n, d = updates.shape
    det = detector(updates, dctx)
    keep = ~det.flagged.to(torch.bool)
    if bool(keep.all()):
        return det, aggregate(updates, rule, actx, pre)
    if not bool(keep.any()):
        return det, AggregationResult(torch.zeros(d, dtype=updates.dtype), torch.zeros(n, dtype=updates.dtype))
    idx = keep.nonzero().reshape(-1)
    weights = None
    if actx.weights is not None:
        w = torch.as_tensor(actx.weights).reshape(-1)[idx]
        weights = w / w.sum() if float(w.sum()) > 0 else None
    ids = tuple(actx.client_ids[int(i)] for i in idx) if actx.client_ids else ()
    sub = dataclasses.replace(actx, weights=weights, client_ids=ids)
    res = aggregate(updates[idx], rule, sub, pre)
    if res.weights is None:
        return det, AggregationResult(res.aggregate, None)
    full = torch.zeros(n, dtype=res.weights.dtype)
    full[idx] = res.weights
    return det, AggregationResult(res.aggregate, full)


@dataclass(frozen=True)
class DetectionCounts:
    """Confusion counts of detection decisions against the true attackers (one decision per
    client per round); add rounds with ``+`` for the overall rates (micro-averaged)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, flagged: torch.Tensor | Sequence[bool], attacking: torch.Tensor | Sequence[bool]) -> DetectionCounts:
        """Counts of ``flagged`` (Tensor[n] bool) against ``attacking`` (Tensor[n] bool: the
        row attacked this round)."""
        f = torch.as_tensor(flagged, dtype=torch.bool).reshape(-1)
        a = torch.as_tensor(attacking, dtype=torch.bool).reshape(-1)
        if f.shape != a.shape:
            raise ValueError(f"flagged has {f.numel()} entries, attacking {a.numel()}")
        return cls(int((f & a).sum()), int((f & ~a).sum()), int((~f & a).sum()), int((~f & ~a).sum()))

    def __add__(self, o: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + o.tp, self.fp + o.fp, self.fn + o.fn, self.tn + o.tn)

    @property
    def tpr(self) -> float | None:
        """Share of attacking decisions flagged; None with no attacker."""
        p = self.tp + self.fn
        return self.tp / p if p else None

    @property
    def fpr(self) -> float | None:
        """Share of honest decisions flagged; None with no honest client."""
        q = self.fp + self.tn
        return self.fp / q if q else None

    def to_dict(self) -> dict[str, Any]:
        return {"tpr": self.tpr, "fpr": self.fpr, "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}
