"""The hospital's ClientApp (Flower Message API).

Messages carry the global model arrays and a config record with ``server-round`` and the
resolved experiment config (TOML), so one ClientApp serves every experiment. The node's
``partition-id`` comes from ``context.node_config`` (set by the simulation engine, or by
``--node-config`` on a real SuperNode, which may also give ``data-path`` and ``role``).

``data-path`` overrides the experiment's ``data.path`` on this node (file datasets such as
csv or medmnist; ignored for datasets that read no file); ``role = "attacker"`` makes this
node play the configured attack (red-team runs), ``role = "honest"`` keeps it honest.

Every node but those of a driver-preloaded simulation (``fedmedsec run`` on Ray, whose
Setup the driver hands over itself: ``driven``) runs under the node policy
(``node_policy``): its own ``data-path`` is the only file it opens (a file dataset on a
node without one is refused, and so is ``data.server_test`` or a record name with a path
in it), and an exception leaves the node as a fixed phrase plus the exception's type (the
full text stays in the node's log).

Two kinds of messages:

- ``train`` / ``evaluate`` (a deployment, ``flwr run``): the node is one hospital, its
  ``partition-id``; its state across rounds is ``context.state["fedmedsec"]`` (and
  ``"fedmedsec-arrays"`` for tensors);
- ``train.batch`` / ``evaluate.batch`` (the Ray simulation, ``batched.BatchedFlowerTransport``):
  node k of K (``partition-id`` k, ``num-partitions`` K) serves the hospitals with
  ``partition_id % K == k``; the config's ``partition-ids`` lists those asked in this
  message. Each hospital's reply stays separate: the records of a one-hospital reply under
  ``"<pid>/"`` (``"<pid>/arrays"``, ``"<pid>/metrics"``; ``"<pid>/metrics"``,
  ``"<pid>/counts-clean"``, ...), or ``"<pid>/error"`` (a ConfigRecord with ``reason``) when
  that hospital failed. Each hospital's state is ``context.state["fedmedsec/<pid>"]`` (and
  ``"fedmedsec-arrays/<pid>"``), emptied when the config's ``run-token`` changes (the next
  run of a sweep on the same nodes).

The Setup is built once per config and process (``experiment.setup_from_toml``), or
received from the simulation driver (``preload_setup``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import resource
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..client import local_evaluate, local_train
from ..data.base import DataError
from ..data.partition import PartitionError
from ..deployment import node_setup
from ..experiment import Setup, setup_from_toml
from ..training import set_torch_threads
from .node_policy import NodePolicyError, guarded, restrict_config, safe_error
from .records import record_to_vector, to_record

set_torch_threads()

log = logging.getLogger("fedmedsec.node")
app = ClientApp()

#: Setups sent by the simulation driver, by ``setup_key`` of their config text
_PRELOADED: dict[str, Setup] = {}
_MAX_PRELOADED = 2
BATCH = "batch"  # the message action of the batched handlers ("train.batch", "evaluate.batch")


def _protect_loggers() -> None:
    """Import Opacus through ``fedmedsec.privacy`` (which keeps the root and flwr loggers
    as they are) before anything that may import it directly (DP-SGD checks of a Setup);
    only then, so a node that never needs Opacus starts without it."""
    from .. import privacy as _privacy  # noqa: F401


def setup_key(cfg_text: str) -> str:
    """The cache key of a resolved config's text (the same on the driver and the nodes)."""
    return hashlib.sha256(cfg_text.encode()).hexdigest()


def preload_setup(key: str, blob: bytes, needs_privacy: bool = False) -> bool:
    """Cache the driver's pickled Setup under ``key`` (simulation only: the driver's actor
    call, never a message, so no node unpickles what a server sends)."""
    if needs_privacy:
        _protect_loggers()
    _PRELOADED[key] = pickle.loads(blob)
    while len(_PRELOADED) > _MAX_PRELOADED:
        _PRELOADED.pop(next(iter(_PRELOADED)))
    return True


