"""Stopping a Ray run leaves nothing behind, and runs that cannot start say so at once.

Each test starts ``fedmedsec run`` (or a small driver) as a process in its own session and
process group, like a terminal job, so ``killpg(SIGINT)`` is a terminal's Ctrl-C and every
process Ray starts for it is recognisable by its session id; the tests end whatever is left
of that session when they finish. The watchdog test needs no Ray (fast); the others start
Ray (slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()  # state, ppid, pgrp, session, ...


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st and int(st[3]) == sid and st[0] not in ("Z", "X"):
                out.append(int(d.name))
    return out


def _watchdogs_of(pid: int) -> list[int]:
    """Watchdog processes started for driver ``pid`` (they run in their own session)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            st = _stat(int(d.name))
            if len(cmd) >= 3 and cmd[1].endswith(b"watchdog.py") and cmd[2] == str(pid).encode() \
                    and st and st[0] not in ("Z", "X"):
                out.append(int(d.name))
    return out


def _wait_gone(pids_fn, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids_fn()
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = pids_fn()
    return left


def _kill_all(sid: int, driver: int) -> None:
    for pid in _session(sid) + _watchdogs_of(driver):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_run(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fedmedsec.cli", "run", str(ROOT / "configs" / "quickstart.toml"),
           "--out", str(tmp_path / "run")]
    for o in overrides:
        cmd += ["-s", o]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_as_a_foreground_job)


def _as_a_foreground_job() -> None:
    """A terminal's foreground job has SIGINT at its default; a test run launched in the
    background of a non-interactive shell (``pytest &``, ``nohup``) inherits it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _until_round(proc: subprocess.Popen, k: int, timeout: float = 300) -> str:
    """Read the run's output until its k-th round line."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if f"round {k:>3}/" in line:
            return seen
    raise AssertionError(f"no round {k} line: {seen[-2000:]} {proc.stderr.read()[-2000:] if proc.poll() else ''}")


def test_the_watchdog_ends_rays_processes_when_the_driver_is_killed(tmp_path):
    """No Ray: a driver starts the watchdog and a child titled like a Ray worker, then is
    SIGKILLed; the child and the watchdog are gone within seconds. The watchdog also
    reports the tree's peak memory."""
    driver = textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from fedmedsec.flower.runtime import _Watchdog
        w = _Watchdog()
        child = subprocess.Popen(["bash", "-c", "exec -a ray::FakeWorker sleep 300"])
        unrelated = subprocess.Popen(["sleep", "300"])
        time.sleep(1.5)
        print(child.pid, unrelated.pid, w.peak(), flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child, unrelated, *peak = proc.stdout.readline().replace("(", " ").replace(")", " ").replace(",", " ").split()
        assert float(peak[0]) > 10 and int(peak[1]) == 2  # the driver and the fake Ray worker
        assert _watchdogs_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert _wait_gone(lambda: [p for p in (int(child),) if _stat(p) and _stat(p)[0] != "Z"], 10) == []
        assert _wait_gone(lambda: _watchdogs_of(proc.pid), 10) == []
        assert _stat(int(unrelated)) is not None  # only what looks like Ray is ended
    finally:
        _kill_all(proc.pid, proc.pid)


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_run_within_seconds_without_a_traceback(tmp_path):
    proc = _start_run(tmp_path, "experiment.rounds=500", "experiment.mia=false")
    try:
        _until_round(proc, 3)
        assert len(_session(proc.pid)) >= 4  # the driver and Ray's processes
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground job
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10, f"took {time.monotonic() - t0:.1f} s"
        assert proc.returncode == 130
        assert err.strip().splitlines()[-1].strip() == "interrupted" and "Traceback" not in err, err[-2000:]
        assert _wait_gone(lambda: _session(proc.pid), 10) == []
        assert _wait_gone(lambda: _watchdogs_of(proc.pid), 10) == []
    finally:
        _kill_all(proc.pid, proc.pid)


@pytest.mark.slow
def test_sigkill_of_the_driver_leaves_no_ray_process_running(tmp_path):
    proc = _start_run(tmp_path, "experiment.rounds=500", "experiment.mia=false")
    try:
        _until_round(proc, 2)
        assert len(_session(proc.pid)) >= 4
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = _wait_gone(lambda: _session(proc.pid), 15)
        assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left if _stat(p)]
        assert _wait_gone(lambda: _watchdogs_of(proc.pid), 10) == []
    finally:
        _kill_all(proc.pid, proc.pid)


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("simulation.ray_address=bogus.invalid:1", "simulation.ray_address = 'bogus.invalid:1': unknown host"),
    ("simulation.ray_address=127.0.0.1:9", "simulation.ray_address = '127.0.0.1:9': cannot connect"),
    ("simulation.num_cpus_per_client=100", "simulation.num_cpus_per_client = 100: this machine has"),
    ("simulation.num_gpus_per_client=64", "simulation.num_gpus_per_client = 64: "),
])
def test_runs_that_cannot_start_fail_in_one_line_within_30_s(tmp_path, override, message):
    t0 = time.monotonic()
    proc = _start_run(tmp_path, override)
    try:
        out, err = proc.communicate(timeout=120)
        assert time.monotonic() - t0 < 30, f"took {time.monotonic() - t0:.1f} s"
        assert proc.returncode == 2
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], err[-2000:]
        assert _wait_gone(lambda: _session(proc.pid), 10) == []
        assert _wait_gone(lambda: _watchdogs_of(proc.pid), 10) == []
    finally:
        _kill_all(proc.pid, proc.pid)
