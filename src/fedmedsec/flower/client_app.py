"""The hospital's ClientApp (Flower Message API).

Messages carry the global model arrays and a config record with ``server-round`` and the
resolved experiment config (TOML), so one ClientApp serves every experiment (the Setup is
built once per config and process, or received from the simulation driver). The node's
``partition-id`` comes from ``context.node_config`` (set by the simulation engine, or by
``--node-config`` on a real SuperNode, which may also give ``data-path`` and ``role``).

``data-path`` overrides the experiment's ``data.path`` on this node (file datasets such as
csv or medmnist; ignored for datasets that read no file); ``role = "attacker"`` makes this
node play the configured attack (red-team runs), ``role = "honest"`` keeps it honest.

Two kinds of messages:

- ``train`` / ``evaluate`` (a deployment, ``flwr run``): the node is one hospital, its
  ``partition-id``; its state across rounds is ``context.state["fedmedsec"]``;
- ``train.batch`` / ``evaluate.batch`` (the Ray simulation, ``batched.BatchedFlowerTransport``):
  node k of K (``partition-id`` k, ``num-partitions`` K) serves the hospitals with
  ``partition_id % K == k``; the config's ``partition-ids`` lists those asked in this
  message. Each hospital's reply stays separate: records ``"<pid>/arrays"`` and
  ``"<pid>/metrics"`` (train), ``"<pid>/metrics"``, ``"<pid>/counts-clean"`` and
  ``"<pid>/counts-trigger"`` (evaluate), the same records as a one-hospital reply, or
  ``"<pid>/error"`` (a ConfigRecord with ``reason``) when that hospital failed. Each
  hospital's state is ``context.state["fedmedsec/<pid>"]``, emptied when the config's
  ``run-token`` changes (the next run of a sweep on the same nodes).
"""

from __future__ import annotations

import hashlib
import pickle
import resource
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..client import local_evaluate, local_train
from ..experiment import Setup, setup_from_toml
from ..training import set_torch_threads
from .records import record_to_vector, to_record

set_torch_threads()

app = ClientApp()

#: Setups sent by the simulation driver, by ``setup_key`` of their config text
_PRELOADED: dict[str, Setup] = {}
_MAX_PRELOADED = 2
BATCH = "batch"  # the message action of the batched handlers ("train.batch", "evaluate.batch")


def setup_key(cfg_text: str) -> str:
    """The cache key of a resolved config's text (the same on the driver and the nodes)."""
    return hashlib.sha256(cfg_text.encode()).hexdigest()


def preload_setup(key: str, blob: bytes, needs_privacy: bool = False) -> bool:
    """Cache the driver's pickled Setup under ``key`` (simulation only: the driver's actor
    call, never a message, so no node unpickles what a server sends)."""
    if needs_privacy:
        from .. import privacy as _privacy  # noqa: F401 - Opacus imported with loggers protected
    _PRELOADED[key] = pickle.loads(blob)
    while len(_PRELOADED) > _MAX_PRELOADED:
        _PRELOADED.pop(next(iter(_PRELOADED)))
    return True


def _setup(cfg_text: str) -> Setup:
    setup = _PRELOADED.get(setup_key(cfg_text))
    if setup is not None:
        return setup
    # build_setup may import Opacus (DP-SGD checks): import it first with loggers protected
    from .. import privacy as _privacy  # noqa: F401

    return setup_from_toml(cfg_text)


def _with_data_path(cfg_text: str, data_path: str) -> str:
    """The resolved config with ``data.path`` replaced by this node's ``data-path`` (for
    file datasets such as csv and medmnist, whose parameters have a ``path``)."""
    import tomllib

    import tomli_w

    from ..data import DATASETS

    cfg = tomllib.loads(cfg_text)
    data = cfg.setdefault("data", {})
    try:
        has_path = "path" in DATASETS.get(str(data.get("name", "wdbc"))).params.model_fields
    except KeyError:  # not registered here: the config itself says whether it reads a file
        has_path = "path" in data
    if not has_path:
        return cfg_text  # the dataset reads no file (e.g. the embedded wdbc)
    data["path"] = data_path
    return tomli_w.dumps(cfg)


def _node(msg: Message, context: Context):
    cfg_text = str(msg.content["config"]["fedmedsec-config"])
    data_path = context.node_config.get("data-path")
    if data_path:
        cfg_text = _with_data_path(cfg_text, str(data_path))
    setup = _setup(cfg_text)
    pid = int(context.node_config["partition-id"])
    return setup, setup.data.hospitals[pid], pid


def _role(context: Context) -> bool | None:
    role = context.node_config.get("role")
    if role is None:
        return None
    return str(role).lower() in ("attacker", "malicious")