def _setup(cfg_text: str) -> Setup:
    setup = _PRELOADED.get(setup_key(cfg_text))
    if setup is not None:
        return setup
    _protect_loggers()
    return setup_from_toml(cfg_text)


def _reads_file(data: dict) -> bool:
    """Does the config's dataset read a file (its parameters have a ``path``)?"""
    from ..data import DATASETS

    try:
        return "path" in DATASETS.get(str(data.get("name", "wdbc"))).params.model_fields
    except KeyError:  # not registered here: the config itself says whether it reads a file
        return "path" in data


def _with_data_path(cfg_text: str, data_path: str) -> str:
    """The resolved config with ``data.path`` replaced by this node's ``data-path`` (for
    file datasets such as csv and medmnist, whose parameters have a ``path``)."""
    import tomllib

    import tomli_w

    cfg = tomllib.loads(cfg_text)
    data = cfg.setdefault("data", {})
    if not _reads_file(data):
        return cfg_text  # the dataset reads no file (e.g. the embedded wdbc)
    data["path"] = data_path
    return tomli_w.dumps(cfg)


def driven(cfg_text: str) -> bool:
    """Is this message's config one whose Setup the simulation driver sent this process
    (``preload_setup``: ``fedmedsec run`` on Ray, the driver's own machine)? Everything else,
    a hospital's SuperNode above all, runs under the node policy."""
    return setup_key(cfg_text) in _PRELOADED


def node_config_text(cfg_text: str, context: Context, protocol: bool = False) -> str:
    """The experiment config as this node may run it (``node_policy.restrict_config``): its
    own ``data-path`` wins, a file dataset without one is refused, so is
    ``data.server_test`` and a record name with a path in it. With ``protocol``
    (hospital-local data, where ``data.server_test`` is the coordinator's own file, which no
    node opens) that key is removed instead of refused. A config the simulation driver
    preloaded (``driven``) is returned as it is."""
    if driven(cfg_text):
        return cfg_text
    import tomllib

    import tomli_w

    cfg = tomllib.loads(cfg_text)
    if protocol and isinstance(cfg.get("data"), dict):
        cfg["data"] = {k: v for k, v in cfg["data"].items() if k != "server_test"}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    return tomli_w.dumps(restrict_config(cfg, context.node_config, _reads_file(data)))


def _message_driven(msg: Message) -> bool:
    try:
        return driven(str(msg.content["config"]["fedmedsec-config"]))
    except (KeyError, TypeError):
        return False


def node_guard(handler):
    """``node_policy.guarded`` unless the message belongs to a driver-preloaded simulation
    (``driven``): an exception is logged in full on the node and leaves it as
    ``NodeError(safe_error(e))``, so Flower's error reply carries no file contents."""
    safe = guarded(handler)

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        return (handler if _message_driven(msg) else safe)(msg, context)

    return wrapper


def _node(msg: Message, context: Context):
    cfg_text = str(msg.content["config"]["fedmedsec-config"])
    pid = int(context.node_config["partition-id"])
    if "fedmedsec-data" in msg.content["config"]:
        # hospital-local data: this node's own file, encoded and preprocessed as agreed
        _protect_loggers()
        cfg = _config(node_config_text(cfg_text, context, protocol=True))
        setup = node_setup(cfg, json.loads(str(msg.content["config"]["fedmedsec-data"])),
                           _own_file(context), pid)
        return setup, setup.data.hospitals[pid], pid
    setup = _setup(node_config_text(cfg_text, context))
    return setup, setup.data.hospitals[pid], pid


def _config(text: str):
    import tomllib

    from ..config import config_from_dict

    return config_from_dict(tomllib.loads(text))


def _own_file(context: Context) -> str:
    path = context.node_config.get("data-path")
    if not path:
        raise DataError("this hospital's node has no data-path in its node config: it opens only its "
                        "own file, named there")
    return str(path)


