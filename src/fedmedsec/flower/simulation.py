"""Run experiments as Flower simulations on Ray, in this process.

``run_on_ray`` runs one experiment (``simulation.backend = "ray"``); ``SimulationPool`` keeps
one simulation alive across the runs of a sweep. Both use ``runtime.RaySimulation`` (a
Flower Grid over Ray actors hosting simulated SuperNodes; its docstring says why not
Flower's deprecated ``run_simulation``) and ``batched.BatchedFlowerTransport`` (each node
serves a fixed share of the hospitals). The deployment path (one SuperNode per hospital,
``transport.FlowerTransport``) is ``app.py``'s, for ``flwr run`` and real SuperLinks.

On Ctrl-C (KeyboardInterrupt) or any error the actors are killed, Ray is stopped and the
watchdog ends what Ray left behind before the exception goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..rounds import run_rounds
from ..server import Coordinator
from .runtime import RaySimulation, check_ray_address, client_capacity, quiet_flower

__all__ = ["RaySimulation", "SimulationPool", "check_ray_address", "client_capacity", "quiet_flower",
           "run_on_ray"]


def run_on_ray(co: Coordinator, *, verbose: bool = False) -> dict[str, Any]:
    """Every round of ``co`` over ``co.setup.n`` simulated hospitals on a Ray simulation
    started for this run; returns the run's cost numbers (``RaySimulation.cost``)."""
    with RaySimulation.from_config(co.cfg.simulation, verbose=verbose) as sim:
        transport = sim.transport(co.setup)
        run_rounds(co, transport)
        return transport.cost()


class SimulationPool:
    """One Ray simulation reused by consecutive runs with the same simulation settings
    (``num_cpus_per_client``, ``num_gpus_per_client``, ``ray_address``): Ray, the actors and
    their imports start once for a sweep, not once per run. Each run gets its own transport
    (its own run token, so no hospital state leaks between runs) and the Setup is sent to
    the nodes, so every run has the numbers of a separate ``fedmedsec run``.

        with SimulationPool() as pool:
            for cfg in configs:
                run_experiment(cfg, out, transport=pool.transport_for(cfg))
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.sim: RaySimulation | None = None
        self.starts = 0

    def transport_for(self, cfg) -> Callable | None:
        """The transport factory for a run of ``cfg``, or None where the run needs no Ray
        (in-process backend, centralized baseline: ``engine.run_experiment`` does those)."""
        if cfg.simulation.backend != "ray" or cfg.experiment.mode == "centralized":
            return None
        wanted = RaySimulation.from_config(cfg.simulation, verbose=self.verbose)

        def factory(setup):
            if self.sim is None or self.sim.key != wanted.key or not self.sim.healthy:
                self.close()
                self.sim = wanted.start()
                self.starts += 1
            return self.sim.transport(setup)

        return factory

    def close(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def __enter__(self) -> SimulationPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
