"""The ClientApp on a hospital's SuperNode (flower/client_app.py with node_policy): its own
data-path is the only file it opens, data.server_test is never opened there, and what an
error reply carries is a fixed phrase plus the exception's type. A config whose Setup the
simulation driver preloaded (fedmedsec run on Ray) is left as it is. No SuperLink: the handlers
are called with a hand-made Context and Message."""

from __future__ import annotations

import json
import logging
import tomllib

import pytest

from fedmedsec.config import load_config
from fedmedsec.flower.node_policy import NodeError, NodePolicyError

CSV_CFG = {"experiment": {"rounds": 1, "mia": False},
           "data": {"name": "csv", "path": "/etc/passwd", "target": "num", "num_hospitals": 2},
           "model": {"name": "mlp", "hidden": [4]}}


def _context(node_config: dict):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


@pytest.fixture(scope="module", autouse=True)
def _task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old


def _text(raw: dict) -> str:
    return load_config(raw=raw).to_toml()


def test_the_nodes_data_path_replaces_what_the_coordinator_names():
    from fedmedsec.flower.client_app import node_config_text

    out = tomllib.loads(node_config_text(_text(CSV_CFG), _context({"partition-id": 0,
                                                                  "data-path": "/srv/h0.csv"})))
    assert out["data"]["path"] == "/srv/h0.csv"


def test_a_hospital_node_without_data_path_opens_no_file():
    from fedmedsec.flower.client_app import node_config_text

    with pytest.raises(NodePolicyError, match="no data-path"):
        node_config_text(_text(CSV_CFG), _context({"partition-id": 0}))


def test_an_embedded_dataset_runs_on_a_node_without_data_path():
    from fedmedsec.flower.client_app import node_config_text

    out = tomllib.loads(node_config_text(_text({"data": {"name": "wdbc", "num_hospitals": 2}}),
                                         _context({"partition-id": 0})))
    assert out["data"]["name"] == "wdbc" and "path" not in out["data"]


def test_server_test_is_refused_on_a_node_and_removed_in_the_data_protocol(tmp_path):
    from fedmedsec.flower.client_app import node_config_text

    raw = {**CSV_CFG, "data": {**CSV_CFG["data"], "server_test": "/etc/shadow"}}
    ctx = _context({"partition-id": 0, "data-path": "/srv/h0.csv"})
    with pytest.raises(NodePolicyError, match="data.server_test"):
        node_config_text(_text(raw), ctx)
    out = tomllib.loads(node_config_text(_text(raw), ctx, protocol=True))
    assert "server_test" not in out["data"] and out["data"]["path"] == "/srv/h0.csv"


def test_a_config_the_simulation_driver_preloaded_is_unchanged():
    import pickle

    from fedmedsec.experiment import build_setup
    from fedmedsec.flower import client_app

    raw = {"experiment": {"rounds": 1, "mia": False}, "data": {"name": "wdbc", "num_hospitals": 2},
           "model": {"name": "mlp", "hidden": [4]}}
    cfg = load_config(raw=raw)
    text = cfg.to_toml()
    key = client_app.setup_key(text)
    client_app.preload_setup(key, pickle.dumps(build_setup(cfg)))
    try:
        ctx = _context({"partition-id": 0, "num-partitions": 2})
        assert client_app.driven(text) and client_app.node_config_text(text, ctx) == text
        # the same config text on a node that got no Setup from a driver: the policy
        assert not client_app.driven(_text(CSV_CFG))
    finally:
        client_app._PRELOADED.pop(key, None)


def _query(stage: str, raw: dict, node_config: dict):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from fedmedsec.flower.client_app import query

    msg = Message(content=RecordDict({"config": ConfigRecord({
        "fedmedsec-stage": stage, "fedmedsec-config": _text(raw), "payload": json.dumps({})})}),
        message_type=MessageType.QUERY, dst_node_id=7)
    return query(msg, _context(node_config))


def test_the_schema_comes_from_the_nodes_own_file_not_the_one_named(tmp_path):
    own = tmp_path / "h0.csv"
    own.write_text("age,num\n" + "".join(f"{40 + i},{i % 2}\n" for i in range(20)))
    reply = _query("schema", CSV_CFG, {"partition-id": 0, "data-path": str(own)})
    rec = reply.content["config"]
    assert "error" not in rec, rec
    assert json.loads(rec["result"])["name"] == "h0"