def _role(context: Context) -> bool | None:
    role = context.node_config.get("role")
    if role is None:
        return None
    return str(role).lower() in ("attacker", "malicious")


def _state_keys(pid: int | None) -> tuple[str, str]:
    return ("fedmedsec", "fedmedsec-arrays") if pid is None else (f"fedmedsec/{pid}", f"fedmedsec-arrays/{pid}")


def load_state(context: Context, pid: int | None = None) -> dict:
    """This hospital's state across rounds as a plain dict (e.g. the DP accountant's
    history, an attack's last global model): scalars and lists live in a ConfigRecord,
    tensors in an ArrayRecord of ``context.state`` (per hospital ``pid`` on a batched node)."""
    values, arrays = _state_keys(pid)
    out: dict = {}
    if values in context.state:
        out.update(dict(context.state[values]))
    if arrays in context.state:
        for k, a in context.state[arrays].items():
            out[k] = torch.from_numpy(a.numpy().copy())
    return out


def save_state(context: Context, state: dict, pid: int | None = None) -> None:
    values, arrays = _state_keys(pid)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    context.state[values] = ConfigRecord({k: v for k, v in state.items() if k not in tensors})
    if tensors:
        context.state[arrays] = ArrayRecord({k: v.detach().clone() for k, v in tensors.items()})


def _train_records(setup: Setup, pid: int, global_vec, server_round: int, state: dict, model,
                   malicious: bool | None) -> dict[str, Any]:
    """One hospital's train reply: its local model (``arrays``) and ``metrics``."""
    local, metrics = local_train(setup, setup.data.hospitals[pid], global_vec, server_round, state,
                                 malicious=malicious)
    return {"arrays": to_record(model, local), "metrics": MetricRecord(metrics)}


def _evaluate_records(setup: Setup, pid: int, global_vec, server_round: int) -> dict[str, Any]:
    """One hospital's evaluation reply: ``metrics`` and what the server merges."""
    metrics, ev = local_evaluate(setup, setup.data.hospitals[pid], global_vec, server_round)
    content = {"metrics": MetricRecord(metrics), "counts-clean": MetricRecord(ev.clean.to_dict())}
    if ev.trigger is not None:
        content["counts-trigger"] = MetricRecord(ev.trigger.to_dict())
    if ev.robustness is not None:
        content["evasion"] = ConfigRecord({"rows": json.dumps(ev.robustness)})
    if ev.mia is not None:
        content["mia"] = ConfigRecord({"audit": json.dumps(ev.mia)})
    return content


