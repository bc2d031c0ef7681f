"""A Flower simulation runtime on Ray, in the caller's process, that stays up across runs.

Why not Flower's own entry point: Flower 1.42 deprecates ``flwr.simulation.run_simulation``
("use ``flwr run`` in the CLI instead") and ``flwr run`` starts a SuperLink and a separate
``flwr-simulation`` process; no supported API runs a simulation inside the caller's
process any more. What remains is Flower's internal simulation engine
(``flwr.server.superlink.fleet.vce``), which (read in 1.42 and measured here) polls its link
state every 0.1 s, ships the ClientApp object and the node's Context with every call, runs
the ServerApp in a thread (Ctrl-C ended the engine but left the round loop running),
creates its actors per run and calls ``ray.shutdown()`` at the end of every run.

So this module keeps Flower's Message API end to end and replaces only the engine that
carries messages to ClientApps:

- the server side is a Flower ``Grid`` (``RayGrid``): the interface a ServerApp gets from
  ``flwr run`` or a SuperLink, so the transports do not know which runtime they talk to;
- each simulated SuperNode runs the project's Flower ``ClientApp`` (``client_app.app``) on
  Flower ``Message`` and ``Context`` objects. A node's ``Context`` (its ``state``, e.g. each
  hospital's DP accountant history) lives in the Ray actor that hosts the node, as it lives
  in a real SuperNode, and is never shipped;
- the actors (one per ``simulation.num_cpus_per_client`` share of the cluster) start once,
  import torch once, and serve every run of a sweep; a push submits an actor call at once and
  ``send_and_receive`` waits on the calls themselves (``ray.wait``), so no poll interval pads a
  round.

By default there are as many nodes as actors and node k serves the hospitals with
``partition_id % K == k`` (``batched.BatchedFlowerTransport``); ``num_nodes`` = the number of
hospitals gives one node per hospital, as in a deployment (``transport.FlowerTransport``).

Process hygiene (``watchdog.py``): a watchdog process ends Ray's processes when the driver
dies, and reports the peak memory of the simulation's whole process tree; unreachable
addresses and resources no Ray node has fail in one line before anything waits.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from ..config import ConfigError
from ..rounds import RunFailed

#: seconds to wait for the actors to start (importing torch) before giving up
ACTOR_START_TIMEOUT = 180.0
#: seconds to wait for a cluster address to answer
ADDRESS_TIMEOUT = 5.0
#: seconds ray.shutdown() may take before the watchdog ends what is left
SHUTDOWN_TIMEOUT = 8.0
#: Ray's setting of the niceness its worker processes add to the raylet's (15 by default)
WORKER_NICENESS = "RAY_worker_niceness"
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def quiet_flower(verbose: bool) -> None:
    """Hide Flower's and Ray's INFO chatter unless ``verbose``."""
    logging.getLogger("flwr").setLevel(logging.DEBUG if verbose else logging.ERROR)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.train", "ray.serve"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    else:
        os.environ["RAY_DEDUP_LOGS"] = "0"


# --------------------------------------------------------------------------- checks


def check_ray_address(address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """Fail in one line, within ``timeout`` s, unless ``address`` (HOST:PORT of a Ray head's
    GCS) answers as a gRPC server: ``ray.init`` would otherwise retry for minutes. "auto",
    "local" and Ray Client ``ray://`` addresses are left to Ray."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"simulation.ray_address = {address!r}: expected HOST:PORT of a Ray head "
                          "(its GCS port, 6379 by default), 'auto' or 'local'", key="simulation.ray_address")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.gaierror:
        raise RunFailed(f"simulation.ray_address = {address!r}: unknown host {host!r}") from None
    except OSError as e:
        raise RunFailed(f"simulation.ray_address = {address!r}: cannot connect "
                        f"({e.strerror or type(e).__name__})") from None
    head = b""
    try:
        with sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)  # a gRPC server answers with an HTTP/2 SETTINGS frame
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError:
        pass
    if len(head) < 4 or head[3] != 0x04:
        raise RunFailed(f"simulation.ray_address = {address!r}: something answers there, but not a Ray "
                        "head (no gRPC reply); give the head's GCS address, HOST:6379 by default")


