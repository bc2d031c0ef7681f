"""The one round loop, and the interface through which it reaches hospitals.

Every backend runs this loop: in-process calls, a Flower simulation on Ray, a Flower
deployment through a SuperLink, and the centralized baseline. A ``Transport`` only moves a
global model out and replies back; sampling, validation, collusion, aggregation, the
evaluation schedule and recording all happen once, in the ``Coordinator``.

One round r:
  1. ``transport.available(r)``: partition ids reachable now;
  2. ``coordinator.sample(r, available)``: the hospitals that train;
  3. ``transport.train(r, ids, global_vec)``: one ``ClientReply`` per sampled id (a missing
     or broken reply comes back with ``problem`` set, never as an exception);
  4. ``coordinator.aggregate(r, replies)``: the next global model;
  5. ``transport.evaluate(r, ids, global_vec)`` on the rounds ``coordinator.evaluates(r)``;
  6. ``coordinator.end_round(r, evals, started)``: the round's row; ``round_seconds`` is the
     wall time of steps 1-6.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from .evaluation import EvalCounts
    from .server import Coordinator


@dataclass
class ClientReply:
    """One hospital's training reply.

    vector: its local model, flattened Tensor[d] (None when nothing usable arrived).
    problem: why the transport already rejected it (e.g. "no reply", "wrong shape"), or None.
    metrics: what the hospital reported (train-loss, epsilon, ...); never trusted for what
    the server itself knows.
    """

    partition_id: int
    vector: torch.Tensor | None
    num_examples: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class ClientEval:
    """One hospital's evaluation of the global model on its own test split; ``counts`` are
    what the server merges for federated metrics (``evaluation.EvalCounts``)."""

    partition_id: int
    loss: float
    accuracy: float
    num_examples: int
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: EvalCounts | None = None


class RunFailed(RuntimeError):
    """The experiment could not finish (e.g. too few hospitals answered); the message is
    one line for the user."""


class Transport(Protocol):
    """How the round loop reaches hospitals; implementations only convert messages."""

    def available(self, server_round: int) -> list[int]:
        """Partition ids that can be asked to train or evaluate in this round."""
        ...

    def train(self, server_round: int, partition_ids: list[int],
              global_vec: torch.Tensor) -> list[ClientReply]:
        """Ask ``partition_ids`` to train from ``global_vec`` (Tensor[d])."""
        ...

    def evaluate(self, server_round: int, partition_ids: list[int],
                 global_vec: torch.Tensor) -> list[ClientEval]:
        """Ask ``partition_ids`` to evaluate ``global_vec`` on their own test split."""
        ...


def run_rounds(co: Coordinator, transport: Transport) -> Coordinator:
    """Run every round of ``co``'s experiment through ``transport`` (module docstring)."""
    for r in range(co.next_round, co.cfg.experiment.rounds + 1):
        started = time.perf_counter()
        available = transport.available(r)
        replies = transport.train(r, co.sample(r, available), co.global_vec)
        co.aggregate(r, replies)
        evals = transport.evaluate(r, available, co.global_vec) if co.evaluates(r) else []
        co.end_round(r, evals, started)
    return co
