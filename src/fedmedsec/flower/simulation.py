"""Run an experiment as a Flower simulation on Ray, in this process.

``flwr.simulation.run_simulation`` is deprecated in Flower 1.41-1.42 but is the in-process
entry point (``flwr run`` starts a separate SuperLink); it stays behind ``simulate``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..rounds import run_rounds
from ..server import Coordinator
from .transport import FlowerTransport


def quiet_flower(verbose: bool) -> None:
    """Hide Flower's and Ray's INFO chatter unless ``verbose``."""
    level = logging.DEBUG if verbose else logging.ERROR
    logging.getLogger("flwr").setLevel(level if verbose else logging.ERROR)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.train", "ray.serve"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    else:
        os.environ["RAY_DEDUP_LOGS"] = "0"


def run_on_ray(co: Coordinator, *, verbose: bool = False) -> None:
    """Every round of ``co`` over ``co.setup.n`` simulated hospitals (Flower ClientApps in
    Ray actors); an exception of the round loop is re-raised here."""
    failure: list[BaseException] = []

    def main(grid: Grid, context: Context) -> None:
        try:
            run_rounds(co, FlowerTransport(grid, co.setup))
        except BaseException as e:  # re-raised in the caller's thread below
            failure.append(e)

    sim = co.cfg.simulation
    simulate(main, co.setup.n, num_cpus=sim.num_cpus_per_client, num_gpus=sim.num_gpus_per_client,
             ray_address=sim.ray_address, verbose=verbose)
    if failure:
        raise failure[0]


def simulate(
    main: Callable[[Grid, Context], None], num_nodes: int, *, num_cpus: float, num_gpus: float,
    ray_address: str | None, verbose: bool,
) -> None:
    """Run ``main`` (the server loop) against ``num_nodes`` simulated hospitals."""
    from flwr.simulation import run_simulation

    from .client_app import app as client_app

    quiet_flower(verbose)
    init_args: dict = {"logging_level": logging.INFO if verbose else logging.ERROR,
                       "log_to_driver": verbose, "include_dashboard": False}
    # Without an address Ray would attach to whatever cluster `ray start` left running on
    # this machine (RAY_ADDRESS or /tmp/ray/ray_current_cluster); "local" always starts a
    # private instance, so only simulation.ray_address attaches to a cluster.
    init_args["address"] = ray_address or "local"
    backend_config = {
        "client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "init_args": init_args,
    }
    server_app = ServerApp()
    server_app.main()(main)
    run_simulation(
        server_app=server_app, client_app=client_app, num_supernodes=num_nodes,
        backend_config=backend_config, verbose_logging=verbose,
    )
    quiet_flower(verbose)  # run_simulation resets Flower's console handler
