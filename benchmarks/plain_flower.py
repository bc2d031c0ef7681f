"""The quickstart's work as a plain Flower app, against ``fedmedsec run`` on Ray and in-process,
in one process run (the same load for all).

The plain app is what a Flower user would write: Flower's own Message-API ``FedAvg``
strategy (``flwr.serverapp.strategy.FedAvg``, every node trains and evaluates every round,
a server-side evaluation of the global model each round), a minimal ClientApp calling the
same local training and evaluation as fedmedsec (``fedmedsec.client.local_train`` /
``local_evaluate`` on the same hospital partitions), one SuperNode per hospital, run with
Flower's in-process simulation engine (``flwr.simulation.run_simulation``, deprecated in
Flower 1.42 but the only in-process entry point Flower has; 2 Ray actors on 2 CPUs).
fedmedsec additionally validates each update and records every client and round (and its
membership-inference audit unless ``--no-mia``).

    python benchmarks/plain_flower.py [--rounds 20] [--hospitals 10] [--repeat 2] [--no-mia]

Prints the wall time of each (Ray start included for both Ray runs) and the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plain_flower(cfg_text: str, rounds: int, n: int) -> float:
    """Seconds for the plain Flower FedAvg app on ``cfg_text``'s data and model."""
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedmedsec.evaluation import server_evaluation
    from fedmedsec.experiment import setup_from_toml

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        from fedmedsec.client import local_train
        from fedmedsec.experiment import setup_from_toml  # cached per process by config hash
        from fedmedsec.training import state_vector

        setup = setup_from_toml(cfg_text)
        pid = int(context.node_config["partition-id"])
        model = setup.new_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        if "state" not in context.state:
            context.state["state"] = ConfigRecord()
        local, metrics = local_train(setup, setup.data.hospitals[pid], state_vector(model),
                                     int(msg.content["config"]["server-round"]), context.state["state"])
        from fedmedsec.training import load_state_vector

        load_state_vector(model, local)
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}),
                       reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from fedmedsec.client import local_evaluate
        from fedmedsec.experiment import setup_from_toml
        from fedmedsec.training import state_vector

        setup = setup_from_toml(cfg_text)
        pid = int(context.node_config["partition-id"])
        model = setup.new_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        metrics, _ = local_evaluate(setup, setup.data.hospitals[pid], state_vector(model))
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        setup = setup_from_toml(cfg_text)
        model = setup.new_model()

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            ev = server_evaluation(setup, model)
            if ev is None:
                return MetricRecord({})
            return MetricRecord({"accuracy": float(np.trace(ev.clean.confusion)) / max(ev.clean.count, 1)})

        FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n, min_evaluate_nodes=n,
               min_available_nodes=n).start(grid, ArrayRecord(model.state_dict()), num_rounds=rounds,
                                              evaluate_fn=evaluate_fn)

    t0 = time.perf_counter()
    run_simulation(server_app=server, client_app=client, num_supernodes=n, backend_config={
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "init_args": {"address": "local", "include_dashboard": False, "logging_level": logging.ERROR,
                      "log_to_driver": False}})
    return time.perf_counter() - t0


def fedmedsec_run(cfg, backend: str) -> float:
    from fedmedsec.engine import run_experiment

    c = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"backend": backend})})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_experiment(c, d)
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--hospitals", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-mia", action="store_true", help="fedmedsec without its membership-inference audit")
    args = ap.parse_args()
    os.chdir(ROOT)
    from fedmedsec.config import load_config
    from fedmedsec.flower.simulation import quiet_flower
    from fedmedsec.training import set_torch_threads

    set_torch_threads()
    quiet_flower(False)
    cfg = load_config("configs/quickstart.toml", [f"experiment.rounds={args.rounds}",
                                                  f"data.num_hospitals={args.hospitals}"]
                      + (["experiment.mia=false"] if args.no_mia else []))
    times: dict[str, list[float]] = {"in-process": [], "fedmedsec on Ray": [], "plain Flower app": []}
    print(f"quickstart work: {args.hospitals} hospitals, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for i in range(args.repeat):
        times["in-process"].append(fedmedsec_run(cfg, "inprocess"))
        times["fedmedsec on Ray"].append(fedmedsec_run(cfg, "ray"))
        times["plain Flower app"].append(plain_flower(cfg.to_toml(), args.rounds, args.hospitals))
        quiet_flower(False)  # run_simulation resets Flower's console handler
        print(f"  repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>18}: median {med[k]:6.1f} s  (min {min(v):.1f}, max {max(v):.1f})")
    print(f"fedmedsec on Ray / plain Flower app: {med['fedmedsec on Ray'] / med['plain Flower app']:.2f}x; "
          f"fedmedsec on Ray / in-process: {med['fedmedsec on Ray'] / med['in-process']:.2f}x; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
