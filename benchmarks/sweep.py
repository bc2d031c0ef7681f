"""Sweep benchmark: a 12-run sweep against 12 separate ``fedmedsec run`` processes, on Ray.

    python benchmarks/sweep.py [--rounds 3] [--repeat 1]

Two ways to run the same 12 points (quickstart, attack {none, sign_flip} x defense
{fedavg, median, trimmed_mean} x seed {0, 1}, ``experiment.rounds`` small):

  A  ``fedmedsec sweep``: one process; one Flower simulation on Ray (Ray, the actors and
     their imports start once) serves every run (``flower.simulation.SimulationPool``)
  B  12 ``fedmedsec run`` processes, one after the other (each imports everything and
     starts its own Ray and actors)

Both write the same run directories (the same numbers: tests/test_simulation.py). Prints
each wall time, the per-run mean and the ratio B/A, with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ["none", "sign_flip"]
DEFENSES = ["fedavg", "median", "trimmed_mean"]
SEEDS = [0, 1]


def grid_text(rounds: int) -> str:
    return (f'base = "{ROOT / "configs" / "quickstart.toml"}"\n[grid]\n'
            f'"attack.name" = {ATTACKS!r}\n"defense.name" = {DEFENSES!r}\n"experiment.seed" = {SEEDS!r}\n'
            f'[fixed]\n"attack.fraction" = 0.2\n"experiment.rounds" = {rounds}\n"defense.f" = 2\n'
            ).replace("'", '"')


def fedmedsec() -> list[str]:
    exe = shutil.which("fedmedsec")
    return [exe] if exe else [sys.executable, "-m", "fedmedsec.cli"]


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"benchmark: {' '.join(cmd[:3])} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = len(ATTACKS) * len(DEFENSES) * len(SEEDS)
    with tempfile.TemporaryDirectory(prefix="fms-bench-") as tmp:
        tmp = Path(tmp)
        grid = tmp / "grid.toml"
        grid.write_text(grid_text(args.rounds))
        print(f"sweep benchmark: {n} runs of quickstart, {args.rounds} rounds each, {os.cpu_count()} CPUs", flush=True)

        a = timed(fedmedsec() + ["sweep", str(grid), "--out", str(tmp / "A")])
        print(f"A  fedmedsec sweep (one Ray for all)     {a:7.1f} s  ({a / n:5.1f} s/run), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

        t0 = time.perf_counter()
        for i, (atk, dfn, seed) in enumerate(product(ATTACKS, DEFENSES, SEEDS)):
            attack = ["-s", f"attack.name={atk}"] + (["-s", "attack.fraction=0.2"] if atk != "none" else [])
            defense = ["-s", f"defense.name={dfn}"] + (["-s", "defense.f=2"] if dfn != "fedavg" else [])
            timed(fedmedsec() + ["run", "configs/quickstart.toml", "--quiet", "--out", str(tmp / "B" / str(i)),
                                 *attack, *defense, "-s", f"experiment.seed={seed}",
                                 "-s", f"experiment.rounds={args.rounds}"])
        b = time.perf_counter() - t0
        print(f"B  {n} separate fedmedsec run processes  {b:7.1f} s  ({b / n:5.1f} s/run), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

    print(f"ratio B/A (separate processes / sweep): {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