def client_capacity(nodes: list[dict], num_cpus: float, num_gpus: float) -> int:
    """How many clients of ``num_cpus`` CPUs and ``num_gpus`` GPUs the Ray ``nodes``
    (``ray.nodes()``) host together, counted per node (a client cannot span nodes)."""
    total = 0
    for n in nodes:
        res = n.get("Resources") or {}
        if not n.get("Alive", True) or not res:
            continue
        k = math.floor(res.get("CPU", 0.0) / num_cpus + 1e-9)
        if num_gpus > 0:
            k = min(k, math.floor(res.get("GPU", 0.0) / num_gpus + 1e-9))
        total += max(k, 0)
    return total


def _capacity_error(nodes: list[dict], num_cpus: float, num_gpus: float) -> ConfigError:
    res = [n.get("Resources") or {} for n in nodes if n.get("Alive", True)]
    cpus = max((r.get("CPU", 0.0) for r in res), default=0.0)
    gpus = max((r.get("GPU", 0.0) for r in res), default=0.0)
    key = "num_gpus_per_client" if num_gpus > 0 and cpus >= num_cpus else "num_cpus_per_client"
    want = num_gpus if key == "num_gpus_per_client" else num_cpus
    return ConfigError(
        f"simulation.{key} = {want:g}: no Ray node can host one client (the largest has {cpus:g} CPUs "
        f"and {gpus:g} GPUs, {len(res)} node(s)); lower it", key=f"simulation.{key}")


# --------------------------------------------------------------------------- nodes


class NodeActor:
    """A Ray actor hosting simulated SuperNodes: the Flower ClientApp and each node's
    Context (its ``state`` persists across messages, as on a real SuperNode)."""

    def __init__(self, run_id: int, nodes: dict[int, dict[str, Any]]) -> None:
        from ..training import set_torch_threads
        from . import client_app

        set_torch_threads()
        self._client_app = client_app
        self.contexts = {nid: Context(run_id=run_id, node_id=nid, node_config=dict(cfg), state=RecordDict(),
                                      run_config={}) for nid, cfg in nodes.items()}

    def ready(self) -> int:
        return os.getpid()

    def handle(self, message: Message) -> Message:
        """Run the ClientApp on ``message`` for its destination node; an exception becomes
        an error reply, as in Flower's engine."""
        ctx = self.contexts.get(message.metadata.dst_node_id)
        if ctx is None:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="no such node in this actor"),
                           reply_to=message)
        try:
            return self._client_app.app(message=message, context=ctx)
        except Exception as e:  # noqa: BLE001 - a ClientApp exception is the reply, never a crash
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"{type(e).__name__}: {e}"[:500]), reply_to=message)

    def preload(self, key: str, blob: bytes, needs_privacy: bool) -> bool:
        """Cache the driver's Setup for the config whose hash is ``key`` (so the node does
        not rebuild the data); only reachable inside the Ray cluster, never by a message."""
        return self._client_app.preload_setup(key, blob, needs_privacy)

    def max_rss_mb(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RayGrid(Grid):
    """A Flower ``Grid`` whose nodes are hosted by Ray actors (``NodeActor``).

    ``push_messages`` submits each message to its node's actor at once; ``pull_messages``
    returns the replies that are ready; ``send_and_receive`` waits on the actor calls. A
    node whose actor died is no longer listed and its messages come back as error replies."""

    #: ``transport.exchange`` uses ``send_and_receive`` (no polling) on such a grid
    event_driven = True

    def __init__(self, run: Run, actor_of: dict[int, Any], actor_index: dict[int, int]) -> None:
        self._run = run
        self._actor_of = actor_of  # node id -> actor handle
        self._actor_index = actor_index  # node id -> actor number
        self._inflight: dict[str, tuple[Any, Message]] = {}
        self._dead: set[int] = set()

    # -- Grid
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return [n for n in self._actor_of if n not in self._dead]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            dst = msg.metadata.dst_node_id
            if dst not in self._actor_of or dst in self._dead:
                continue  # like a SuperLink refusing a message to an unknown node
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            self._inflight[mid] = (self._actor_of[dst].handle.remote(msg), msg)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        import ray

        refs = {self._inflight[i][0]: i for i in message_ids if i in self._inflight}
        if not refs:
            return []
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        return [self._reply(refs[r]) for r in ready]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        import ray

        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[Message] = []
        while pending:
            refs = {self._inflight[i][0]: i for i in pending}
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=left)
            if not ready:
                break
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for r in ready:
                pending.discard(refs[r])
                out.append(self._reply(refs[r]))
        return out

    # -- internals
    def _reply(self, mid: str) -> Message:
        import ray

        ref, msg = self._inflight.pop(mid)
        try:
            reply = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            lost = self._actor_index[msg.metadata.dst_node_id]
            self._dead.update(n for n, a in self._actor_index.items() if a == lost)
            reply = Message(Error(code=ErrorCode.CLIENT_APP_CRASHED,
                                  reason=f"node lost: {str(e).strip().splitlines()[0][:200]}"), reply_to=msg)
        except Exception as e:  # noqa: BLE001 - a failed call is an error reply
            reply = Message(Error(code=ErrorCode.UNKNOWN, reason=f"{type(e).__name__}: {e}"[:500]), reply_to=msg)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        return reply

    def forget_pending(self) -> None:
        """Drop calls nobody will pull (replies that came after a round's timeout)."""
        self._inflight.clear()

    @property
    def alive(self) -> bool:
        return not self._dead


