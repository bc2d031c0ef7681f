"""Malicious-client detectors: flag clients per round before the aggregation rule."""

from . import clustering, fldetector  # noqa: F401  (registers detectors)
from .base import (
    DETECTORS,
    DetectionContext,
    DetectionCounts,
    DetectionResult,
    Detector,
    aggregate_with_detection,
)
from .fldetector import gap_statistic_multiple, lbfgs_hvp, two_means_1d

__all__ = [
    "DETECTORS",
    "DetectionContext",
    "DetectionCounts",
    "DetectionResult",
    "Detector",
    "aggregate_with_detection",
    "gap_statistic_multiple",
    "lbfgs_hvp",
    "two_means_1d",
]
