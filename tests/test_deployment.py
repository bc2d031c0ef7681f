"""A real Flower deployment on localhost, built with the hospital kit in clients/.

One SuperLink (TLS + SuperNode authentication) and three SuperNodes run as separate processes;
``flwr run .`` submits the experiment. Every process is started in its own session and its
process group is killed at the end. Marked ``deployment`` (run in CI; a few minutes).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "clients"
CHECK = Path("/work/shared/tools/check_run_dir.py")
BIN = Path(sys.executable).parent

EXPERIMENT = """
[experiment]
name = "deployment-test"
seed = 0
rounds = {rounds}
round_timeout = {timeout}
min_hospitals = 2
mia = false

[data]
name = "wdbc"
num_hospitals = 3
partition = "iid"

[model]
name = "mlp"

[attack]
name = "sign_flip"
hospitals = [2]

[defense]
name = "median"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Federation:
    """Processes started for the tests; ``stop`` kills every process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.env = {**os.environ, "FLWR_HOME": str(tmp / "flwr-home"),
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FEDMEDSEC_OUT_ROOT": str(tmp.parent),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.procs: dict[str, subprocess.Popen] = {}

    def sh(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(list(args), env=self.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout)
        assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
        return res

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(list(args), env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=10)
                # children of the group (SuperExec, app processes) may outlive the leader
                os.killpg(p.pid, signal.SIGKILL)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
            break

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def supernode(self, name: str, key: str, node_config: str, **extra: str) -> subprocess.Popen:
        args = [str(KIT / "start_supernode.sh"), "--superlink", f"127.0.0.1:{self.port}",
                "--ca", str(self.tmp / "certs" / "ca.crt"), "--key", str(self.tmp / "keys" / key),
                "--node-config", node_config, "--port", str(_free_port())]
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        return self.start(name, *args)

    def online(self) -> int:
        res = self.sh(str(BIN / "flwr"), "supernode", "list", "fedmedsec", "--format", "json", timeout=60)
        text = res.stdout[res.stdout.index("{"):]
        return sum(n.get("status") == "online" for n in json.loads(text).get("nodes", []))

    def run(self, out: Path, rounds: int, timeout: int, wait: float = 600,
            during=None) -> subprocess.CompletedProcess:
        cfg = self.tmp / f"{out.name}.toml"
        cfg.write_text(EXPERIMENT.format(rounds=rounds, timeout=timeout))
        rc = f'config="{cfg}" out="{out}"'
        p = self.start(f"flwr-run-{out.name}", str(BIN / "flwr"), "run", ".", "fedmedsec", "--stream",
                       "--run-config", rc)
        deadline = time.monotonic() + wait
        while p.poll() is None and time.monotonic() < deadline:
            if during is not None and during():
                during = None
            time.sleep(1)
        if p.poll() is None:
            self.kill(f"flwr-run-{out.name}")
            pytest.fail(f"flwr run did not finish in {wait} s:\n{self.log(f'flwr-run-{out.name}')[-3000:]}")
        log = self.log(f"flwr-run-{out.name}")
        # `flwr run --stream` exits 0 even when the ServerApp raised: look at what it wrote
        assert (out / "summary.json").is_file(), f"the run wrote no summary.json:\n{log[-3000:]}"
        return subprocess.CompletedProcess(p.args, p.returncode, log, "")


def _wait(pred, timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployment")
    fed = Federation(tmp)
    try:
        fed.sh(str(KIT / "make_certs.sh"), str(tmp / "certs"))
        for h in ("hospital-0", "hospital-1", "hospital-2", "rogue"):
            fed.sh(str(KIT / "make_node_key.sh"), str(tmp / "keys"), h)
        fed.start("superlink", str(KIT / "start_superlink.sh"), str(tmp / "certs"), "--host", "127.0.0.1",
                  "--port", str(fed.port))
        _wait(lambda: "Uvicorn running on https://" in fed.log("superlink"), 120, "the SuperLink")
        fed.sh(str(KIT / "flwr_connection.sh"), "fedmedsec", f"127.0.0.1:{fed.port}", str(tmp / "certs" / "ca.crt"))
        for h in ("hospital-0", "hospital-1", "hospital-2"):
            fed.sh(str(KIT / "register_node.sh"), str(tmp / "keys" / f"{h}.pub"), "fedmedsec")
        for i in range(2):
            fed.supernode(f"supernode-{i}", f"hospital-{i}", str(KIT / "node-configs" / f"hospital-{i}.toml"))
        fed.supernode("supernode-2", "hospital-2", str(KIT / "node-configs" / "red-team-attacker.toml"))
        _wait(lambda: fed.online() == 3, 180, "three SuperNodes online", interval=3)
        yield fed
    finally:
        fed.stop()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tls_authenticated_federation_with_attacker_and_median(federation, tmp_path):
    """Two rounds over three authenticated TLS SuperNodes, one of them the red-team attacker
    (sign flip), aggregated by the coordinate-wise median: the run directory is complete."""
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = federation.run(out, rounds=2, timeout=120)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:]
    check = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rows = _rows(out / "clients.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert {r["partition_id"] for r in rows if r["malicious"] == "1"} == {"2"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2
    # the median of two honest updates and one flipped one still learns wdbc
    assert summary["clean_accuracy"] > 0.8
    print(f"deployment run: {took:.1f} s")


def test_unregistered_supernode_is_refused(federation):
    """A SuperNode whose public key was never registered cannot join."""
    p = federation.supernode("rogue", "rogue", "partition-id=0", max_retries="1", max_wait_time="30")
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the unregistered SuperNode was not refused within 120 s")
    finally:
        federation.kill("rogue")
    assert p.returncode != 0
    assert "Failed to activate SuperNode" in federation.log("rogue")
    assert "No SuperNode found with the given public key" in federation.log("superlink")
    assert federation.online() == 3


def test_killed_supernode_is_recorded_as_dropout(federation, tmp_path):
    """Killing a hospital's SuperNode after round 1 does not stop the run: the missing reply
    is recorded ("dropped") and the remaining hospitals finish the experiment."""
    out = tmp_path / "run"

    def kill_after_round_1() -> bool:
        f = out / "rounds.csv"
        if f.is_file() and len(_rows(f)) >= 1:
            federation.kill("supernode-1")
            return True
        return False

    res = federation.run(out, rounds=3, timeout=40, during=kill_after_round_1)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "supernode-1" not in federation.procs, "the SuperNode was never killed"
    check = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rows = _rows(out / "clients.csv")
    rounds = _rows(out / "rounds.csv")
    assert len(rounds) == 3
    dropped = [r for r in rows if r["status"] == "dropped"]
    assert dropped and {r["partition_id"] for r in dropped} == {"1"}
    assert all(r["round"] != "1" for r in dropped)
    assert {r["partition_id"] for r in rows if r["round"] == "3" and r["status"] == "ok"} == {"0", "2"}
