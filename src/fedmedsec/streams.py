"""Named random streams: every random draw of a run comes from the experiment seed and a
purpose, so two purposes can never share a stream.

A stream's key is ``SeedSequence([seed, purpose, len(key), *key])``: the purpose comes first
and the key length is part of the entropy, so ``(LOCAL_TRAINING, round=192, pid=5)`` and
``(COLLUSION, round=5)`` differ, and so do keys that differ only by trailing zeros (which
``SeedSequence`` would otherwise pad to the same pool: ``[0, 5]`` and ``[0, 5, 0]`` give
equal states). Key parts are non-negative ints such as a round or a partition id.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch


class Stream(IntEnum):
    """The purposes a run draws randomness for, and the key each takes."""

    DATA_SPLIT = 1  # (): server hold-out, partition, local splits, FLTrust root set
    ATTACKER_SELECTION = 2  # (): which hospitals are malicious
    CLIENT_SAMPLING = 3  # (round,): hospitals trained in a round
    LOCAL_TRAINING = 4  # (round, partition_id): batch order, DP-SGD sampling and noise
    DATA_POISONING = 5  # (round, partition_id): which records an attack poisons
    COLLUSION = 6  # (round,): colluding attacks crafted from the round's updates
    AGGREGATION = 7  # (round,): randomised rules, pre-steps, central DP noise
    ROOT_TRAINING = 8  # (round,): FLTrust's server update on the root set
    CENTRALIZED_TRAINING = 9  # (round,): the pooled baseline's batch order
    MEMBERSHIP_INFERENCE = 10  # () overall, (partition_id,) per hospital
    LIRA = 11  # (): LiRA's split into population and targets
    LIRA_SHADOW = 12  # (shadow index,): one shadow model's training
    ATTACK_SCHEDULE = 13  # (): rounds a random-fraction schedule attacks in
    DETECTION = 14  # (round,): randomised detectors (gap statistic reference sets)
    EVALUATION = 15  # (round, partition_id): evasion attacks' random starts
    RECONSTRUCTION = 16  # (round, partition_id): the curious server's inversion restarts
    ADVERSARIAL_TRAINING = 17  # (round, partition_id): PGD examples in local training


def seed_sequence(seed: int, stream: Stream, *key: int) -> np.random.SeedSequence:
    """The SeedSequence of ``stream`` keyed by ``key`` (non-negative ints)."""
    if any(int(k) < 0 for k in key):
        raise ValueError(f"stream {stream.name}: key parts must be >= 0, got {key}")
    return np.random.SeedSequence([int(seed), int(stream), len(key), *map(int, key)])


def rng(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    """A numpy Generator for ``stream`` keyed by ``key``."""
    return np.random.default_rng(seed_sequence(seed, stream, *key))


def generator(seed: int, stream: Stream, *key: int) -> torch.Generator:
    """A torch Generator for ``stream`` keyed by ``key`` (63-bit seed from the sequence)."""
    state = seed_sequence(seed, stream, *key).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))
