"""Optional experiment tracking: an MLflow run and TensorBoard scalars for each run directory.

Switched on in the config's ``[tracking]`` section (``TrackingConfig``). Everything here is a
no-op when it is off, and nothing here raises into the run: a backend that fails (a wrong
URI, a server that is down, mlflow not installed) is one warning line on stderr
(``Tracker.warnings`` keeps it) and the run goes on untracked by that backend.

MLflow (``mlflow = true``; the ``tracking`` extra, ``pip install -e ".[tracking]"``):

- store: ``uri`` (any MLflow tracking URI), else a local SQLite store ``mlruns/mlflow.db``
  (artifacts in ``mlruns/artifacts/``) under the sweep directory when the run directory is a
  sweep point (its parent holds ``sweep.json``), else under the run directory itself;
- experiment: ``experiment``, else the sweep directory's name (one experiment per sweep,
  one MLflow run per point), else the config's ``experiment.name``;
- the MLflow run is named after the run directory; params are the resolved config as
  dotted keys (``attack.name``), metrics every numeric column of each round (step = the
  round) and every numeric value of summary.json as ``final.<key>`` (``final.mia_auc``);
  artifacts are the run directory's files (the store itself left out). A run directory run
  again (a resumed sweep) first marks its earlier unfinished MLflow run as KILLED.

TensorBoard (``tensorboard = true``): one scalar per numeric round column in
``<run dir>/tensorboard/`` (tensorboardX, else ``torch.utils.tensorboard``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrackingConfig", "Tracker", "export_dir", "flat_params", "local_store", "numeric_items", "start_run"]

STORE_DIR = "mlruns"
TB_DIR = "tensorboard"
#: MLflow's batch limits (params per call, metrics per call) and a safe param length
_MAX_PARAMS, _MAX_METRICS, _MAX_PARAM_LEN = 100, 1000, 500
#: bounded retries so that a wrong URI costs seconds, not minutes (the user's env wins)
_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingConfig(BaseModel):
    """``[tracking]``: export a run to MLflow and/or TensorBoard (both off by default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    mlflow: bool = Field(False, description="log the run to MLflow (pip install -e '.[tracking]')")
    uri: str | None = Field(None, min_length=1, max_length=2000,
                            description="MLflow tracking URI (default: SQLite store under the run or sweep directory)")
    experiment: str | None = Field(None, min_length=1, max_length=500,
                                   description="MLflow experiment (default: sweep directory name, else experiment.name)")
    tensorboard: bool = Field(False, description="TensorBoard scalars in <run dir>/tensorboard/")


# --------------------------------------------------------------------------- helpers


def flat_params(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {dotted key: text}; lists as JSON (``[32, 16]``)."""
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v), default=str)
        elif isinstance(v, bool):
            out[key] = str(v).lower()
        else:
            out[key] = str(v)
    return out


def numeric_items(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat dict (booleans and text left out)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, bool) or v is None:
            continue
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


def sweep_dir(run_dir: Path) -> Path | None:
    """The sweep directory a run directory belongs to (its parent holds sweep.json)."""
    parent = run_dir.resolve().parent
    return parent if (parent / "sweep.json").is_file() else None


def local_store(run_dir: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the default local store for ``run_dir``."""
    root = sweep_dir(Path(run_dir)) or Path(run_dir).resolve()
    store = root / STORE_DIR
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def _one_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:300]}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic log INFO lines on store creation: keep them off the run's output."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


# --------------------------------------------------------------------------- tracker


