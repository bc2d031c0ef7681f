"""A simulation attached to an existing two-node Ray cluster (``simulation.ray_address``).

The test starts a head and a worker with ``ray start --block`` (each in its own session, with
a private temp dir), runs ``fedmedsec run ... -s simulation.ray_address=...`` against them and
stops exactly the processes it started (never ``ray stop``, which would stop every Ray on the
machine). Marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHECK = Path("/work/shared/tools/check_run_dir.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (our private Ray temp dir)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.fixture
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="fmray")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    common = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    logs = Path(temp) / "logs-test"
    logs.mkdir()

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen([str(BIN / "ray"), "start", *args, *common], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def nodes_alive() -> int:
        code = ("import ray, json; ray.init(address='auto', logging_level='ERROR'); "
                "print(json.dumps(sum(n['Alive'] for n in ray.nodes())))")
        res = subprocess.run([sys.executable, "-c", code], env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                             capture_output=True, text=True, timeout=120)
        return int(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 and res.stdout.strip() else 0

    try:
        start("head", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and nodes_alive() < 1:
            time.sleep(2)
        start("worker", "--address", f"127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and nodes_alive() < 2:
            time.sleep(2)
        assert nodes_alive() == 2, "the two-node Ray cluster did not come up:\n" + "\n".join(
            p.read_text()[-2000:] for p in logs.iterdir())
        yield f"127.0.0.1:{port}"
    finally:
        for p in procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(timeout=15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        for pid in _pids_with(temp):  # Ray daemons that left our process groups
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_simulation_on_two_node_ray_cluster(ray_cluster, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedmedsec.cli", "run", str(ROOT / "configs" / "quickstart.toml"),
           "-s", "experiment.rounds=2", "-s", "data.num_hospitals=4", "-s", "experiment.mia=false",
           "-s", f"simulation.ray_address={ray_cluster}", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    check = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and len(summary["per_hospital_accuracy"]) == 4
