"""Overhead of Flower on Ray against the in-process backend: the scaling curve in one
process run (both backends under the same load).

The same experiment on both backends (identical numbers, tested): synthetic ECG
(100 sites x 200 records, iid over N hospitals, GroupNorm 1D CNN), 5 rounds of 1 local
epoch, every hospital trains and evaluates every round, so the training work is the same
for every N and only the per-hospital overhead grows. 10,000 hospitals (opt-in) use
100 sites x 400 records (three training records per hospital at least), sample 100
hospitals per round (``experiment.fraction_train = 0.01``), keep 2 rhythm classes and let the
hospitals evaluate in the last round only (``experiment.eval_every = 5``; the server
evaluates every round): each hospital's evaluation is held on the server with a dense
[C, C, 4096] int64 score histogram (``metrics.ClassificationCounts``), 512 KiB for 4 classes,
so 10,000 hospitals evaluated every round need over 10 GB on the server on either backend.

For each N, each repeat runs the in-process backend and then Flower on Ray (alternating the
order on odd repeats): wall seconds of ``run_experiment`` (Ray's start and stop included),
seconds per round (rounds.csv), and the peak memory of the whole process tree (this
process and every Ray process, summed RSS sampled every 0.25 s during the run). The data
are generated once per process before timing (the generator caches per process; the Ray
nodes receive the driver's Setup and never generate).

    python benchmarks/overhead.py                      # 10, 100 and 1,000 hospitals
    python benchmarks/overhead.py --hospitals 1000 --repeat 3
    python benchmarks/overhead.py --hospitals 10000    # the 10,000-hospital federation
    python benchmarks/overhead.py --rounds 3 --dataset wdbc --hospitals 10 100
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class TreeMemory:
    """Peak summed RSS (MB) of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.25) -> None:
        from fedmedsec.flower import watchdog as w

        self.w, self.interval, self.peak = w, interval, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        pids = {os.getpid()} | self.w._descendants(os.getpid())
        return sum(self.w._rss_kb(p) for p in pids) / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def config_for(n: int, rounds: int, dataset: str):
    from fedmedsec.config import load_config

    if dataset == "wdbc":
        return load_config(ROOT / "configs" / "quickstart.toml", [
            f"data.num_hospitals={n}", "data.partition=iid", f"experiment.rounds={rounds}",
            "experiment.mia=false"])
    records = 400 if n > 5000 else 200
    over = [f"data.num_hospitals={n}", "data.partition=iid", "data.num_sites=100",
            f"data.records_per_site={records}", f"experiment.rounds={rounds}", "train.local_epochs=1",
            "experiment.mia=false"]
    if n > 5000:
        over += ["experiment.fraction_train=0.01", "data.num_classes=2", f"experiment.eval_every={rounds}"]
    return load_config(ROOT / "configs" / "ecg_synthetic.toml", over)


def timed_run(cfg, backend: str) -> dict:
    from fedmedsec.engine import run_experiment

    c = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"backend": backend})})
    with tempfile.TemporaryDirectory() as d, TreeMemory() as mem:
        t0 = time.perf_counter()
        s = run_experiment(c, d)
        wall = time.perf_counter() - t0
        with open(Path(d) / "rounds.csv") as fh:
            per_round = [float(r["round_seconds"]) for r in csv.DictReader(fh)]
    return {"wall": wall, "round": statistics.mean(per_round), "rounds": sum(per_round), "mem": mem.peak,
            "acc": s["clean_accuracy"], "start": s["cost"].get("simulation_start_seconds"),
            "tree": s["cost"]["peak_rss_tree_mb"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hospitals", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dataset", choices=["ecg", "wdbc"], default="ecg")
    args = ap.parse_args()
    os.chdir(ROOT)
    from fedmedsec.experiment import build_setup
    from fedmedsec.flower.simulation import quiet_flower
    from fedmedsec.training import set_torch_threads

    set_torch_threads()
    quiet_flower(False)
    print(f"overhead: {args.dataset}, {args.rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
          flush=True)
    rows = []
    for n in args.hospitals:
        cfg = config_for(n, args.rounds, args.dataset)
        build_setup(cfg)  # generate the data once per process (cached), before any timing
        res: dict[str, list[dict]] = {"inprocess": [], "ray": []}
        for i in range(args.repeat):
            for backend in (("inprocess", "ray") if i % 2 == 0 else ("ray", "inprocess")):
                res[backend].append(timed_run(cfg, backend))
            a, b = res["inprocess"][-1], res["ray"][-1]
            assert a["acc"] == b["acc"], (a["acc"], b["acc"])  # the same numbers on both backends
            print(f"  {n} hospitals, repeat {i + 1}: in-process {a['wall']:.1f} s, Ray {b['wall']:.1f} s "
                  f"(start {b['start']:.1f} s), ratio {b['wall'] / a['wall']:.2f}; summary peak_rss_tree_mb "
                  f"{a['tree']:.0f} / {b['tree']:.0f}; load {os.getloadavg()[0]:.1f}",
                  flush=True)
        rows.append((n, res))
    print(f"\n{'hospitals':>9} {'in-proc s':>9} {'Ray s':>7} {'ratio':>13} {'s/round in':>10} {'s/round Ray':>11} "
          f"{'ratio rounds':>12} {'MB in':>6} {'MB Ray':>7}")
    for n, res in rows:
        a, b = res["inprocess"], res["ray"]
        ratios = [y["wall"] / x["wall"] for x, y in zip(a, b)]
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
        print(f"{n:>9} {med(a, 'wall'):>9.1f} {med(b, 'wall'):>7.1f} {statistics.median(ratios):>5.2f} {spread:>7} "
              f"{med(a, 'round'):>10.2f} {med(b, 'round'):>11.2f} {med(b, 'rounds') / med(a, 'rounds'):>12.2f} "
              f"{med(a, 'mem'):>6.0f} {med(b, 'mem'):>7.0f}")
    print(f"load {os.getloadavg()[0]:.1f} (1-minute average at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