@app.train()
@node_guard
def train(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    state = load_state(context)
    content = _train_records(setup, pid, global_vec, server_round, state, model, _role(context))
    save_state(context, state)
    return Message(content=RecordDict(content), reply_to=msg)


@app.evaluate()
@node_guard
def evaluate(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    server_round = int(msg.content["config"]["server-round"])
    return Message(content=RecordDict(_evaluate_records(setup, pid, global_vec, server_round)), reply_to=msg)


# ---------------------------------------------------------------------- batched (simulation)


def _batch(msg: Message, context: Context) -> tuple[Setup, list[int]]:
    """The Setup and the partition ids this message asks of this node; refuses ids the node
    does not serve, so each hospital's state stays on one node."""
    cfg = msg.content["config"]
    setup = _setup(node_config_text(str(cfg["fedmedsec-config"]), context))
    pids = [int(p) for p in cfg["partition-ids"]]
    k = int(context.node_config.get("partition-id", 0))
    n_nodes = int(context.node_config.get("num-partitions", 1))
    bad = [p for p in pids if not 0 <= p < setup.n or p % n_nodes != k]
    if bad:
        raise ValueError(f"partition ids {bad[:5]} are not served by node {k} of {n_nodes} "
                         f"(partition_id % {n_nodes} == {k}, below {setup.n})")
    return setup, pids


def start_run(context: Context, run_token: str) -> None:
    """Drop the hospital states of an earlier run on this node (another ``run-token``)."""
    st = context.state
    run = st.get("fedmedsec-run")
    if run is None or run.get("token") != run_token:
        for key in [k for k in st.keys() if k.startswith(("fedmedsec/", "fedmedsec-arrays/"))]:
            del st[key]
        st["fedmedsec-run"] = ConfigRecord({"token": run_token})


def _node_record() -> MetricRecord:
    return MetricRecord({"max-rss-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _error_record(e: Exception, msg: Message) -> ConfigRecord:
    """One hospital's failure on a batched node: the exception's text in a driver-preloaded
    simulation, ``safe_error`` (logged in full here) anywhere else."""
    if _message_driven(msg):
        return ConfigRecord({"reason": f"{type(e).__name__}: {e}"[:500]})
    log.error("a hospital's %s failed on this node", "batch", exc_info=e)
    return ConfigRecord({"reason": safe_error(e)})


@app.train(BATCH)
@node_guard
def train_batch(msg: Message, context: Context) -> Message:
    setup, pids = _batch(msg, context)
    cfg = msg.content["config"]
    server_round = int(cfg["server-round"])
    start_run(context, str(cfg["run-token"]))
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    out = RecordDict()
    for pid in pids:
        try:
            state = load_state(context, pid)
            records = _train_records(setup, pid, global_vec, server_round, state, model, None)
            save_state(context, state, pid)
            for name, record in records.items():
                out[f"{pid}/{name}"] = record
        except Exception as e:  # noqa: BLE001 - one hospital's failure is its own reply
            out[f"{pid}/error"] = _error_record(e, msg)
    out["node"] = _node_record()
    return Message(content=out, reply_to=msg)


@app.evaluate(BATCH)
@node_guard
def evaluate_batch(msg: Message, context: Context) -> Message:
    setup, pids = _batch(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    out = RecordDict()
    for pid in pids:
        try:
            for name, record in _evaluate_records(setup, pid, global_vec, server_round).items():
                out[f"{pid}/{name}"] = record
        except Exception as e:  # noqa: BLE001
            out[f"{pid}/error"] = _error_record(e, msg)
    out["node"] = _node_record()
    return Message(content=out, reply_to=msg)


@app.query()
@node_guard
def query(msg: Message, context: Context) -> Message:
    """Who are you (the partition id, so the server can key everything by it, and the
    federation size ``num-partitions`` where the node config has it), or one step
    of the hospital-local data protocol (``deployment.py``): this node's schema, or the
    statistics of its training rows under the agreed encoding. Only schemas and statistics
    leave; a mistake in the node's file comes back as one line."""
    pid = int(context.node_config.get("partition-id", -1))
    cfg_rec = msg.content["config"] if "config" in msg.content else {}
    stage = cfg_rec.get("fedmedsec-stage") if cfg_rec else None
    if stage is None:  # with the federation size where the node knows it (num-partitions)
        metrics = {"partition-id": float(pid)}
        if "num-partitions" in context.node_config:
            metrics["num-partitions"] = float(int(context.node_config["num-partitions"]))
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
    from ..config import ConfigError
    from ..deployment import node_schema, node_statistics

    try:
        cfg = _config(node_config_text(str(cfg_rec["fedmedsec-config"]), context, protocol=True))
        payload = json.loads(str(cfg_rec.get("payload", "{}")))
        if stage == "schema":
            result = node_schema(cfg, _own_file(context))
        elif stage == "stats":
            result = node_statistics(cfg, _own_file(context), payload["encoding"], pid)
        else:
            raise DataError(f"unknown data-protocol stage {str(stage)[:40]!r}")
        reply = ConfigRecord({"result": json.dumps(result)})
    except (DataError, ConfigError, PartitionError, NodePolicyError, OSError) as e:
        # the detail (a header line, a cell, a path) stays in this node's log
        log.error("data protocol (%s) failed on this node", stage, exc_info=e)
        reply = ConfigRecord({"error": safe_error(e)})
    return Message(content=RecordDict({"config": reply}), reply_to=msg)