# --------------------------------------------------------------------------- watchdog


class _Watchdog:
    """Client of ``watchdog.py`` (one line per command and answer)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        if not Path("/proc/self/stat").exists():
            return  # not Linux: no watchdog, no tree memory
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("watchdog.py")), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True, bufsize=0)  # unbuffered: select() sees every answer line
        except OSError:
            self.proc = None
            return
        if self._readline(10.0) != "ready":
            self.close()

    def _readline(self, timeout: float) -> str | None:
        if self.proc is None or self.proc.stdout is None:
            return None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else None

    def ask(self, cmd: str, timeout: float = 15.0) -> str | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            self.proc.stdin.write(f"{cmd}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        return self._readline(timeout)

    def peak(self) -> tuple[float, int] | None:
        answer = (self.ask("peak") or "").split()
        if len(answer) == 3 and answer[0] == "peak":
            return float(answer[1]), int(answer[2])
        return None

    def close(self) -> None:
        """End whatever Ray left behind, then the watchdog."""
        if self.proc is None:
            return
        self.ask("clean")
        self.ask("quit", timeout=0)
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        for f in (self.proc.stdout,):
            if f:
                f.close()
        self.proc = None


# --------------------------------------------------------------------------- the simulation


class RaySimulation:
    """Ray, its actors and the simulated SuperNodes, started once and reused by every run
    given to it (``run_on_ray`` for one run, ``SimulationPool`` for a sweep).

    ``num_cpus_per_client`` / ``num_gpus_per_client`` size the actors (as many as the cluster
    fits); ``ray_address`` attaches to a running cluster (otherwise a private local Ray is
    started); ``num_nodes`` defaults to the number of actors (each node serves a share of
    the hospitals); ``grid`` is the Flower Grid over the nodes."""

    #: ray.init calls made by this class in this process (tests count them)
    ray_starts = 0

    def __init__(self, *, num_cpus_per_client: float = 1.0, num_gpus_per_client: float = 0.0,
                 ray_address: str | None = None, verbose: bool = False, num_nodes: int | None = None) -> None:
        self.num_cpus = float(num_cpus_per_client)
        self.num_gpus = float(num_gpus_per_client)
        self.ray_address = ray_address
        self.verbose = verbose
        self.num_nodes = num_nodes
        self.grid: RayGrid | None = None
        self.actors: list[Any] = []
        self._owns_ray = False
        self._watchdog: _Watchdog | None = None
        self.start_seconds = float("nan")

    @classmethod
    def from_config(cls, sim, verbose: bool = False, num_nodes: int | None = None) -> RaySimulation:
        """From a ``config.SimulationConfig``."""
        return cls(num_cpus_per_client=sim.num_cpus_per_client, num_gpus_per_client=sim.num_gpus_per_client,
                   ray_address=sim.ray_address, verbose=verbose, num_nodes=num_nodes)

    @property
    def key(self) -> tuple:
        """Runs whose simulation settings have the same key can share this simulation."""
        return (self.num_cpus, self.num_gpus, self.ray_address)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RaySimulation:
        t0 = time.perf_counter()
        quiet_flower(self.verbose)
        if self.ray_address:
            check_ray_address(self.ray_address)
        else:  # a local Ray gets this machine's CPUs: refuse an impossible client before starting it
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            if self.num_cpus > cpus:
                raise ConfigError(f"simulation.num_cpus_per_client = {self.num_cpus:g}: this machine has {cpus} "
                                  "CPUs for a local Ray; lower it (or give simulation.ray_address of a cluster)",
                                  key="simulation.num_cpus_per_client")
            gpus = _local_gpus()
            if gpus is not None and self.num_gpus > gpus:
                raise ConfigError(f"simulation.num_gpus_per_client = {self.num_gpus:g}: this machine has {gpus} "
                                  "GPUs for a local Ray; lower it (or give simulation.ray_address of a cluster)",
                                  key="simulation.num_gpus_per_client")
        try:
            self._watchdog = _Watchdog()
            self._init_ray()
            self._start_actors()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        return self

    def _init_ray(self) -> None:
        import ray

        if ray.is_initialized():
            self._owns_ray = False  # somebody else's Ray in this process: use it, leave it running
            return
        pythonpath = _pythonpath()
        os.environ["PYTHONPATH"] = pythonpath  # local workers inherit the driver's environment
        if not self.ray_address:
            # Ray renices its workers by +15 (worker_niceness) to keep its daemons responsive;
            # here the actors do all of the run's work, so on a shared machine they would get a
            # fraction of the CPU the in-process backend gets at the driver's niceness
            # (docs/performance.md)
            os.environ.setdefault(WORKER_NICENESS, "0")
        args: dict[str, Any] = {
            # "local" always starts a private instance; without it Ray would attach to whatever
            # `ray start` left running on this machine (RAY_ADDRESS, /tmp/ray/ray_current_cluster)
            "address": self.ray_address or "local",
            "include_dashboard": False,
            "logging_level": logging.INFO if self.verbose else logging.ERROR,
            "log_to_driver": self.verbose,
        }
        if self.ray_address:  # workers of another machine's raylet see this path only this way
            args["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ray.init(**args)
        self._owns_ray = True
        RaySimulation.ray_starts += 1

    def _start_actors(self) -> None:
        import ray

        nodes = ray.nodes()
        capacity = client_capacity(nodes, self.num_cpus, self.num_gpus)
        if capacity == 0:
            raise _capacity_error(nodes, self.num_cpus, self.num_gpus)
        k = self.num_nodes or capacity
        n_actors = min(capacity, k)
        run_id = secrets.randbits(63)
        node_ids = _node_ids(k)
        layout: list[dict[int, dict]] = [{} for _ in range(n_actors)]
        for i, nid in enumerate(node_ids):
            layout[i % n_actors][nid] = {"partition-id": i, "num-partitions": k}
        remote = ray.remote(NodeActor).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0)
        self.actors = [remote.remote(run_id, layout[a]) for a in range(n_actors)]
        try:
            ray.get([a.ready.remote() for a in self.actors], timeout=ACTOR_START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise RunFailed(f"Ray did not start {n_actors} client actor(s) of {self.num_cpus:g} CPUs within "
                            f"{ACTOR_START_TIMEOUT:g} s (is the cluster busy?)") from None
        except ray.exceptions.RayError as e:
            raise RunFailed(f"the client actors failed to start: {str(e).strip().splitlines()[0][:300]}") from None
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = secrets.randbits(63)
        run = Run.create_empty(run_id=run_id)
        actor_index = {nid: i % n_actors for i, nid in enumerate(node_ids)}
        self.grid = RayGrid(run, {nid: self.actors[a] for nid, a in actor_index.items()}, actor_index)

    def stop(self) -> None:
        """Kill the actors, stop Ray (if this simulation started it), end what is left."""
        try:
            import ray
        except ImportError:  # pragma: no cover
            ray = None
        if ray is not None and ray.is_initialized():
            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            if self._owns_ray:
                _bounded(ray.shutdown, SHUTDOWN_TIMEOUT)
        self.actors, self.grid = [], None
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None
        self._owns_ray = False

    def __enter__(self) -> RaySimulation:
        return self.start() if self.grid is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def healthy(self) -> bool:
        return self.grid is not None and self.grid.alive

    # ------------------------------------------------------------------ runs
    def transport(self, setup):
        """The batched transport for one run of ``setup`` over this simulation (a
        ``engine.TransportFactory``); its ``cost()`` reports the run's peak memory."""
        from .batched import BatchedFlowerTransport

        if self.grid is None:
            raise RunFailed("the Ray simulation is not running")
        self.grid.forget_pending()
        if self._watchdog is not None:
            self._watchdog.ask("reset")
        return BatchedFlowerTransport(self.grid, setup, preload=self.preload, cost=self.cost)

    def preload(self, key: str, setup) -> None:
        """Send the driver's ``setup`` to every actor once (they would otherwise each build
        the data again from the config); the calls run before the run's first message."""
        import cloudpickle
        import ray

        ref = ray.put(cloudpickle.dumps(setup))
        needs_privacy = setup.cfg.privacy.mode == "dp_sgd"
        for a in self.actors:
            a.preload.remote(key, ref, needs_privacy)

    def cost(self) -> dict[str, Any]:
        """Memory of this run so far: ``peak_rss_tree_mb`` (the largest summed RSS of the
        driver and every local Ray process, sampled every 0.5 s; None where it cannot be
        sampled), ``peak_rss_actors_mb`` (the actors' own peak RSS, summed: also for a remote
        cluster), ``ray_processes`` (processes in the sampled tree at that peak) and
        ``simulation_start_seconds``."""
        import ray

        out: dict[str, Any] = {"peak_rss_tree_mb": None, "ray_processes": None,
                               "simulation_start_seconds": round(self.start_seconds, 3)}
        peak = self._watchdog.peak() if self._watchdog is not None else None
        if peak is not None and peak[0] > 0:
            out["peak_rss_tree_mb"], out["ray_processes"] = peak
        try:
            out["peak_rss_actors_mb"] = float(sum(ray.get([a.max_rss_mb.remote() for a in self.actors], timeout=30)))
        except Exception:  # noqa: BLE001 - an actor is gone: no number rather than a crash
            out["peak_rss_actors_mb"] = None
        return out


def _local_gpus() -> int | None:
    """CUDA devices torch sees here (what a local Ray's clients could use); None for a torch
    built without CUDA (Ray may still count GPUs: it decides after it started)."""
    try:
        import torch

        if torch.version.cuda is None:
            return None
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no usable CUDA runtime
        return None


def _node_ids(k: int) -> list[int]:
    """``k`` distinct random node ids, like a SuperLink's (nothing may key by them)."""
    ids: set[int] = set()
    while len(ids) < k:
        ids.add(secrets.randbits(63) or 1)
    return list(ids)


def _pythonpath() -> str:
    """Absolute PYTHONPATH for Ray workers: this package's root first, then the driver's."""
    import fedmedsec

    root = str(Path(fedmedsec.__file__).resolve().parents[1])
    parts = [root] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(parts))


def _bounded(fn, timeout: float) -> None:
    """Call ``fn`` in a daemon thread and give up waiting after ``timeout`` s (ray.shutdown
    can hang when Ray's processes already died, e.g. after Ctrl-C reached them too)."""
    t = threading.Thread(target=_quietly, args=(fn,), daemon=True)
    t.start()
    t.join(timeout)


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass
