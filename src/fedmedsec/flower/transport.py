"""The round loop's transport over a Flower ``Grid`` (Message API), one SuperNode per
hospital: real SuperNodes (a deployment through a SuperLink) and ``flwr run .`` simulations.
It only converts between model vectors and messages; everything else happens in the
``Coordinator``. (``fedmedsec run`` on Ray uses ``batched.BatchedFlowerTransport``: a few
simulated nodes that each serve a share of the hospitals, with the same message records.)

A real federation changes while it runs: each round offers only the hospitals connected
now, picks up hospitals that (re)joined, and a sampled hospital that has not replied after
``experiment.round_timeout`` s comes back as a reply with problem "no reply".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from ..evaluation import EvalCounts
from ..experiment import Setup
from ..metrics import ClassificationCounts
from ..rounds import ClientEval, ClientReply, RunFailed
from .records import from_record, to_record

#: at the start, each hospital's first reply includes installing the app and starting its
#: ClientApp process: wait at least this long for everyone before going on with
#: experiment.min_hospitals
START_TIMEOUT = 120.0


class FlowerTransport:
    """Transport over ``grid``: hospitals are the nodes that answered the discovery query
    with their ``partition-id``."""

    def __init__(self, grid, setup: Setup, node_of: dict[int, int] | None = None,
                 spec: dict | None = None) -> None:
        cfg = setup.cfg
        self.grid = grid
        self.setup = setup
        self.template = setup.new_model()
        self.config_text = cfg.to_toml()
        self.spec_text = json.dumps(spec) if spec is not None else None
        self.timeout = cfg.experiment.round_timeout
        self.node_of = node_of if node_of is not None else discover_nodes(
            grid, setup.n, timeout=max(self.timeout, START_TIMEOUT), minimum=cfg.experiment.min_hospitals)
        self.pid_of = {v: k for k, v in self.node_of.items()}  # every node id ever mapped
        self.ignored: set[int] = set()  # nodes with a duplicate or unknown partition id

    # ------------------------------------------------------------------ nodes
    def available(self, server_round: int) -> list[int]:
        """The partition ids reachable now: nodes that left are dropped, nodes that joined
        since the last round (e.g. a hospital that reconnected) are asked who they are."""
        if server_round > 1:
            self._refresh()
        return sorted(self.node_of)

    def _refresh(self) -> None:
        online = set(self.grid.get_node_ids())
        node_of = {p: n for p, n in self.node_of.items() if n in online}
        known = set(self.pid_of) | self.ignored
        new = [n for n in online if n not in known]
        if new:
            for node, pid in sorted(query_nodes(self.grid, new, min(self.timeout, 60.0)).items()):
                if 0 <= pid < self.setup.n and pid not in node_of:
                    node_of[pid] = node
                else:
                    self.ignored.add(node)
        self.node_of = node_of
        self.pid_of.update({n: p for p, n in node_of.items()})

    # ------------------------------------------------------------------ messages
    def _send(self, server_round: int, pids: list[int], global_vec: torch.Tensor,
              message_type: str) -> tuple[list[Message], dict[str, int], list[int]]:
        """Push one message per reachable pid; returns (replies, message id -> pid of the
        node it was sent to, pids that did not reply)."""
        arrays = to_record(self.template, global_vec)
        config = {"server-round": server_round, "fedmedsec-config": self.config_text}
        if self.spec_text is not None:  # hospital-local data: the agreed encoding and preprocessing
            config["fedmedsec-data"] = self.spec_text
        config = ConfigRecord(config)
        sent = [Message(content=RecordDict({"arrays": arrays, "config": config}),
                        message_type=message_type, dst_node_id=self.node_of[p])
                for p in pids if p in self.node_of]
        replies = exchange(self.grid, sent, self.timeout)
        # an error reply that the SuperLink writes for an unreachable node does not carry
        # that node as its source: map replies through the message they answer
        dst = {m.metadata.message_id: self.pid_of[m.metadata.dst_node_id] for m in sent}
        answered = {m.metadata.reply_to_message_id for m in replies}
        missing = [p for p in pids if p not in self.node_of]
        missing += [dst[m.metadata.message_id] for m in sent if m.metadata.message_id not in answered]
        return replies, dst, sorted(missing)

    def train(self, server_round: int, partition_ids: list[int],
              global_vec: torch.Tensor) -> list[ClientReply]:
        replies, dst, missing = self._send(server_round, partition_ids, global_vec, MessageType.TRAIN)
        out = [ClientReply(pid, None, problem="no reply") for pid in missing]
        for msg in replies:
            pid = dst.get(msg.metadata.reply_to_message_id, -1)
            out.append(parse_train_reply(self.template, pid, msg))
        return out

    def evaluate(self, server_round: int, partition_ids: list[int],
                 global_vec: torch.Tensor) -> list[ClientEval]:
        replies, dst, _ = self._send(server_round, partition_ids, global_vec, MessageType.EVALUATE)
        evals = []
        for msg in replies:
            pid = dst.get(msg.metadata.reply_to_message_id, -1)
            ev = parse_evaluate_reply(pid, msg, self.setup.data.num_classes)
            if ev is not None:
                evals.append(ev)
        # by partition id, not arrival order: the Coordinator averages them in this order
        return sorted(evals, key=lambda e: e.partition_id)


def parse_evaluate_reply(pid: int, msg: Message, num_classes: int) -> ClientEval | None:
    """An evaluation reply as a ``ClientEval``; None for an error or malformed reply (the
    hospital then has no evaluation this round), never an exception."""
    if msg.has_error():
        return None
    return parse_evaluate_content(pid, msg.content, num_classes)


def parse_evaluate_content(pid: int, content, num_classes: int) -> ClientEval | None:
    """``parse_evaluate_reply`` on one hospital's records (``content`` maps the record names
    "metrics", "counts-clean", "counts-trigger", "evasion", "mia" to records: a reply's
    content, or one hospital's part of a batched reply)."""
    try:
        m = content["metrics"]
        clean = _counts(dict(content["counts-clean"]), num_classes)
        trigger = _counts(dict(content["counts-trigger"]), num_classes) if "counts-trigger" in content else None
        if clean is None or ("counts-trigger" in content and trigger is None):
            return None
        loss, accuracy, n_ex = float(m["loss"]), float(m["accuracy"]), m["num-examples"]
        if isinstance(n_ex, float) and n_ex.is_integer():
            n_ex = int(n_ex)
        if not _plausible(loss, accuracy, n_ex, clean):
            return None  # numbers no evaluation can have: no evaluation this round
        rows = None
        if "evasion" in content:
            rows = json.loads(str(content["evasion"]["rows"]))
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                rows = None
        audit = None
        if "mia" in content:
            audit = json.loads(str(content["mia"]["audit"]))
            if not isinstance(audit, dict):
                audit = None
        return ClientEval(pid, loss, accuracy, n_ex, counts=EvalCounts(clean, trigger, rows, audit))
    except Exception:  # an error or malformed evaluation reply: no evaluation
        return None


def _plausible(loss: float, accuracy: float, n_ex, clean: ClassificationCounts) -> bool:
    """Do a reply's numbers agree with its own counts (as ``client.local_evaluate`` makes
    them)? num-examples = the counts' total, accuracy = their trace / total (NaN for no
    records), loss >= 0 (NaN only for no records or a diverged model's non-finite logits)."""
    n = clean.count
    if not isinstance(n_ex, int) or isinstance(n_ex, bool) or n_ex != n:
        return False
    if n == 0:
        return math.isnan(accuracy)
    if not math.isclose(accuracy, float(clean.confusion.trace()) / n, rel_tol=1e-9, abs_tol=1e-12):
        return False
    return loss >= 0 or (math.isnan(loss) and (clean.nonfinite > 0))


def _counts(d: dict, num_classes: int) -> ClassificationCounts | None:
    """A reply's counts record, or None unless it is of the federation's ``num_classes``
    (checked before anything is allocated: a claimed class count sizes the histogram) with
    integer, non-negative counts."""
    c = d.get("num_classes")
    if isinstance(c, float) and c.is_integer():
        c = int(c)
    if not isinstance(c, int) or isinstance(c, bool) or c != num_classes:
        return None
    for key in ("confusion", "hist_index", "hist_count"):
        v = d.get(key)
        if not isinstance(v, list) or len(v) > num_classes * num_classes * 4096 or not all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**62 for x in v):
            return None
    counts = ClassificationCounts.from_dict(d)
    if (counts.confusion < 0).any() or (counts.hist < 0).any():
        return None
    return counts


def parse_train_reply(template: torch.nn.Module, pid: int, msg: Message) -> ClientReply:
    """A train reply as a ``ClientReply``; a client error or malformed content becomes a
    reply with ``problem`` set, never an exception."""
    if msg.has_error():
        return ClientReply(pid, None, problem=f"client error: {msg.error.reason[:200]}")
    return parse_train_content(template, pid, msg.content)