class Tracker:
    """The tracking of one run; every method is a no-op for a backend that is off or failed."""

    def __init__(self, run_dir: Path, tracking: TrackingConfig) -> None:
        self.run_dir = run_dir
        self.tracking = tracking
        self.warnings: list[str] = []
        self.mlflow_run_id: str | None = None
        self.mlflow_uri: str | None = None
        self.mlflow_experiment_id: str | None = None
        self._client: Any = None
        self._tb: Any = None
        self._done = False

    # -- lifecycle

    def _warn(self, backend: str, e: BaseException | str) -> None:
        msg = f"tracking: {backend} is off for this run ({e if isinstance(e, str) else _one_line(e)})"
        self.warnings.append(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)

    def _start_mlflow(self, cfg_dict: dict, tags: dict[str, str]) -> None:
        for k, v in _MLFLOW_ENV.items():
            os.environ.setdefault(k, v)
        try:
            with _quiet():
                from mlflow.tracking import MlflowClient
        except ImportError:
            self._warn("mlflow", "mlflow is not installed; pip install -e '.[tracking]'")
            return
        t = self.tracking
        sweep = sweep_dir(self.run_dir)
        if t.uri:
            uri, artifacts = t.uri, None
        else:
            uri, artifacts = local_store(self.run_dir)
            Path(artifacts.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        name = t.experiment or (sweep.name if sweep else cfg_dict.get("experiment", {}).get("name", "fedmedsec"))
        try:
            with _quiet():
                client = MlflowClient(tracking_uri=uri)
                exp = client.get_experiment_by_name(name)
                exp_id = exp.experiment_id if exp is not None else client.create_experiment(
                    name, artifact_location=artifacts)
                here = str(self.run_dir.resolve())
                for old in client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'"):
                    if old.data.tags.get("fedmedsec.run_dir") == here:  # this directory, killed before
                        client.set_terminated(old.info.run_id, status="KILLED")
                run = client.create_run(exp_id, run_name=self.run_dir.name,
                                        tags={**tags, "fedmedsec.run_dir": here})
                self._client, self.mlflow_run_id = client, run.info.run_id
                self.mlflow_uri, self.mlflow_experiment_id = uri, exp_id
                # the [tracking] section stays out: a tracking URI may hold credentials
                self._log_params(flat_params({k: v for k, v in cfg_dict.items() if k != "tracking"}))
        except Exception as e:  # noqa: BLE001 - tracking must never end the run
            self._client = None
            self._warn(f"mlflow ({uri})", e)

    def _start_tensorboard(self) -> None:
        try:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._warn("tensorboard", "neither tensorboardX nor tensorboard is installed; pip install -e '.[tracking]'")
            return
        try:
            self._tb = SummaryWriter(str(self.run_dir / TB_DIR))
        except Exception as e:  # noqa: BLE001
            self._warn("tensorboard", e)

    def _mlflow(self, what: str, fn, *args, **kwargs) -> None:
        if self._client is None:
            return
        try:
            with _quiet():
                fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._client = None
            self._warn(f"mlflow ({what})", e)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:_MAX_PARAM_LEN]) for k, v in sorted(params.items())]
        for i in range(0, len(items), _MAX_PARAMS):
            self._client.log_batch(self.mlflow_run_id, params=items[i:i + _MAX_PARAMS])

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(items), _MAX_METRICS):
            self._client.log_batch(self.mlflow_run_id, metrics=items[i:i + _MAX_METRICS])

    # -- what the engine calls

    def log_round(self, row: dict[str, Any]) -> None:
        """One round's row (``round`` is the step; every finite number becomes a metric)."""
        if self._client is None and self._tb is None:
            return
        step = int(row.get("round", 0) or 0)
        values = {k: v for k, v in numeric_items(row).items() if k != "round"}
        self._mlflow("log_round", self._log_metrics, values, step)
        if self._tb is not None:
            try:
                for k, v in values.items():
                    self._tb.add_scalar(k, v, step)
            except Exception as e:  # noqa: BLE001
                self._tb = None
                self._warn("tensorboard", e)

    def finish(self, summary: dict[str, Any], run_dir: str | Path | None = None) -> None:
        """The final summary's numbers as ``final.<key>``, the run directory as artifacts,
        the MLflow run FINISHED. Call it after summary.json is written."""
        if self._done:
            return
        self._done = True
        root = Path(run_dir) if run_dir is not None else self.run_dir
        if self._tb is not None:
            try:
                self._tb.flush()
                self._tb.close()
            except Exception as e:  # noqa: BLE001
                self._warn("tensorboard", e)
            self._tb = None
        if self._client is None:
            return
        from .sweep import flatten_summary

        final = {f"final.{k}": v for k, v in numeric_items(flatten_summary(summary)).items()}
        self._mlflow("final metrics", self._log_metrics, final, int(summary.get("rounds") or 0))
        self._mlflow("artifacts", self._log_artifacts, root)
        if self._client is not None:
            self._mlflow("end", self._client.set_terminated, self.mlflow_run_id, "FINISHED")

    def _log_artifacts(self, root: Path) -> None:
        for p in sorted(root.iterdir()):
            if p.name == STORE_DIR:
                continue  # the local store itself
            if p.is_dir():
                self._client.log_artifacts(self.mlflow_run_id, str(p), artifact_path=p.name)
            elif p.is_file() and not p.name.endswith(".tmp"):
                self._client.log_artifact(self.mlflow_run_id, str(p))

    def fail(self, error: str = "") -> None:
        """End the MLflow run as FAILED (the run raised); no-op when finished already."""
        if self._done:
            return
        self._done = True
        if self._tb is not None:
            with contextlib.suppress(Exception):
                self._tb.close()
            self._tb = None
        if self._client is not None:
            if error:
                self._mlflow("error tag", self._client.set_tag, self.mlflow_run_id, "fedmedsec.error", error[:500])
            if self._client is not None:
                self._mlflow("end", self._client.set_terminated, self.mlflow_run_id, "FAILED")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.fail(_one_line(exc))

    @property
    def active(self) -> bool:
        return self._client is not None or self._tb is not None


