"""The Flower App entry points for ``flwr run .`` (simulation or a real deployment).

``pyproject.toml`` names ``server_app`` and ``client_app`` here. The ServerApp reads its
run config (``[tool.flwr.app.config]``, or ``flwr run . --run-config``), flat typed keys:

  ===================  =======  ==========================================================
  key                  type     meaning (the empty default keeps the experiment's value)
  ===================  =======  ==========================================================
  config               str      path of the experiment TOML (relative to the working
                                directory or the app)
  num-server-rounds    int      experiment.rounds (0: the config's)
  fraction-train       float    experiment.fraction_train (0.0: the config's)
  local-epochs         int      train.local_epochs (0: the config's)
  attack               str      attack.name ("": the config's)
  defense              str      defense.name ("": the config's)
  overrides            str      further ``dotted.key=value`` assignments separated by ``;``
                                (e.g. "attack.fraction=0.2; defense.f=2"), applied last
  out                  str      run directory ("": runs/NAME-TIMESTAMP)
  ===================  =======  ==========================================================

e.g. ``flwr run . --run-config 'num-server-rounds=5 attack="sign_flip" overrides="attack.fraction=0.2"'``.
It runs ``engine.run_experiment`` over the grid (``transport.connect``: ``transport.FlowerTransport``,
one SuperNode per hospital): the same round loop, checks and run directory as ``fedmedsec
run``. A federation whose size differs from ``data.num_hospitals`` (``num-supernodes`` of a
simulation) stops at the first discovery reply with a one-line error.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..config import ConfigError, load_config
from ..data.base import DataError
from ..data.partition import PartitionError
from ..engine import run_experiment
from ..rounds import RunFailed
from .client_app import app as client_app
from .transport import connect

server_app = ServerApp()
USER_ERRORS = (ConfigError, DataError, PartitionError, RunFailed)

__all__ = ["RUN_CONFIG", "client_app", "overrides_from_run_config", "server_app"]

#: run-config key -> (type, config key or None, the value that keeps the config's)
RUN_CONFIG: dict[str, tuple[type, str | None, object]] = {
    "config": (str, None, "configs/quickstart.toml"),
    "num-server-rounds": (int, "experiment.rounds", 0),
    "fraction-train": (float, "experiment.fraction_train", 0.0),
    "local-epochs": (int, "train.local_epochs", 0),
    "attack": (str, "attack.name", ""),
    "defense": (str, "defense.name", ""),
    "overrides": (str, None, ""),
    "out": (str, None, ""),
}


def _typed(key: str, value: object) -> object:
    kind = RUN_CONFIG[key][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"run config {key!r} = {value!r}: must be a {kind.__name__} "
                          f"(e.g. --run-config '{key}={RUN_CONFIG[key][2]!r}')")
    return value


def overrides_from_run_config(rc: dict) -> tuple[str, list[str], str]:
    """(config path, ``dotted.key=value`` overrides, out) from a Flower run config (the
    table in the module docstring); an unknown key or a wrong type is a ``ConfigError``."""
    unknown = sorted(set(rc) - set(RUN_CONFIG))
    if unknown:
        raise ConfigError(f"run config key {unknown[0]!r} is unknown; allowed: {', '.join(RUN_CONFIG)}")
    values = {k: _typed(k, rc[k]) if k in rc else default for k, (_, _, default) in RUN_CONFIG.items()}
    overrides = []
    for key, (_, dotted, keep) in RUN_CONFIG.items():
        v = values[key]
        if dotted is None or v == keep:
            continue
        overrides.append(f"{dotted}={json.dumps(v)}")
    overrides += [o.strip() for o in str(values["overrides"]).split(";") if o.strip()]
    return str(values["config"]), overrides, str(values["out"])


def _find_config(name: str) -> Path:
    p = Path(name)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + [Path(s) / p for s in sys.path if s]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"run config 'config' = {name!r}: no such file (looked in the working directory and the app)")


#: the environment variable of the coordinator's SuperLink naming the one folder a
#: ``flwr run`` user's ``out`` may lie under (unset: ``out`` must be relative, below the
#: ServerApp's working directory)
OUT_ROOT_ENV = "FEDMEDSEC_OUT_ROOT"


def server_run_dir(out_text: str, name: str) -> Path:
    """The run directory the ServerApp writes for a run config's ``out`` (whoever can reach
    the Control API chooses it, so it is not trusted): no ``..`` component, and under
    ``$FEDMEDSEC_OUT_ROOT`` when the coordinator sets it, else relative (below the working
    directory). Empty: ``runs/NAME-TIMESTAMP``. A ConfigError otherwise."""
    import os

    if not out_text:
        return Path("runs") / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out = Path(out_text)
    if ".." in out.parts or "\x00" in out_text or len(out_text) > 1000:
        raise ConfigError(f"run config 'out' = {out_text[:200]!r}: no '..' in a run directory")
    root = os.environ.get(OUT_ROOT_ENV)
    if root:
        full = (Path(root) / out).resolve() if not out.is_absolute() else out.resolve()
        if not full.is_relative_to(Path(root).resolve()):
            raise ConfigError(f"run config 'out' = {out_text[:200]!r}: must lie under the coordinator's "
                              f"{OUT_ROOT_ENV}")
        return full
    if out.is_absolute():
        raise ConfigError(f"run config 'out' = {out_text[:200]!r}: must be a relative path (the coordinator "
                          f"sets {OUT_ROOT_ENV} to allow a folder)")
    return out


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    def progress(row: dict) -> None:
        print(f"round {row['round']}: accuracy {row['clean_accuracy']:.3f}", flush=True)

    try:
        config, overrides, out_text = overrides_from_run_config(dict(context.run_config))
        cfg = load_config(_find_config(config), overrides)
        out = server_run_dir(out_text, cfg.experiment.name)
        run_experiment(cfg, out, on_round=progress, connect=lambda c: connect(grid, c))
    except USER_ERRORS as e:  # a user's or a hospital's mistake: one line, no traceback
        print(f"error: {e}", flush=True)
        return
    print(f"run directory: {out.resolve()}", flush=True)