def parse_train_content(template: torch.nn.Module, pid: int, content) -> ClientReply:
    """``parse_train_reply`` on one hospital's records (``content`` maps "arrays" and
    "metrics" to records: a reply's content, or one hospital's part of a batched reply)."""
    try:
        metrics = dict(content["metrics"]) if "metrics" in content else {}
        vec, problem = from_record(template, content["arrays"])
        n_ex = metrics.get("num-examples", 0)
        n_ex = int(n_ex) if isinstance(n_ex, (int, float)) and n_ex == n_ex else 0
    except Exception as e:  # malformed reply: record it, never crash the server
        return ClientReply(pid, None, problem=f"malformed reply: {type(e).__name__}")
    return ClientReply(pid, vec, n_ex, metrics, problem)


def exchange(grid, messages: list[Message], timeout: float, poll: float = 0.5) -> list[Message]:
    """Push ``messages`` and pull their replies until all arrived or ``timeout`` s passed.

    ``Grid.send_and_receive`` does the same but the HTTP grid of a real SuperLink sleeps 3 s
    between polls and the simulation grid 0.1 s (Flower 1.41-1.42); this polls after 10 ms
    and backs off to every ``poll`` s, so fast rounds are not padded and slow ones do not
    hammer the SuperLink. A grid that waits on its replies itself (``event_driven``, e.g.
    ``runtime.RayGrid``) is asked with ``send_and_receive``. Missing replies are simply
    absent from the result."""
    if not messages:
        return []
    if getattr(grid, "event_driven", False):
        return list(grid.send_and_receive(messages, timeout=timeout))
    ids = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    out: list[Message] = []
    wait = 0.01
    while ids:
        got = list(grid.pull_messages(ids))
        out.extend(got)
        ids.difference_update(m.metadata.reply_to_message_id for m in got)
        if not ids or time.monotonic() >= deadline:
            break
        time.sleep(wait)
        wait = min(wait * 2, poll)
    return out


def _query(node: int) -> Message:
    return Message(content=RecordDict({"config": ConfigRecord({})}), message_type=MessageType.QUERY,
                   dst_node_id=node)


def _partition_id(reply: Message) -> int | None:
    if reply.has_error() or "metrics" not in reply.content:
        return None
    try:
        return int(reply.content["metrics"]["partition-id"])
    except (KeyError, TypeError, ValueError):
        return None


def _num_partitions(reply: Message) -> int | None:
    """The federation size the node reports (``num-partitions`` of its node config: every
    simulated SuperNode has it, a deployment node where its operator set it)."""
    if reply.has_error() or "metrics" not in reply.content:
        return None
    try:
        return int(reply.content["metrics"]["num-partitions"])
    except (KeyError, TypeError, ValueError):
        return None


def check_federation_size(reply: Message, expected: int) -> None:
    """Fail fast when a node says the federation has another size than the experiment's
    hospitals (e.g. ``flwr run`` with num-supernodes != data.num_hospitals), rather than
    waiting for the discovery timeout."""
    k = _num_partitions(reply)
    if k is not None and k != expected:
        raise RunFailed(
            f"the federation has {k} SuperNodes (num-partitions) but data.num_hospitals = {expected}: "
            f"set num-supernodes = {expected} (flwr run . --federation-config num-supernodes={expected}) "
            f"or data.num_hospitals = {k}")


def query_nodes(grid, nodes: Iterable[int], timeout: float) -> dict[int, int]:
    """Ask ``nodes`` for their partition id. Returns node id -> partition id for the nodes
    that answered (``-1`` when the node has no ``partition-id`` in its node config)."""
    found: dict[int, int] = {}
    for reply in exchange(grid, [_query(n) for n in nodes], timeout):
        pid = _partition_id(reply)
        if pid is not None:
            found[reply.metadata.src_node_id] = pid
    return found


