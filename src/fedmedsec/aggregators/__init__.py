"""Robust aggregation rules as pure functions of ``updates: Tensor[n, d]``."""

from .base import (
    AGGREGATORS, CAPABILITIES, PRE_AGGREGATORS, AggregationContext, AggregationResult,
    PreconditionError, precondition_problem,
)
from . import mean  # noqa: F401  (registers rules)
from . import (  # noqa: F401
    clipping, clustering, coordinate, dnc, flame, fltrust, foolsgold, geomed, krum, pre,
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
