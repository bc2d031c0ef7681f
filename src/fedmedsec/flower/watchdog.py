"""Watchdog of one Ray simulation: a tiny process beside the driver (no imports beyond the
standard library; run as ``python watchdog.py DRIVER_PID``).

Ray's local processes (GCS, raylet, dashboard and runtime-env agents, workers) are
descendants of the driver, but when the driver is killed (SIGKILL, OOM) the raylet's two
agents are reparented to init and keep running (Ray 2.55, measured here); they also ignore
SIGTERM. This process, in its own session so a terminal's Ctrl-C does not reach it:

- every ``INTERVAL`` s records the driver's descendants that appeared after it started and
  look like Ray (the *tracked* processes, with their start times so a reused pid is never
  hit), and the summed resident memory of the driver and the tracked processes (the
  simulation's process tree), keeping its peak;
- on end of file on stdin (the driver exited or was killed) ends every tracked process
  (SIGTERM, then SIGKILL after ``GRACE`` s) and exits;
- answers one line per command on stdin: ``peak`` -> ``peak MB COUNT`` (peak summed RSS
  since the last ``reset`` and how many processes were in it), ``reset`` -> ``ok``,
  ``clean`` -> ``cleaned N`` (ends the tracked processes now), ``quit`` -> exits.

RSS is summed per process, so pages shared between processes (Ray's object store, shared
libraries) count once per process: an upper estimate of the memory the tree holds.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

INTERVAL = 0.5
GRACE = 1.0
RAY_WORDS = ("ray::", "/ray/", "raylet", "gcs_server")  # Ray titles, its package, its binaries


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``, or None when it is gone (a zombie
    is gone: it holds no memory and nothing can end it further)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()  # the command name may hold spaces and ')'
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[1]), int(rest[19])


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(w in cmd for w in RAY_WORDS)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


class Watch:
    def __init__(self, driver: int) -> None:
        self.driver = driver
        self.me = os.getpid()
        self.baseline = _descendants(driver)
        self.tracked: dict[int, int] = {}  # pid -> start time
        self.peak_kb = 0
        self.peak_count = 0

    def scan(self) -> None:
        for pid in _descendants(self.driver) - self.baseline - {self.me}:
            if pid not in self.tracked and _is_ray(pid):
                st = _stat(pid)
                if st is not None:
                    self.tracked[pid] = st[1]
        alive = {p: t for p, t in self.tracked.items() if (_stat(p) or (0, -1))[1] == t}
        self.tracked = alive
        total = _rss_kb(self.driver) + sum(_rss_kb(p) for p in alive)
        if total > self.peak_kb:
            self.peak_kb, self.peak_count = total, len(alive) + 1

    def clean(self) -> int:
        """End the tracked processes that are still the ones recorded; returns how many."""
        self.scan()
        targets = dict(self.tracked)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid, start in targets.items():
                if (_stat(pid) or (0, -1))[1] == start:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            deadline = time.monotonic() + GRACE
            while time.monotonic() < deadline and any(
                    (_stat(p) or (0, -1))[1] == t for p, t in targets.items()):
                time.sleep(0.05)
        self.tracked = {}
        return len(targets)


def main() -> int:
    driver = int(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    w = Watch(driver)
    print("ready", flush=True)
    buf = b""
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], INTERVAL)
        w.scan()
        if not ready:
            if _stat(driver) is None:  # the driver is gone (stdin should have said so)
                w.clean()
                return 0
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:  # the driver exited or was killed
            w.clean()
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd == "peak":
                print(f"peak {w.peak_kb / 1024:.1f} {w.peak_count}", flush=True)
            elif cmd == "reset":
                w.peak_kb = w.peak_count = 0
                w.scan()
                print("ok", flush=True)
            elif cmd == "clean":
                print(f"cleaned {w.clean()}", flush=True)
            elif cmd == "quit":
                return 0


if __name__ == "__main__":
    sys.exit(main())