def start_run(cfg_dict: dict[str, Any], run_dir: str | Path,
              tracking: TrackingConfig | dict | None) -> Tracker:
    """Start tracking one run: ``cfg_dict`` is the resolved config (``Config.to_dict()``),
    ``run_dir`` the run directory, ``tracking`` its ``[tracking]`` section. Never raises."""
    run_dir = Path(run_dir)
    try:
        t = tracking if isinstance(tracking, TrackingConfig) else TrackingConfig.model_validate(tracking or {})
    except Exception as e:  # noqa: BLE001
        tr = Tracker(run_dir, TrackingConfig())
        tr._warn("tracking", e)
        return tr
    tr = Tracker(run_dir, t)
    if t.mlflow:
        tags = {"fedmedsec.version": _version()}
        commit = _git_commit()
        if commit:
            tags["fedmedsec.git_commit"] = commit
        sweep = sweep_dir(run_dir)
        if sweep is not None:
            tags["fedmedsec.sweep"] = str(sweep)
        tr._start_mlflow(cfg_dict, tags)
    if t.tensorboard:
        tr._start_tensorboard()
    return tr


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("fedmedsec")
    except md.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    try:
        from .run_dir import git_commit

        return git_commit()
    except Exception:  # noqa: BLE001
        return None


def export_dir(root: str | Path, tracking: TrackingConfig | dict) -> list[Tracker]:
    """Log finished run directories to MLflow / TensorBoard after the fact, as the engine
    does during a run: ``root`` is one run directory or a sweep directory (one MLflow run per
    point, under one experiment). Returns one Tracker per run directory with a summary.json."""
    import csv
    import tomllib

    root = Path(root)
    dirs = [root] if (root / "summary.json").is_file() else sorted(
        d for d in root.iterdir() if d.is_dir() and (d / "summary.json").is_file())
    out = []
    for d in dirs:
        cfg = tomllib.loads((d / "config.toml").read_text()) if (d / "config.toml").is_file() else {}
        summary = json.loads((d / "summary.json").read_text())
        tr = start_run(cfg, d, tracking)
        if (d / "rounds.csv").is_file():
            with open(d / "rounds.csv", newline="") as fh:
                for row in csv.DictReader(fh):
                    tr.log_round({k: _number(v) for k, v in row.items()})
        tr.finish(summary, d)
        out.append(tr)
    return out


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
