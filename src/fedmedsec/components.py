"""Where each config section finds its registry (imports every component module once)."""

from __future__ import annotations

from .registry import Registry


def registry_for(section: str) -> Registry:
    if section == "data":
        from .data import DATASETS

        return DATASETS
    if section == "data.partition":
        from .data.partition import PARTITIONERS

        return PARTITIONERS
    if section == "model":
        from .models import MODELS

        return MODELS
    if section == "attack":
        from .attacks import ATTACKS

        return ATTACKS
    if section == "defense":
        from .aggregators import AGGREGATORS

        return AGGREGATORS
    if section == "detection":
        from .detectors import DETECTORS

        return DETECTORS
    if section == "defense.pre":
        from .aggregators import PRE_AGGREGATORS

        return PRE_AGGREGATORS
    raise KeyError(section)