def test_a_data_error_on_a_hospital_node_carries_no_file_contents(tmp_path, caplog):
    secret = tmp_path / "h0.csv"
    secret.write_text("patient_John_Smith,diagnosis\n1,2\n")
    with caplog.at_level(logging.ERROR, logger="fedmedsec.node"):
        reply = _query("schema", CSV_CFG, {"partition-id": 0, "data-path": str(secret)})
    err = reply.content["config"]["error"]
    assert err == "data file refused by the loader (DataError)", err
    assert "John" not in err and str(tmp_path) not in err
    assert "John_Smith" in caplog.text  # the node's own log keeps the detail


def test_a_node_without_data_path_refuses_the_data_protocol():
    reply = _query("schema", CSV_CFG, {"partition-id": 0})
    assert reply.content["config"]["error"] == "refused by this node's policy (NodePolicyError)"


def test_train_on_a_hospital_node_raises_only_the_safe_line():
    """The exception Flower turns into the error reply (str(type) + str(e)) names no path."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from fedmedsec.flower.client_app import train

    msg = Message(content=RecordDict({"config": ConfigRecord({"server-round": 1,
                                                              "fedmedsec-config": _text(CSV_CFG)})}),
                  message_type=MessageType.TRAIN, dst_node_id=7)
    with pytest.raises(NodeError) as info:
        train(msg, _context({"partition-id": 0, "data-path": "/nonexistent/secret-dir/h0.csv"}))
    assert "secret-dir" not in str(info.value) and "(" in str(info.value)
    assert info.value.__cause__ is None


# --------------------------------------------------------------------------- the ServerApp's run directory

@pytest.mark.parametrize("out", ["../../etc/x", "runs/../../x", "/etc/cron.d/x", "a/../../b"])
def test_a_flwr_users_out_cannot_leave_the_coordinators_folder(out, monkeypatch):
    from fedmedsec.config import ConfigError
    from fedmedsec.flower.app import OUT_ROOT_ENV, server_run_dir

    monkeypatch.delenv(OUT_ROOT_ENV, raising=False)
    with pytest.raises(ConfigError, match="run config 'out'"):
        server_run_dir(out, "x")


def test_out_under_the_coordinators_root_is_allowed(tmp_path, monkeypatch):
    from fedmedsec.config import ConfigError
    from fedmedsec.flower.app import OUT_ROOT_ENV, server_run_dir

    monkeypatch.setenv(OUT_ROOT_ENV, str(tmp_path))
    assert server_run_dir(str(tmp_path / "a" / "run"), "x") == (tmp_path / "a" / "run").resolve()
    assert server_run_dir("b/run", "x") == (tmp_path / "b" / "run").resolve()
    with pytest.raises(ConfigError, match="FEDMEDSEC_OUT_ROOT"):
        server_run_dir("/etc/x", "x")
    monkeypatch.delenv(OUT_ROOT_ENV)
    assert server_run_dir("runs/mine", "x") == __import__("pathlib").Path("runs/mine")
    assert str(server_run_dir("", "exp")).startswith("runs/exp-")


# --------------------------------------------------------------------------- the kit's certificates

KIT = __import__("pathlib").Path(__file__).resolve().parents[1] / "clients"


@pytest.mark.skipif(__import__("shutil").which("openssl") is None, reason="needs openssl")
def test_make_certs_keeps_ca_key_out_of_the_superlink_directory_and_start_superlink_refuses_it(tmp_path):
    import subprocess

    certs = tmp_path / "certs"
    subprocess.run(["bash", str(KIT / "make_certs.sh"), str(certs), "link.example"], check=True,
                   capture_output=True)
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "server.key", "server.pem"]
    ca = tmp_path / "certs-ca"
    assert (ca / "ca.key").is_file() and (ca.stat().st_mode & 0o077) == 0
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (certs / "ca.key").write_bytes((ca / "ca.key").read_bytes())
    res = subprocess.run(["bash", str(KIT / "start_superlink.sh"), str(certs)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=30)
    assert res.returncode == 1 and "holds ca.key" in res.stderr
    again = subprocess.run(["bash", str(KIT / "make_certs.sh"), str(certs)], capture_output=True, text=True)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
