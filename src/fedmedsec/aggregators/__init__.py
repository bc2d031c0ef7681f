"""Robust aggregation rules as pure functions of ``updates: Tensor[n, d]``."""

from . import (  # noqa: F401  (importing the modules registers the rules)
    clipping,
    clustering,
    coordinate,
    dnc,
    flame,
    fltrust,
    foolsgold,
    geomed,
    krum,
    mean,
    pre,
)
from .base import (
    AGGREGATORS,
    CAPABILITIES,
    PRE_AGGREGATORS,
    AggregationContext,
    AggregationResult,
    PreconditionError,
    precondition_problem,
)
from .pipeline import aggregate

__all__ = [
    "AGGREGATORS",
    "CAPABILITIES",
    "PRE_AGGREGATORS",
    "AggregationContext",
    "AggregationResult",
    "PreconditionError",
    "aggregate",
    "precondition_problem",
]
