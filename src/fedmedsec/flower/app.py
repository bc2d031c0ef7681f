"""The Flower App entry points for ``flwr run .`` (simulation or a real deployment).

``pyproject.toml`` names ``server_app`` and ``client_app`` here. The ServerApp reads its
run config (``[tool.flwr.app.config]``, or ``flwr run . --run-config``):
  config     path of the experiment TOML (relative to the working directory or the app)
  overrides  ``dotted.key=value`` assignments separated by ``;`` (e.g. "attack.name=alie")
  out        run directory (default runs/NAME-TIMESTAMP)
and runs ``engine.run_experiment`` with the grid as its transport: the same round loop,
checks and run directory as ``fedmedsec run``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..config import ConfigError, load_config
from ..data.base import DataError
from ..data.partition import PartitionError
from ..rounds import RunFailed
from ..engine import run_experiment
from .client_app import app as client_app
from .transport import connect

server_app = ServerApp()
USER_ERRORS = (ConfigError, DataError, PartitionError, RunFailed)

__all__ = ["client_app", "server_app"]


def _find_config(name: str) -> Path:
    p = Path(name)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + [Path(s) / p for s in sys.path if s]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"run config 'config' = {name!r}: no such file (looked in the working directory and the app)")


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    overrides = [o.strip() for o in str(rc.get("overrides", "")).split(";") if o.strip()]
    cfg = load_config(_find_config(str(rc.get("config", "configs/quickstart.toml"))), overrides)
    out = Path(str(rc.get("out") or "")) if rc.get("out") else (
        Path("runs") / f"{cfg.experiment.name}-{dt.datetime.now():%Y%m%d-%H%M%S}")

    def progress(row: dict) -> None:
        print(f"round {row['round']}: accuracy {row['clean_accuracy']:.3f}", flush=True)

    try:
        run_experiment(cfg, out, on_round=progress, connect=lambda c: connect(grid, c))
    except USER_ERRORS as e:  # a user's or a hospital's mistake: one line, no traceback
        print(f"error: {e}", flush=True)
        return
    print(f"run directory: {out.resolve()}", flush=True)
