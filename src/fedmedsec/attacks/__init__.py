"""Attacks by malicious hospitals: data poisoning and model poisoning.

Importing this package registers every attack in ``ATTACKS`` ("none" included). Build one
with ``make_attack(name, params, ctx)``; pick the attackers with ``choose_attackers``.
"""

from ..registry import NoParams
from .base import (
    ATTACKS,
    NO_THREAT,
    Attack,
    AttackContext,
    ThreatModel,
    format_validation_error,
    make_attack,
)


@ATTACKS.register("none", NoParams, kind="none")
def make_none(params: NoParams, ctx: AttackContext) -> Attack:
    """No attack: identity at every hook, threat model ``NO_THREAT``."""
    return Attack(threat=NO_THREAT)


from . import data, model  # noqa: E402,F401  (registration)
from .data import TRIGGERS  # noqa: E402
from .selection import (  # noqa: E402
    SCHEDULES,
    active_rounds,
    check_schedule,
    choose_attackers,
    is_active,
)

__all__ = [
    "ATTACKS", "NO_THREAT", "SCHEDULES", "TRIGGERS", "Attack", "AttackContext", "ThreatModel",
    "active_rounds", "check_schedule", "choose_attackers", "format_validation_error",
    "is_active", "make_attack",
]
