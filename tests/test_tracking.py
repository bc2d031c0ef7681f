"""Experiment tracking (results/tracking.py): MLflow runs and TensorBoard scalars of a real
in-process run directory, read back from the store; a broken URI is one warning, never an
exception. MLflow tests skip when the ``tracking`` extra is not installed."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path

import pytest
from pydantic import ValidationError

from fedmedsec.config import load_config
from fedmedsec.engine import run_experiment
from fedmedsec.results.tracking import (
    STORE_DIR,
    TrackingConfig,
    flat_params,
    local_store,
    numeric_items,
    start_run,
)

OVERRIDES = ["simulation.backend=inprocess", "experiment.rounds=3", "data.num_hospitals=3",
             "experiment.mia=false", "experiment.name=tracked"]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """One finished run directory (no tracking), its config and summary."""
    out = tmp_path_factory.mktemp("runs") / "run"
    cfg = load_config(raw={}, overrides=OVERRIDES)
    summary = run_experiment(cfg, out)
    return out, cfg, summary


def copy_run(made_run, dest: Path) -> Path:
    src, _, _ = made_run
    shutil.copytree(src, dest)
    return dest


def rounds_of(run: Path) -> list[dict]:
    with open(run / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (float(v) if v not in ("",) and k != "evaluated_on" else v) for k, v in r.items()} for r in rows]


def replay(run: Path, cfg, summary, tracking, **kw):
    """What the engine does: start, one log_round per round, finish after summary.json."""
    tr = start_run(cfg.to_dict(), run, tracking, **kw)
    for row in rounds_of(run):
        tr.log_round(row)
    tr.finish(summary, run)
    return tr


def test_config_is_strict_and_off_by_default():
    t = TrackingConfig()
    assert (t.mlflow, t.uri, t.experiment, t.tensorboard) == (False, None, None, False)
    with pytest.raises(ValidationError):
        TrackingConfig(mlfow=True)  # a typo is an error, not silently off
    with pytest.raises(ValidationError):
        TrackingConfig(mlflow="yes")


def test_off_is_a_no_op(made_run, tmp_path, capsys):
    run = copy_run(made_run, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    for tracking in (None, {}, TrackingConfig()):
        tr = replay(run, made_run[1], made_run[2], tracking)
        assert not tr.active and tr.warnings == [] and tr.mlflow_run_id is None
    assert sorted(p.name for p in run.iterdir()) == before
    assert capsys.readouterr().err == ""


def test_flat_params_and_numbers():
    assert flat_params({"a": {"b": 1, "c": [32, 16], "d": {"e": True}}, "f": None}) == {
        "a.b": "1", "a.c": "[32, 16]", "a.d.e": "true", "f": "None"}
    assert numeric_items({"x": 1, "y": 0.5, "z": float("nan"), "w": True, "s": "ok", "n": None}) == {
        "x": 1.0, "y": 0.5}


def test_mlflow_run_holds_config_rounds_summary_and_files(made_run, tmp_path, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = copy_run(made_run, tmp_path / "run")
    _, cfg, summary = made_run
    tr = replay(run, cfg, summary, TrackingConfig(mlflow=True))
    assert tr.warnings == [] and tr.mlflow_run_id
    assert (run / STORE_DIR / "mlflow.db").is_file()  # default: a local store under the run
    uri, _ = local_store(run)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tracked")  # default experiment: experiment.name
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    want = flat_params({k: v for k, v in cfg.to_dict().items() if k != "tracking"})
    assert r.data.params == want  # every resolved key, dotted, as text
    assert "model.hidden" in want and want["simulation.backend"] == "inprocess"
    rows = rounds_of(run)
    hist = client.get_metric_history(r.info.run_id, "clean_accuracy")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == \
        [(int(x["round"]), pytest.approx(x["clean_accuracy"])) for x in rows]
    assert r.data.metrics["final.clean_accuracy"] == pytest.approx(summary["clean_accuracy"])
    assert r.data.metrics["final.cost_parameters"] == summary["cost"]["parameters"]
    files = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"summary.json", "config.toml", "rounds.csv", "clients.csv"} <= files
    assert STORE_DIR not in files  # the store does not copy itself
    assert capsys.readouterr().err == ""


def test_sweep_points_share_one_experiment_in_the_sweep_store(made_run, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "mysweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"axes": {}, "points": []}))
    _, cfg, summary = made_run
    ids = [replay(copy_run(made_run, sweep / name), cfg, summary, TrackingConfig(mlflow=True)).mlflow_run_id
           for name in ("seed=0", "seed=1")]
    assert (sweep / STORE_DIR / "mlflow.db").is_file() and not (sweep / "seed=0" / STORE_DIR).exists()
    client = MlflowClient(local_store(sweep / "seed=0")[0])
    exp = client.get_experiment_by_name("mysweep")  # default experiment: the sweep's name
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["seed=0", "seed=1"]
    assert {r.info.run_id for r in runs} == set(ids)
    assert all(r.data.tags["fedmedsec.sweep"] == str(sweep.resolve()) for r in runs)


def test_rerun_marks_the_unfinished_run_killed_and_a_raise_marks_failed(made_run, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = copy_run(made_run, tmp_path / "run")
    _, cfg, summary = made_run
    first = start_run(cfg.to_dict(), run, TrackingConfig(mlflow=True, experiment="e"))  # killed: never finished
    with pytest.raises(RuntimeError):
        with start_run(cfg.to_dict(), run, TrackingConfig(mlflow=True, experiment="e")) as second:
            raise RuntimeError("boom")
    client = MlflowClient(local_store(run)[0])
    assert client.get_run(first.mlflow_run_id).info.status == "KILLED"
    got = client.get_run(second.mlflow_run_id)
    assert got.info.status == "FAILED" and "boom" in got.data.tags["fedmedsec.error"]


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "bogus-scheme://nowhere"])
def test_broken_uri_is_one_warning_and_the_run_goes_on(made_run, tmp_path, capsys, monkeypatch, uri):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = copy_run(made_run, tmp_path / "run")
    tr = replay(run, made_run[1], made_run[2], TrackingConfig(mlflow=True, uri=uri))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: tracking: mlflow") and uri in err[0], err
    assert tr.warnings and not tr.active


def test_missing_mlflow_is_one_warning(made_run, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    run = copy_run(made_run, tmp_path / "run")
    tr = replay(run, made_run[1], made_run[2], TrackingConfig(mlflow=True))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[tracking]'" in err[0]
    assert not tr.active and not (run / STORE_DIR / "mlflow.db").exists()


def _tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of TensorBoard event files, read from the TFRecord framing (length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(logdir.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_scalars_per_round(made_run, tmp_path):
    pytest.importorskip("tensorboardX")
    run = copy_run(made_run, tmp_path / "run")
    tr = replay(run, made_run[1], made_run[2], TrackingConfig(tensorboard=True))
    assert tr.warnings == []
    got = _tb_scalars(run / "tensorboard")
    rows = rounds_of(run)
    assert got["clean_accuracy"] == [(int(r["round"]), pytest.approx(r["clean_accuracy"], abs=1e-6)) for r in rows]
    assert "round" not in got and "evaluated_on" not in got


def test_export_a_finished_sweep_one_run_per_point(made_run, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from fedmedsec.results.tracking import export_dir

    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    for name in ("a", "b", "c"):
        copy_run(made_run, sweep / name)
    trackers = export_dir(sweep, {"mlflow": True})
    assert len(trackers) == 3 and all(t.warnings == [] for t in trackers)
    client = MlflowClient(local_store(sweep / "a")[0])
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b", "c"]
    assert all(len(client.get_metric_history(r.info.run_id, "clean_accuracy")) == 3 for r in runs)
