"""The hospital's ClientApp (Flower Message API).

Messages carry the global model arrays and a config record with ``server-round`` and the
resolved experiment config (TOML), so one ClientApp serves every experiment. The node's
``partition-id`` comes from ``context.node_config`` (set by the simulation engine, or by
``--node-config`` on a real SuperNode, which may also give ``data-path`` and ``role``).

``data-path`` overrides the experiment's ``data.path`` on this node (file datasets such as
csv or medmnist; ignored for datasets that read no file); ``role = "attacker"`` makes this
node play the configured attack (red-team runs), ``role = "honest"`` keeps it honest.
"""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .. import privacy as _privacy  # noqa: F401  (imports Opacus with loggers protected)
from ..client import local_evaluate, local_train
from ..data.base import DataError
from ..data.partition import PartitionError
from ..deployment import node_setup
from ..experiment import setup_from_toml
from ..training import set_torch_threads
from .records import record_to_vector, to_record

set_torch_threads()

app = ClientApp()


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
    pid = int(context.node_config["partition-id"])
    data_path = context.node_config.get("data-path")
    if "fedmedsec-data" in msg.content["config"]:
        # hospital-local data: this node's own file, encoded and preprocessed as agreed
        setup = node_setup(_config(cfg_text), json.loads(str(msg.content["config"]["fedmedsec-data"])),
                           _own_file(context), pid)
        return setup, setup.data.hospitals[pid], pid
    if data_path:
        cfg_text = _with_data_path(cfg_text, str(data_path))
    setup = setup_from_toml(cfg_text)
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


def load_state(context: Context) -> dict:
    """This hospital's state across rounds as a plain dict (e.g. the DP accountant's
    history, an attack's last global model): scalars and lists live in a ConfigRecord,
    tensors in an ArrayRecord of ``context.state``."""
    out: dict = {}
    if "fedmedsec" in context.state:
        out.update(dict(context.state["fedmedsec"]))
    if "fedmedsec-arrays" in context.state:
        for k, a in context.state["fedmedsec-arrays"].items():
            out[k] = torch.from_numpy(a.numpy().copy())
    return out


def save_state(context: Context, state: dict) -> None:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    context.state["fedmedsec"] = ConfigRecord({k: v for k, v in state.items() if k not in tensors})
    if tensors:
        context.state["fedmedsec-arrays"] = ArrayRecord({k: v.detach().clone() for k, v in tensors.items()})


@app.train()
def train(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    server_round = int(msg.content["config"]["server-round"])
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    state = load_state(context)
    local, metrics = local_train(setup, hospital, global_vec, server_round, state,
                                 malicious=_role(context))
    save_state(context, state)
    content = RecordDict({"arrays": to_record(model, local), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    setup, hospital, pid = _node(msg, context)
    model = setup.new_model()
    global_vec = record_to_vector(model, msg.content["arrays"])
    server_round = int(msg.content["config"]["server-round"])
    metrics, ev = local_evaluate(setup, hospital, global_vec, server_round)
    content = {"metrics": MetricRecord(metrics), "counts-clean": MetricRecord(ev.clean.to_dict())}
    if ev.trigger is not None:
        content["counts-trigger"] = MetricRecord(ev.trigger.to_dict())
    if ev.robustness is not None:
        content["evasion"] = ConfigRecord({"rows": json.dumps(ev.robustness)})
    if ev.mia is not None:
        content["mia"] = ConfigRecord({"audit": json.dumps(ev.mia)})
    return Message(content=RecordDict(content), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Who are you (the partition id, so the server can key everything by it), or one step
    of the hospital-local data protocol (``deployment.py``): this node's schema, or the
    statistics of its training rows under the agreed encoding. Only schemas and statistics
    leave; a mistake in the node's file comes back as one line."""
    pid = int(context.node_config.get("partition-id", -1))
    cfg_rec = msg.content["config"] if "config" in msg.content else {}
    stage = cfg_rec.get("fedmedsec-stage") if cfg_rec else None
    if stage is None:
        return Message(content=RecordDict({"metrics": MetricRecord({"partition-id": float(pid)})}),
                       reply_to=msg)
    from ..config import ConfigError
    from ..deployment import node_schema, node_statistics

    try:
        cfg = _config(str(cfg_rec["fedmedsec-config"]))
        payload = json.loads(str(cfg_rec.get("payload", "{}")))
        if stage == "schema":
            result = node_schema(cfg, _own_file(context))
        elif stage == "stats":
            result = node_statistics(cfg, _own_file(context), payload["encoding"], pid)
        else:
            raise DataError(f"unknown data-protocol stage {str(stage)[:40]!r}")
        reply = ConfigRecord({"result": json.dumps(result)})
    except (DataError, ConfigError, PartitionError) as e:
        reply = ConfigRecord({"error": str(e).splitlines()[0][:300]})
    return Message(content=RecordDict({"config": reply}), reply_to=msg)
