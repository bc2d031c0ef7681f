"""The one entry point that runs an experiment: ``fedmedsec run`` and ``flwr run .`` alike.

``run_experiment`` builds the setup and the run directory, runs ``rounds.run_rounds``
through the transport the config asks for (in-process calls, the centralized baseline, a
Flower simulation on Ray, or a transport the caller gives, e.g. a Flower deployment's
grid), checks that every round ran, and writes the summary.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .experiment import Setup, build_setup
from .results.run_dir import RunDir
from .results.summary import build_summary
from .rounds import RunFailed, Transport, run_rounds
from .server import Coordinator
from .training import set_torch_threads
from .twin import clean_twin, has_twin

#: builds the transport for a run from its setup (e.g. around a Flower grid)
TransportFactory = Callable[[Setup], Transport]

__all__ = ["RunFailed", "TransportFactory", "run_experiment"]


def run_experiment(
    cfg: Config, out_dir: str | Path, *, verbose: bool = False,
    on_round: Callable[[dict], None] | None = None, transport: TransportFactory | None = None,
    on_twin_start: Callable[[], None] | None = None,
) -> dict:
    """Run ``cfg``, write the run directory ``out_dir``, return the summary. A targeted
    attack first trains its clean twin in-process (``twin.py``; ``on_twin_start`` is told)."""
    t0 = time.perf_counter()
    set_torch_threads()
    setup = build_setup(cfg)  # ConfigError / DataError on a bad setup, before any file
    run = RunDir(out_dir)
    run.write_config(cfg.to_toml())

    def round_done(row: dict) -> None:
        run.write_progress(co.rounds, co.clients)
        if on_round:
            on_round(row)

    co = Coordinator(setup, on_round=round_done)
    twin = None
    if has_twin(setup):
        if on_twin_start:
            on_twin_start()
        twin = clean_twin(setup)
        co.twin_asr = twin["asr"]
    extra_cost: dict = {}  # what the transport measured (e.g. the Ray process tree's memory)
    if transport is not None:
        tr = transport(setup)
        run_rounds(co, tr)
        extra_cost = tr.cost() if hasattr(tr, "cost") else {}
    elif cfg.experiment.mode == "centralized":
        from .transports import CentralizedTransport

        run_rounds(co, CentralizedTransport(setup))
    elif cfg.simulation.backend == "inprocess":
        from .transports import InProcessTransport

        run_rounds(co, InProcessTransport(setup))
    else:
        from .flower.simulation import run_on_ray

        extra_cost = run_on_ray(co, verbose=verbose)
    if len(co.rounds) != cfg.experiment.rounds:
        raise RunFailed(
            f"the federation stopped after {len(co.rounds)} of {cfg.experiment.rounds} rounds"
        )
    summary = build_summary(co, time.perf_counter() - t0, twin=twin)
    summary["cost"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the whole process tree: the driver alone, or what the transport sampled (Ray's processes)
    tree = extra_cost.pop("peak_rss_tree_mb", None) or 0.0
    summary["cost"]["peak_rss_tree_mb"] = max(summary["cost"]["peak_rss_mb"], tree)
    summary["cost"].update({k: v for k, v in extra_cost.items() if v is not None})
    run.write_summary(summary)
    return summary
