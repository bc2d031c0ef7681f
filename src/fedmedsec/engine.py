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

from . import checkpoint
from .attacks import Attack
from .config import Config, ConfigError
from .experiment import Setup, build_setup
from .results.run_dir import RunDir
from .results.summary import build_summary
from .results.tracking import start_run
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
    connect: Callable[[Config], tuple[Setup, Transport]] | None = None, resume: bool = False,
) -> dict:
    """Run ``cfg``, write the run directory ``out_dir``, return the summary. A targeted
    attack first trains its clean twin in-process (``twin.py``; ``on_twin_start`` is told).
    ``connect`` (a deployment): builds the server's Setup and the transport together, e.g.
    from the hospitals' answers to the data protocol, so the server opens no data file.
    ``resume``: continue the run in ``out_dir`` from its last checkpoint (``checkpoint.py``)."""
    t0 = time.perf_counter()
    set_torch_threads()
    given = None
    if connect is not None:
        setup, given = connect(cfg)
    else:
        setup = build_setup(cfg)  # ConfigError / DataError on a bad setup, before any file
    run = RunDir(out_dir)
    restored = checkpoint.load(run.path) if resume else None
    if restored is not None and restored[1]["config"] != cfg.to_toml():
        raise ConfigError(f"--resume {str(run.path)[:200]!r}: that run has a different configuration")
    run.write_config(cfg.to_toml())
    tracker = start_run(cfg.to_dict(), run.path, cfg.tracking)
    with tracker:
        return _run(cfg, setup, run, tracker, restored, given, transport, verbose, on_round, on_twin_start, t0)


def _run(cfg, setup, run, tracker, restored, given, transport, verbose, on_round, on_twin_start, t0) -> dict:
    chosen: list = []  # the transport, once made (its hospital states go into checkpoints)
    extra_cost: dict = {}  # what the transport measured beyond this process (Ray's processes)

    def round_done(row: dict) -> None:
        run.write_progress(co.rounds, co.clients)
        states = chosen[0].hospital_states() if chosen and hasattr(chosen[0], "hospital_states") else None
        checkpoint.save(run.path, co, states)
        tracker.log_round(row)
        if on_round:
            on_round(row)

    co = Coordinator(setup, on_round=round_done)
    if restored is not None:
        checkpoint.restore(co, *restored)
        for row in co.rounds:  # the resumed run's tracking gets the earlier rounds too
            tracker.log_round(row)
    elif has_twin(setup):
        if on_twin_start:
            on_twin_start()
        co.twin = clean_twin(setup)
    if co.twin is not None:
        co.twin_asr = {int(k): v for k, v in co.twin["asr"].items()}

    def use(t: Transport) -> Transport:
        chosen.append(t)
        if restored is not None and co.next_round > 1:
            states = restored[0]["hospital_states"]
            if hasattr(t, "restore_states") and states is not None:
                t.restore_states(states)
            elif _stateful(setup):
                raise ConfigError("--resume: this run's hospitals kept state on their Flower nodes (the DP "
                                  "accountant, an attack's history), which a checkpoint does not hold; "
                                  "resume it with simulation.backend = 'inprocess'")
        return t

    if given is not None:
        run_rounds(co, use(given))
    elif transport is not None:
        run_rounds(co, use(transport(setup)))
    elif cfg.experiment.mode == "centralized":
        from .transports import CentralizedTransport

        run_rounds(co, use(CentralizedTransport(setup)))
    elif cfg.simulation.backend == "inprocess":
        from .transports import InProcessTransport

        run_rounds(co, use(InProcessTransport(setup)))
    else:
        from .flower.simulation import run_on_ray

        if restored is not None and co.next_round > 1 and _stateful(setup):
            use(None)  # raises: the nodes' state is not in the checkpoint
        extra_cost = run_on_ray(co, verbose=verbose)
    if chosen and chosen[-1] is not None and hasattr(chosen[-1], "cost"):
        extra_cost = chosen[-1].cost()  # what the transport measured (e.g. the Ray process tree's memory)
    if len(co.rounds) != cfg.experiment.rounds:
        raise RunFailed(
            f"the federation stopped after {len(co.rounds)} of {cfg.experiment.rounds} rounds"
        )
    checkpoint.save_model(run.path, co.global_model())
    summary = build_summary(co, time.perf_counter() - t0 + co.resume_offset, twin=co.twin)
    summary["cost"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the whole process tree: the driver alone, or what the transport sampled (Ray's processes)
    tree = extra_cost.pop("peak_rss_tree_mb", None) or 0.0
    summary["cost"]["peak_rss_tree_mb"] = max(summary["cost"]["peak_rss_mb"], tree)
    summary["cost"].update({k: v for k, v in extra_cost.items() if v is not None})
    summary["resumed_at_round"] = (restored[1]["round"] + 1) if restored is not None else None
    summary["warnings"] = list(summary.get("warnings") or []) + list(tracker.warnings)
    summary["tracking_run_id"] = tracker.mlflow_run_id
    run.write_summary(summary)
    tracker.finish(summary, run.path)
    return summary


def _stateful(setup: Setup) -> bool:
    """Do the hospitals keep state across rounds (DP-SGD's accountant, a stateful attack)?"""
    a = setup.attack
    stateful_attack = a is not None and type(a).observe is not Attack.observe
    return setup.cfg.privacy.mode == "dp_sgd" or stateful_attack
