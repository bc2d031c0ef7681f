"""Transports without Flower: hospitals called in this process, and the centralized
baseline as the degenerate case of one pooled client. The Flower transports (a simulation
on Ray, a deployment through a SuperLink) live in ``flower/transport.py``."""

from __future__ import annotations

from typing import Any

import torch

from .client import local_evaluate, local_train
from .experiment import Setup
from .rounds import ClientEval, ClientReply
from .server import POOLED
from .streams import Stream
from .training import load_state_vector, state_vector, train_kwargs, train_local


def _eval(setup: Setup, pid: int, global_vec: torch.Tensor, server_round: int) -> ClientEval:
    m, ev = local_evaluate(setup, setup.data.hospitals[pid], global_vec, server_round)
    return ClientEval(pid, m["loss"], m["accuracy"], int(m["num-examples"]), counts=ev)


class InProcessTransport:
    """``simulation.backend = "inprocess"``: ``client.local_train`` / ``local_evaluate``
    called directly, each hospital's state kept in a dict. The same numbers as Flower on
    Ray (tested), without messaging: the engine for large sweeps on small machines and the
    lower bound that ``benchmarks/overhead.py`` compares Flower against."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.states: dict[int, dict[str, Any]] = {h.id: {} for h in setup.data.hospitals}

    def available(self, server_round: int) -> list[int]:
        return sorted(self.states)

    def hospital_states(self) -> dict[int, dict[str, Any]]:
        """What each hospital keeps across rounds (for checkpoints)."""
        return self.states

    def restore_states(self, states: dict[int, dict[str, Any]]) -> None:
        self.states = {int(k): dict(v) for k, v in states.items()}

    def train(self, server_round: int, partition_ids: list[int],
              global_vec: torch.Tensor) -> list[ClientReply]:
        replies = []
        for pid in partition_ids:
            vec, m = local_train(self.setup, self.setup.data.hospitals[pid], global_vec,
                                 server_round, self.states[pid])
            replies.append(ClientReply(pid, vec, int(m["num-examples"]), m))
        return replies

    def evaluate(self, server_round: int, partition_ids: list[int],
                 global_vec: torch.Tensor) -> list[ClientEval]:
        return [_eval(self.setup, pid, global_vec, server_round) for pid in partition_ids]


class CentralizedTransport(InProcessTransport):
    """``experiment.mode = "centralized"``: one model trained on the pooled training data
    of all hospitals with the same budget (``local_epochs`` per round), evaluated by every
    hospital like the federation. The round loop sees one client, ``server.POOLED``."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.x, self.y = setup.data.pooled_train

    def train(self, server_round: int, partition_ids: list[int],
              global_vec: torch.Tensor) -> list[ClientReply]:
        t = self.setup.cfg.train
        model = self.setup.new_model()
        load_state_vector(model, global_vec)
        res = train_local(model, self.x, self.y,
                          **train_kwargs(t, self.setup.data.modality, server_round, self.setup.cfg.experiment.rounds),
                          generator=self.setup.generator(Stream.CENTRALIZED_TRAINING, server_round))
        return [ClientReply(POOLED, state_vector(model), len(self.y), {"train-loss": res.loss})]