def _state(context: Context) -> ConfigRecord:
    """This node's state across rounds (e.g. the DP accountant's history)."""
    if "fedmedsec" not in context.state:
        context.state["fedmedsec"] = ConfigRecord()
    return context.state["fedmedsec"]


def _train_records(setup: Setup, pid: int, global_vec, server_round: int, state: Any, model,
                   malicious: bool | None) -> dict[str, Any]:
    """One hospital's train reply: its local model (``arrays``) and ``metrics``."""
    local, metrics = local_train(setup, setup.data.hospitals[pid], global_vec, server_round, state,
                                 malicious=malicious)
    return {"arrays": to_record(model, local), "metrics": MetricRecord(metrics)}


def _evaluate_records(setup: Setup, pid: int, global_vec) -> dict[str, Any]:
    """One hospital's evaluation reply: ``metrics`` and the counts the server merges."""
    metrics, ev = local_evaluate(setup, setup.data.hospitals[pid], global_vec)
    content = {"metrics": MetricRecord(metrics), "counts-clean": MetricRecord(ev.clean.to_dict())}
    if ev.trigger is not None:
        content["counts-trigger"] = MetricRecord(ev.trigger.to_dict())
    return content


@app.train()
def train(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    content = _train_records(setup, pid, global_vec, server_round, _state(context), model, _role(context))
    return Message(content=RecordDict(content), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    return Message(content=RecordDict(_evaluate_records(setup, pid, global_vec)), reply_to=msg)


# ---------------------------------------------------------------------- batched (simulation)


def _batch(msg: Message, context: Context) -> tuple[Setup, list[int]]:
    """The Setup and the partition ids this message asks of this node; refuses ids the node
    does not serve, so each hospital's state stays on one node."""
    cfg = msg.content["config"]
    setup = _setup(str(cfg["fedmedsec-config"]))
    pids = [int(p) for p in cfg["partition-ids"]]
    k = int(context.node_config.get("partition-id", 0))
    n_nodes = int(context.node_config.get("num-partitions", 1))
    bad = [p for p in pids if not 0 <= p < setup.n or p % n_nodes != k]
    if bad:
        raise ValueError(f"partition ids {bad[:5]} are not served by node {k} of {n_nodes} "
                         f"(partition_id % {n_nodes} == {k}, below {setup.n})")
    return setup, pids


def hospital_states(context: Context, run_token: str):
    """pid -> that hospital's state record on this node, for the run ``run_token``; the
    states of an earlier run are dropped."""
    st = context.state
    run = st.get("fedmedsec-run")
    if run is None or run.get("token") != run_token:
        for key in [k for k in st.keys() if k.startswith("fedmedsec/")]:
            del st[key]
        st["fedmedsec-run"] = ConfigRecord({"token": run_token})

    def state(pid: int) -> ConfigRecord:
        key = f"fedmedsec/{pid}"
        if key not in st:
            st[key] = ConfigRecord()
        return st[key]

    return state


def _node_record() -> MetricRecord:
    return MetricRecord({"max-rss-mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _error_record(e: Exception) -> ConfigRecord:
    return ConfigRecord({"reason": f"{type(e).__name__}: {e}"[:500]})


@app.train(BATCH)
def train_batch(msg: Message, context: Context) -> Message:
    setup, pids = _batch(msg, context)
    cfg = msg.content["config"]
    server_round = int(cfg["server-round"])
    states = hospital_states(context, str(cfg["run-token"]))
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    out = RecordDict()
    for pid in pids:
        try:
            for name, record in _train_records(setup, pid, global_vec, server_round, states(pid), model,
                                               None).items():
                out[f"{pid}/{name}"] = record
        except Exception as e:  # noqa: BLE001 - one hospital's failure is its own reply
            out[f"{pid}/error"] = _error_record(e)
    out["node"] = _node_record()
    return Message(content=out, reply_to=msg)


@app.evaluate(BATCH)
def evaluate_batch(msg: Message, context: Context) -> Message:
    setup, pids = _batch(msg, context)
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    out = RecordDict()
    for pid in pids:
        try:
            for name, record in _evaluate_records(setup, pid, global_vec).items():
                out[f"{pid}/{name}"] = record
        except Exception as e:  # noqa: BLE001
            out[f"{pid}/error"] = _error_record(e)
    out["node"] = _node_record()
    return Message(content=out, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Who are you: the partition id (and the federation size where the node knows it,
    ``num-partitions``), so the server can key everything by partition id."""
    nc = context.node_config
    metrics = {"partition-id": float(int(nc.get("partition-id", -1)))}
    if "num-partitions" in nc:
        metrics["num-partitions"] = float(int(nc["num-partitions"]))
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
