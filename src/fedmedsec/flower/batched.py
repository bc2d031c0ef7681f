"""The round loop's transport for simulations: a few Flower nodes, each serving a fixed
share of the hospitals, one message per node and phase.

A simulated federation of N hospitals does not need N SuperNodes: every node runs the same
ClientApp in one of a handful of Ray actors anyway. Here K nodes (as many as the cluster
has actors, ``runtime.RaySimulation``) each serve the hospitals with
``partition_id % K == k``, so a hospital's state (e.g. its DP accountant history) always
lives on the same node (``context.state["fedmedsec/<pid>"]``). A round sends one
``train.batch`` message per node with a sampled hospital, listing its partition ids, and
the evaluation one ``evaluate.batch`` message per node. The replies keep every hospital
separate (``client_app`` module docstring), so validation, collusion, attacks, defenses and
recording see individual updates exactly as over ``transport.FlowerTransport`` (one
hospital per SuperNode, the deployment path), with identical numbers.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from ..experiment import Setup
from ..rounds import ClientEval, ClientReply, RunFailed
from .client_app import BATCH, setup_key
from .records import to_record
from .transport import _num_partitions, _partition_id, _query, exchange, parse_evaluate_content, parse_train_content

#: seconds to wait for the nodes to say who they are
DISCOVERY_TIMEOUT = 120.0


def split_batch(content: RecordDict) -> dict[int, dict[str, Any]]:
    """A batched reply's records by hospital: ``"<pid>/<name>"`` -> {pid: {name: record}}
    (records without a numeric prefix, such as the node's own "node", are left out)."""
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for key, record in content.items():
        head, sep, name = key.partition("/")
        if sep and head.isdigit():
            out[int(head)][name] = record
    return dict(out)


def discover_batch_nodes(grid, timeout: float = DISCOVERY_TIMEOUT) -> tuple[dict[int, int], int]:
    """Ask every node for its index k (``partition-id``) and the number of nodes K
    (``num-partitions``). Returns (k -> node id, K); ``RunFailed`` unless the answers are
    0..K-1 with one K."""
    nodes = list(grid.get_node_ids())
    replies = exchange(grid, [_query(n) for n in nodes], timeout)
    index: dict[int, int] = {}
    sizes = set()
    for r in replies:
        k, size = _partition_id(r), _num_partitions(r)
        if k is None or size is None:
            continue
        sizes.add(size)
        index.setdefault(k, r.metadata.src_node_id)
    if len(sizes) != 1 or sorted(index) != list(range(next(iter(sizes)))):
        raise RunFailed(f"the simulation's nodes did not answer as 0..K-1 of K (got indices {sorted(index)[:8]}, "
                        f"sizes {sorted(sizes)}, {len(replies)} of {len(nodes)} replied)")
    return index, next(iter(sizes))


class BatchedFlowerTransport:
    """Transport over ``grid`` whose K nodes each serve ``partition_id % K == k``.

    preload(key, setup): optional; the simulation sends the driver's Setup to its nodes
    (they skip rebuilding the data). cost(): optional; this run's memory numbers, returned
    by ``cost()`` for ``summary.json``'s ``cost``."""

    def __init__(self, grid, setup: Setup, *, preload: Callable[[str, Setup], None] | None = None,
                 cost: Callable[[], dict[str, Any]] | None = None) -> None:
        cfg = setup.cfg
        self.grid = grid
        self.setup = setup
        self.template = setup.new_model()
        self.config_text = cfg.to_toml()
        self.timeout = cfg.experiment.round_timeout
        self.run_token = uuid.uuid4().hex  # the nodes drop hospital states of other runs
        self._cost = cost
        self.node_at, self.k = discover_batch_nodes(grid, min(self.timeout, DISCOVERY_TIMEOUT))
        if preload is not None:
            preload(setup_key(self.config_text), setup)

    def _node_of(self, pid: int) -> int:
        return self.node_at[pid % self.k]

    def available(self, server_round: int) -> list[int]:
        """Hospitals whose node is up (all of them unless an actor died)."""
        online = set(self.grid.get_node_ids())
        return [p for p in range(self.setup.n) if self._node_of(p) in online]

    def _send(self, server_round: int, pids: list[int], global_vec: torch.Tensor,
              message_type: str) -> tuple[dict[int, list[int]], dict[int, Message], list[int]]:
        """One message per node with asked hospitals. Returns (node id -> its pids asked,
        node id -> its reply, pids whose node did not reply)."""
        online = set(self.grid.get_node_ids())
        by_node: dict[int, list[int]] = defaultdict(list)
        for p in sorted(pids):
            by_node[self._node_of(p)].append(p)
        arrays = to_record(self.template, global_vec)
        sent, dst = [], {}
        for node, ids in by_node.items():
            if node not in online:
                continue
            config = ConfigRecord({"server-round": server_round, "fedmedsec-config": self.config_text,
                                   "partition-ids": ids, "run-token": self.run_token})
            msg = Message(content=RecordDict({"arrays": arrays, "config": config}),
                          message_type=f"{message_type}.{BATCH}", dst_node_id=node)
            sent.append(msg)
        replies = exchange(self.grid, sent, self.timeout)
        for m in sent:
            dst[m.metadata.message_id] = m.metadata.dst_node_id
        got = {dst[r.metadata.reply_to_message_id]: r for r in replies if r.metadata.reply_to_message_id in dst}
        missing = [p for node, ids in by_node.items() if node not in got for p in ids]
        return by_node, got, missing

    def train(self, server_round: int, partition_ids: list[int],
              global_vec: torch.Tensor) -> list[ClientReply]:
        by_node, got, missing = self._send(server_round, partition_ids, global_vec, MessageType.TRAIN)
        out = [ClientReply(pid, None, problem="no reply") for pid in missing]
        for node, msg in sorted(got.items()):
            if msg.has_error():
                out += [ClientReply(pid, None, problem=f"client error: {msg.error.reason[:200]}")
                        for pid in by_node[node]]
                continue
            parts = split_batch(msg.content)
            for pid in by_node[node]:
                part = parts.get(pid)
                if part is None:
                    out.append(ClientReply(pid, None, problem="no reply"))
                elif "error" in part:
                    out.append(ClientReply(pid, None, problem=f"client error: {_reason(part['error'])}"))
                else:
                    out.append(parse_train_content(self.template, pid, part))
        return out

    def evaluate(self, server_round: int, partition_ids: list[int],
                 global_vec: torch.Tensor) -> list[ClientEval]:
        by_node, got, _ = self._send(server_round, partition_ids, global_vec, MessageType.EVALUATE)
        evals = []
        for node, msg in got.items():
            if msg.has_error():
                continue
            parts = split_batch(msg.content)
            for pid in by_node[node]:
                part = parts.get(pid)
                if part is None or "error" in part:
                    continue
                ev = parse_evaluate_content(pid, part, self.setup.data.num_classes)
                if ev is not None:
                    evals.append(ev)
        # by partition id, like the in-process backend: the Coordinator averages them in this order
        return sorted(evals, key=lambda e: e.partition_id)

    def cost(self) -> dict[str, Any]:
        """This run's memory numbers from the simulation (empty without one)."""
        return self._cost() if self._cost is not None else {}


def _reason(record) -> str:
    try:
        return str(record["reason"])[:200]
    except (KeyError, TypeError):
        return "unknown"
