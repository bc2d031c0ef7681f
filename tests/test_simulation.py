"""End to end on real Flower and Ray: the quickstart through the CLI and `flwr run .`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TIMING = {"round_seconds", "elapsed_seconds"}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def _cli_run(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "fedmedsec.cli", "run", "configs/quickstart.toml", "--out", str(out)]
    for o in overrides:
        args += ["-s", o]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_quickstart_runs_on_ray_and_is_reproducible(tmp_path, check_run_dir):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        r = _cli_run(out, "experiment.rounds=4")
        assert r.returncode == 0, r.stderr[-2000:]
        assert "round 4/4" in r.stdout and "clean accuracy" in r.stdout
        assert check_run_dir(out) == []
    s = json.loads((runs[0] / "summary.json").read_text())
    assert s["rounds"] == 4 and s["clean_accuracy"] > 0.8
    assert set(s["per_hospital_accuracy"]) == {str(i) for i in range(10)}
    assert s["attack_success_rate"] is None and s["epsilon"] is None
    # same config and seed: identical numbers, round by round and client by client
    assert _rows(runs[0] / "rounds.csv") == _rows(runs[1] / "rounds.csv")
    assert _rows(runs[0] / "clients.csv") == _rows(runs[1] / "clients.csv")
    # the in-process backend runs the same logic without Flower: the same numbers
    c = tmp_path / "c"
    r = _cli_run(c, "experiment.rounds=4", "simulation.backend=inprocess")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _rows(c / "rounds.csv") == _rows(runs[0] / "rounds.csv")
    s2 = json.loads((runs[1] / "summary.json").read_text())
    assert s["clean_accuracy"] == s2["clean_accuracy"]
    assert s["per_hospital_accuracy"] == s2["per_hospital_accuracy"]
    # round_seconds is the whole round: consecutive elapsed_seconds differ by it
    with open(runs[0] / "rounds.csv", newline="") as fh:
        timing = [(float(r["round_seconds"]), float(r["elapsed_seconds"])) for r in csv.DictReader(fh)]
    for (_, before), (secs, after) in zip(timing, timing[1:]):
        assert secs == pytest.approx(after - before, rel=0.1)


def test_flwr_run_uses_the_same_apps(tmp_path, check_run_dir):
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr"), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1")
    out = tmp_path / "run"
    cmd = ["flwr", "run", ".", "--stream", "--federation-config", "num-supernodes=10", "--run-config",
           f'config="configs/quickstart.toml" overrides="experiment.rounds=2" out="{out}"']
    flwr = Path(sys.executable).with_name("flwr")
    cmd[0] = str(flwr)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=420)
    finally:
        _stop_local_superlink(env["FLWR_HOME"])
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (out / "summary.json").is_file(), output[-3000:]
    assert check_run_dir(out) == []
    s = json.loads((out / "summary.json").read_text())
    assert s["rounds"] == 2 and s["clean_accuracy"] > 0.5
    assert s["cost"]["peak_rss_mb"] > 0  # the same entry point as `fedmedsec run`
    # the same numbers as the in-process backend
    ref = tmp_path / "inprocess"
    r = _cli_run(ref, "experiment.rounds=2", "simulation.backend=inprocess")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _rows(out / "rounds.csv") == _rows(ref / "rounds.csv")


def _stop_local_superlink(flwr_home: str) -> None:
    """`flwr run` starts a local SuperLink that outlives it; stop the ones using our home."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if ("flower-superlink" in args or "flower-superexec" in args or "flwr-simulation" in args):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if f"FLWR_HOME={flwr_home}".encode() in env:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
