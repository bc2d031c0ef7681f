"""Which hospitals are malicious, and in which rounds the attack is on."""

from __future__ import annotations

from ..streams import Stream, rng as stream_rng
from .base import share_count


def choose_attackers(
    num_hospitals: int, fraction: float, hospitals: list[int] | None, seed: int
) -> tuple[int, ...]:
    """Partition ids (sorted) of the malicious hospitals.

    An explicit ``hospitals`` list wins over ``fraction``. Otherwise round(fraction * n)
    (Python's round, half to even) distinct ids are drawn without replacement from the
    ``ATTACKER_SELECTION`` stream of ``seed``: the same seed gives the same set.
    Bad values raise a one-line ValueError naming ``attack.fraction`` / ``attack.hospitals``."""
    if num_hospitals < 1:
        raise ValueError(f"data.num_hospitals = {num_hospitals}: must be >= 1")
    if hospitals is not None:
        ids = [int(h) for h in hospitals]
        bad = [h for h in ids if not 0 <= h < num_hospitals]
        if bad:
            raise ValueError(
                f"attack.hospitals = {list(hospitals)}: ids must be in 0..{num_hospitals - 1}"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"attack.hospitals = {list(hospitals)}: ids must be distinct")
        return tuple(sorted(ids))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attack.fraction = {fraction}: must be in [0, 1]")
    k = share_count(fraction, num_hospitals)
    rng = stream_rng(seed, Stream.ATTACKER_SELECTION)
    return tuple(sorted(int(i) for i in rng.choice(num_hospitals, size=k, replace=False)))


def is_active(round: int, start_round: int = 1, end_round: int | None = None) -> bool:
    """True when ``start_round <= round <= end_round`` (end None = until the last round)."""
    return round >= start_round and (end_round is None or round <= end_round)