def discover_nodes(grid, expected: int, timeout: float, minimum: int | None = None,
                   poll: float = 0.5) -> dict[int, int]:
    """Ask every connected node for its partition id, including nodes that connect while
    waiting. Returns as soon as ``expected`` partitions answered; after ``timeout`` s goes on
    with at least ``minimum`` (default ``expected``), or raises ``RunFailed`` with fewer.
    Returns partition id -> node id (a duplicate or out-of-range partition id is ignored)."""
    minimum = expected if minimum is None else minimum
    deadline = time.monotonic() + timeout
    node_of: dict[int, int] = {}
    asked: set[int] = set()
    pending: set[str] = set()
    while True:
        new = [n for n in grid.get_node_ids() if n not in asked]
        if new:
            asked.update(new)
            pending.update(grid.push_messages([_query(n) for n in new]))
        if pending:
            got = list(grid.pull_messages(pending))
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            for reply in got:
                check_federation_size(reply, expected)
                pid = _partition_id(reply)
                if pid is not None and 0 <= pid < expected:
                    node_of.setdefault(pid, reply.metadata.src_node_id)
        if len(node_of) >= expected or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    if len(node_of) < minimum:
        raise RunFailed(
            f"only {len(node_of)} hospital(s) answered within {timeout:g} s; "
            f"experiment.min_hospitals = {minimum} needed")
    return node_of


# --------------------------------------------------------------------------- deployment

def connect(grid, cfg) -> tuple[Setup, FlowerTransport]:
    """The server side of a deployment (``flwr run``): discover the hospitals' nodes and,
    when the dataset reads files, run the hospital-local data protocol (``deployment.py``)
    so the server never opens a data file. Returns the server's Setup and the transport."""
    from ..config import ConfigError
    from ..deployment import agree_encoding, check_deployment, data_spec, reads_files, server_setup
    from ..experiment import build_setup

    e = cfg.experiment
    if not reads_files(cfg):  # embedded / generated data: every process builds the same
        setup = build_setup(cfg)
        setup.collude_locally = True
        _refuse_full_knowledge(setup, ConfigError)
        return setup, FlowerTransport(grid, setup)
    check_deployment(cfg)
    n = cfg.data.num_hospitals
    node_of = discover_nodes(grid, n, timeout=max(e.round_timeout, START_TIMEOUT), minimum=e.min_hospitals)
    text = cfg.to_toml()
    schemas = _stage(grid, node_of, "schema", text, {}, e.round_timeout)
    encoding = agree_encoding(cfg, schemas)
    stats = _stage(grid, node_of, "stats", text, {"encoding": encoding}, e.round_timeout)
    spec = data_spec(cfg, encoding, stats)
    setup = server_setup(cfg, spec)
    _refuse_full_knowledge(setup, ConfigError)
    return setup, FlowerTransport(grid, setup, node_of=node_of, spec=spec)


def _refuse_full_knowledge(setup: Setup, error) -> None:
    a = setup.attack
    if a is not None and a.needs_honest_updates and setup.cfg.attack.knowledge == "full":
        raise error(f"attack.knowledge = 'full' needs every hospital's update, which only a simulation can "
                    f"give; a red-team SuperNode uses attack.knowledge = 'partial' ({setup.cfg.attack.name})",
                    key="attack.knowledge")


def _stage(grid, node_of: dict[int, int], stage: str, config_text: str, payload: dict,
           timeout: float) -> dict[int, dict]:
    """One step of the data protocol on every node: partition id -> its JSON answer."""
    pid_of = {v: k for k, v in node_of.items()}
    msgs = [Message(content=RecordDict({"config": ConfigRecord({
        "fedmedsec-stage": stage, "fedmedsec-config": config_text, "payload": json.dumps(payload)})}),
        message_type=MessageType.QUERY, dst_node_id=node) for node in node_of.values()]
    replies = exchange(grid, msgs, timeout)
    dst = {m.metadata.message_id: pid_of[m.metadata.dst_node_id] for m in msgs}
    out: dict[int, dict] = {}
    for r in replies:
        pid = dst.get(r.metadata.reply_to_message_id)
        if pid is None:
            continue
        if r.has_error():
            raise RunFailed(f"hospital {pid} (data protocol, {stage}): {r.error.reason[:200]}")
        rec = r.content["config"] if "config" in r.content else {}
        if "error" in rec:
            raise RunFailed(f"hospital {pid}: {str(rec['error'])[:300]}")
        try:
            out[pid] = json.loads(str(rec["result"]))
        except (KeyError, ValueError):
            raise RunFailed(f"hospital {pid}: malformed answer to the data protocol ({stage})") from None
    missing = sorted(set(node_of) - set(out))
    if missing:
        raise RunFailed(f"hospitals {missing} did not answer the data protocol ({stage}) within {timeout:g} s")
    return out
