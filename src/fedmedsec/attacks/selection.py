"""Which hospitals are malicious, and in which rounds the attack is on."""

from __future__ import annotations

import functools
from typing import Literal

from ..streams import Stream
from ..streams import rng as stream_rng
from .base import share_count

Schedule = Literal["every_round", "every_k", "single_shot", "random"]
SCHEDULES = ("every_round", "every_k", "single_shot", "random")

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


def check_schedule(
    schedule: str = "every_round", start_round: int = 1, end_round: int | None = None,
    every: int = 1, at_round: int | None = None, round_fraction: float = 1.0,
) -> None:
    """Raise the one-line ValueError for a bad schedule (names the ``attack.*`` key).

    every >= 1; at_round >= 1 (single_shot); round_fraction in [0, 1]; start_round >= 1 and
    end_round >= start_round; "random" needs a finite window (end_round set; pass
    ``experiment.rounds`` when ``attack.end_round`` is unset)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"attack.schedule = {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if start_round < 1:
        raise ValueError(f"attack.start_round = {start_round}: must be >= 1")
    if end_round is not None and end_round < start_round:
        raise ValueError(
            f"attack.end_round = {end_round}: must be >= attack.start_round = {start_round}"
        )
    if every < 1:
        raise ValueError(f"attack.every = {every}: must be >= 1")
    if at_round is not None and at_round < 1:
        raise ValueError(f"attack.at_round = {at_round}: must be >= 1")
    if not 0.0 <= round_fraction <= 1.0:
        raise ValueError(f"attack.round_fraction = {round_fraction}: must be in [0, 1]")
    if schedule == "single_shot" and at_round is not None and (
        at_round < start_round or (end_round is not None and at_round > end_round)
    ):
        window = f"{start_round}..{end_round if end_round is not None else 'end'}"
        raise ValueError(f"attack.at_round = {at_round}: outside the attack window {window}")
    if schedule == "random" and end_round is None:
        raise ValueError(
            "attack.schedule = 'random': needs a finite window "
            "(attack.end_round or experiment.rounds)"
        )


@functools.lru_cache(maxsize=64)
def random_rounds(
    start_round: int, end_round: int, round_fraction: float, seed: int
) -> frozenset[int]:
    """The rounds of the "random" schedule: exactly round(round_fraction * W) distinct rounds
    of the window start_round..end_round (W rounds), drawn without replacement by
    the ``ATTACK_SCHEDULE`` stream of the seed. The same set for every attacker
    (colluding attacks need their rows in the same round) and every call with this seed."""
    w = end_round - start_round + 1
    k = share_count(round_fraction, w)
    rng = stream_rng(seed, Stream.ATTACK_SCHEDULE)
    return frozenset(int(start_round + i) for i in rng.choice(w, size=k, replace=False))


def is_active(
    round: int, start_round: int = 1, end_round: int | None = None,
    schedule: Schedule = "every_round", every: int = 1, at_round: int | None = None,
    round_fraction: float = 1.0, seed: int = 0,
) -> bool:
    """Is the attack on in ``round``? A pure function of the schedule (issue 17).

    The window is start_round <= round <= end_round (end None = until the last round).
    every_round: every round of the window. every_k: rounds start_round, start_round + every,
    start_round + 2 every, ... of the window. single_shot: only ``at_round`` (None =
    start_round, and inside the window). random: ``random_rounds`` (a seeded share
    ``round_fraction`` of the window's rounds, the same for all attackers; needs end_round).
    Bad values raise ``check_schedule``'s one-line ValueError."""
    check_schedule(schedule, start_round, end_round, every, at_round, round_fraction)
    in_window = round >= start_round and (end_round is None or round <= end_round)
    if not in_window:
        return False
    if schedule == "every_round":
        return True
    if schedule == "every_k":
        return (round - start_round) % every == 0
    if schedule == "single_shot":
        return round == (start_round if at_round is None else at_round)
    return round in random_rounds(start_round, end_round, float(round_fraction), int(seed))


def active_rounds(
    rounds: int, start_round: int = 1, end_round: int | None = None,
    schedule: Schedule = "every_round", every: int = 1, at_round: int | None = None,
    round_fraction: float = 1.0, seed: int = 0,
) -> tuple[int, ...]:
    """The rounds 1..rounds in which the attack is on (for the summary), with end_round None
    meaning ``rounds`` (the same window the round loop must pass to ``is_active``)."""
    end = rounds if end_round is None else end_round
    return tuple(
        r for r in range(1, rounds + 1)
        if is_active(r, start_round, end, schedule, every, at_round, round_fraction, seed)
    )
