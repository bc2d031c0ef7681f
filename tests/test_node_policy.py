"""The hospital node's policy (flower/node_policy.py): its own data-path wins, no other
file is opened, and nothing of an exception's message leaves the node."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmedsec.config import ConfigError
from fedmedsec.data.base import DataError
from fedmedsec.data.partition import PartitionError
from fedmedsec.flower.node_policy import (
    _PHRASES,
    NodeError,
    NodePolicyError,
    allowed_data_path,
    guarded,
    restrict_config,
    safe_error,
)


def test_the_nodes_own_data_path_wins_over_what_the_coordinator_asks():
    node = {"partition-id": 0, "data-path": "/srv/h0/data.csv"}
    assert allowed_data_path(node, "/etc/passwd") == "/srv/h0/data.csv"
    assert allowed_data_path(node, ["/a.csv", "/b.csv"]) == "/srv/h0/data.csv"
    assert allowed_data_path(node, None) == "/srv/h0/data.csv"


@pytest.mark.parametrize("requested", ["/etc/passwd", "data/x.csv", "", ["/a.csv"]])
def test_a_node_without_data_path_opens_no_file_the_coordinator_names(requested):
    with pytest.raises(NodePolicyError, match="no data-path"):
        allowed_data_path({"partition-id": 0}, requested)


def test_a_node_without_data_path_runs_datasets_that_read_no_file():
    assert allowed_data_path({"partition-id": 0}, None) is None


@pytest.mark.parametrize("bad", ["", "   ", 5, True])
def test_a_malformed_data_path_is_refused(bad):
    with pytest.raises(NodePolicyError, match="non-empty path"):
        allowed_data_path({"data-path": bad}, "/x.csv")


def test_restrict_config_replaces_data_path_and_copies():
    cfg = {"data": {"name": "csv", "path": "/etc/shadow", "target": "y"}, "experiment": {"seed": 1}}
    out = restrict_config(cfg, {"data-path": "/srv/h.csv"}, reads_file=True)
    assert out["data"]["path"] == "/srv/h.csv" and out["experiment"] == {"seed": 1}
    assert cfg["data"]["path"] == "/etc/shadow"  # the input is not mutated


def test_restrict_config_refuses_files_the_coordinator_chose_and_escaping_names():
    node = {"data-path": "/srv/mitbih"}
    with pytest.raises(NodePolicyError, match="data.server_test"):
        restrict_config({"data": {"name": "csv", "path": "x", "server_test": "/etc/passwd"}}, node, True)
    for bad in (["../../etc/passwd"], ["a/b"], [".."], ["x\\y"], "100"):
        with pytest.raises(NodePolicyError, match="plain record names"):
            restrict_config({"data": {"name": "ecg_wfdb", "path": "x", "records": bad}}, node, True)
    ok = restrict_config({"data": {"name": "ecg_wfdb", "path": "x", "records": ["100", "101"]}}, node, True)
    assert ok["data"]["records"] == ["100", "101"] and ok["data"]["path"] == "/srv/mitbih"


def test_restrict_config_drops_path_for_datasets_that_read_none():
    out = restrict_config({"data": {"name": "wdbc", "path": "/etc/passwd"}}, {}, reads_file=False)
    assert "path" not in out["data"]
    with pytest.raises(NodePolicyError):
        restrict_config({"data": {"name": "csv", "path": "/etc/passwd"}}, {}, reads_file=True)


VOCABULARY = {p for _, p in _PHRASES} | {"internal error on this node"}


@pytest.mark.parametrize("exc, phrase", [
    (FileNotFoundError(2, "No such file", "/etc/secret"), "data file not found"),
    (PermissionError(13, "denied", "/root/x"), "data file not readable (permission)"),
    (IsADirectoryError(21, "is a dir", "/srv"), "data path is not a file"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "data file is not text in the expected encoding"),
    (DataError("/etc/passwd: no column 'root:x:0:0:root:/root:/bin/bash' (data.target)"), "data file refused"),
    (PartitionError("hospital 3 gets 1 record"), "too few records"),
    (ConfigError("data.target = 'age': ...", key="data.target"), "experiment config refused by this node"),
    (NodePolicyError("no data-path"), "refused by this node's policy"),
    (MemoryError(), "out of memory"),
    (RuntimeError("patient 1234 age 87"), "internal error on this node"),
])
def test_safe_error_is_a_fixed_phrase_and_the_type(exc, phrase):
    text = safe_error(exc)
    assert text.startswith(phrase) and f"({type(exc).__name__}" in text
    for secret in ("/etc", "root:x", "1234", "87", "/root", "/srv"):
        assert secret not in text


def test_safe_error_names_a_config_key_but_no_value():
    text = safe_error(ConfigError("data.target = 'John Smith': no such column", key="data.target"))
    assert text == "experiment config refused by this node (ConfigError at data.target)"
    # a key that is not a plain config key (it could carry text) is left out
    assert "at" not in safe_error(ConfigError("x", key="data.target = 'John'")).split("(")[1]


@settings(max_examples=200, deadline=None)
@given(message=st.text(), kind=st.sampled_from([ValueError, RuntimeError, KeyError, OSError, DataError,
                                                ConfigError, TypeError, ZeroDivisionError]))
def test_safe_error_never_carries_the_message(message, kind):
    """Whatever the message, the reply is one of the fixed phrases plus a type name."""
    text = safe_error(kind(message))
    phrase, _, rest = text.partition(" (")
    assert phrase in VOCABULARY
    assert rest == f"{kind.__name__})"
    assert "\n" not in text and len(text) < 120


def test_safe_error_of_an_exception_type_with_an_odd_name():
    odd = type("Bad Name\nwith newline", (ValueError,), {})
    assert safe_error(odd("secret")) == "internal error on this node (Exception)"


def test_guarded_logs_the_full_error_locally_and_raises_only_the_safe_line(caplog):
    @guarded
    def train(msg, context):
        raise DataError("/srv/h0.csv: column 'age' has non-numeric value 'John Smith' in rows 4")

    with caplog.at_level(logging.ERROR, logger="fedmedsec.node"), pytest.raises(NodeError) as info:
        train(None, None)
    assert str(info.value) == "data file refused by the loader (DataError)"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "John Smith" in caplog.text  # the hospital's own log keeps the detail


def test_guarded_passes_results_through():
    assert guarded(lambda a, b=2: a + b)(1, b=3) == 4
