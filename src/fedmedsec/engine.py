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
    connect: Callable[[Config], tuple[Setup, Transport]] | None = None,
) -> dict:
    """Run ``cfg``, write the run directory ``out_dir``, return the summary. A targeted
    attack first trains its clean twin in-process (``twin.py``; ``on_twin_start`` is told).
    ``connect`` (a deployment): builds the server's Setup and the transport together, e.g.
    from the hospitals' answers to the data protocol, so the server opens no data file."""
    t0 = time.perf_counter()
    set_torch_threads()
    given = None
    if connect is not None:
        setup, given = connect(cfg)
    else:
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
    if given is not None:
        run_rounds(co, given)
    elif transport is not None:
        run_rounds(co, transport(setup))
    elif cfg.experiment.mode == "centralized":
        from .transports import CentralizedTransport

        run_rounds(co, CentralizedTransport(setup))
    elif cfg.simulation.backend == "inprocess":
        from .transports import InProcessTransport

        run_rounds(co, InProcessTransport(setup))
    else:
        from .flower.simulation import run_on_ray

        run_on_ray(co, verbose=verbose)
    if len(co.rounds) != cfg.experiment.rounds:
        raise RunFailed(
            f"the federation stopped after {len(co.rounds)} of {cfg.experiment.rounds} rounds"
        )
    summary = build_summary(co, time.perf_counter() - t0, twin=twin)
    summary["cost"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run.write_summary(summary)
    return summary
