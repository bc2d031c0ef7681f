"""``fedmedsec sweep GRID.toml --out DIR``: the cartesian product of a grid, one run directory per
point, one tidy table (``results.csv`` and ``results.parquet``) for all.

Grid file::

    base = "configs/quickstart.toml"      # relative to the grid file, or absolute
    [grid]                                # cartesian product of these dotted keys
    "attack.name" = ["none", "sign_flip"]
    "defense.name" = ["fedavg", "median"]
    [fixed]                               # applied to every point
    "attack.fraction" = 0.3

Impossible points are normalised, not errors: keys of a section that is switched off
(``attack.*`` with ``attack.name = "none"``, ``privacy.*`` with ``privacy.mode = "none"``) and
component keys the chosen component does not take (``attack.z`` for ``label_flip``) are
dropped for that point; points that then resolve to the same configuration are run once.
A point whose configuration is still invalid is recorded as failed with its one-line error.

Every point runs in this one process (Python, torch and Flower are imported once); points on
the Ray backend share one Flower simulation (Ray, its actors and their imports start once,
``flower.simulation.SimulationPool``) while their simulation settings stay the same.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import shutil
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, config_from_dict, read_toml, set_dotted

GRID_KEYS = {"base", "grid", "fixed"}
#: sections switched off by one of their keys; their other keys are dropped for that point
OFF_SWITCHES = {"attack": ("name", "none"), "privacy": ("mode", "none")}
_UNKNOWN_KEY = re.compile(r"^unknown key '((?:attack|defense|data|model)\.[A-Za-z0-9_]+)' for ")


# --------------------------------------------------------------------------- grid


@dataclass
class Grid:
    path: Path
    base: Path
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]


@dataclass
class Point:
    """One grid point after normalisation."""

    values: dict[str, Any]  # every axis -> its value (None where dropped for this point)
    name: str = ""
    cfg: Any = None  # the validated Config, or None when invalid
    error: str | None = None
    dropped: list[str] = field(default_factory=list)
    status: str = "pending"  # pending | skipped | done | failed


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; every problem is a one-line ``ConfigError``."""
    p = Path(path)
    raw = read_toml(p)
    unknown = sorted(set(raw) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"grid file {str(p)!r}: unknown key {unknown[0]!r}; allowed: base, grid, fixed")
    if "base" not in raw or not isinstance(raw["base"], str):
        raise ConfigError(f"grid file {str(p)!r}: needs base = \"path/to/config.toml\"")
    base = Path(raw["base"])
    if not base.is_absolute():
        base = (p.parent / base).resolve()
    if not base.is_file():
        raise ConfigError(f"grid file {str(p)!r}: base = {raw['base']!r}: {str(base)!r} does not exist")
    axes = raw.get("grid", {})
    fixed = raw.get("fixed", {})
    for name, table in (("grid", axes), ("fixed", fixed)):
        if not isinstance(table, dict):
            raise ConfigError(f"grid file {str(p)!r}: [{name}] must be a table of dotted keys")
        for k, v in table.items():
            if isinstance(v, dict):
                raise ConfigError(f"{name}.{k}: write dotted keys in quotes, e.g. \"attack.name\" = ...")
            if len(k.split(".")) < 2 or not all(k.split(".")):
                raise ConfigError(f"{name} key {k!r}: must be section.key, e.g. \"attack.name\"")
    for k, v in axes.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"grid.{k!r} = {v!r}: must be a non-empty list of values")
    both = sorted(set(axes) & set(fixed))
    if both:
        raise ConfigError(f"grid file {str(p)!r}: {both[0]!r} is in both [grid] and [fixed]")
    return Grid(p, base, dict(axes), dict(fixed))





def _del(raw: dict, key: str) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.get(part, {})
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)


def _get(raw: dict, key: str, default: Any = None) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _label(key: str, keys: list[str]) -> str:
    """Short, stable label of an axis in a run directory name."""
    sec, _, rest = key.partition(".")
    if rest == "name" or (sec == "privacy" and rest == "mode"):
        return sec
    if sec == "experiment":
        return rest
    return key


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else f"{v:.1f}"
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt_value(x) for x in v) or "empty"
    return str(v)


def point_name(values: dict[str, Any], keys: list[str]) -> str:
    """``attack=sign_flip__defense=median__seed=0``: axes in grid order, dropped axes left out."""
    parts = [f"{_label(k, keys)}={_fmt_value(values[k])}" for k in keys if values.get(k) is not None]
    name = "__".join(parts) or "base"
    name = re.sub(r"[^A-Za-z0-9._=+\-]", "-", name)
    if len(name) > 150:  # keep paths short; the hash keeps it unique and stable
        import hashlib

        name = name[:130] + "__" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def _comparable(cfg) -> dict:
    d = cfg.to_dict()
    d.get("simulation", {}).pop("ray_address", None)
    return d


def expand(grid: Grid) -> list[Point]:
    """All points of the grid, normalised, validated and deduplicated (first one kept)."""
    base_raw = read_toml(grid.base)
    keys = list(grid.axes)
    points: list[Point] = []
    seen: dict[str, Point] = {}
    for combo in itertools.product(*(grid.axes[k] for k in keys)):
        values = dict(zip(keys, combo))
        raw = copy.deepcopy(base_raw)
        varied = {**grid.fixed, **values}
        for k, v in varied.items():
            set_dotted(raw, k, v)
        dropped: list[str] = []
        for sec, (switch, off) in OFF_SWITCHES.items():
            if _get(raw, f"{sec}.{switch}", off) == off:
                for k in varied:
                    if k.startswith(sec + ".") and k != f"{sec}.{switch}":
                        _del(raw, k)
                        dropped.append(k)
        pt = Point(values=values, dropped=dropped)
        for _ in range(len(varied) + 1):
            try:
                pt.cfg = config_from_dict(raw)
                break
            except ConfigError as e:
                m = _UNKNOWN_KEY.match(str(e))
                key = m.group(1) if m else (e.key if e.inapplicable else None)
                if key and key not in dropped and (key in varied or e.inapplicable):
                    # a key this point's component or mode does not take (also one the base
                    # sets that the grid's change of component made meaningless)
                    _del(raw, key)
                    dropped.append(key)
                    continue
                pt.error = str(e).splitlines()[0]
                break
        for k in dropped:
            if k in pt.values:
                pt.values[k] = None
        pt.name = point_name(pt.values, keys)
        if pt.cfg is not None:
            sig = json.dumps(_comparable(pt.cfg), sort_keys=True)
            if sig in seen:
                continue  # same resolved configuration as an earlier point
            seen[sig] = pt
        elif any(p.name == pt.name for p in points):
            continue
        pt.status = "failed" if pt.error else "pending"
        points.append(pt)
    return points


# --------------------------------------------------------------------------- results table

SKIP_SUMMARY = {"versions", "hospital_names", "notes", "honest_hospital_accuracy"}
PREFIX = {"membership_inference": "mia", "threat_model": "threat"}


def flatten_summary(summary: dict) -> dict[str, Any]:
    """One flat row: nested dicts become ``section_key`` (``detection_tpr``, ``mia_auc``,
    ``per_hospital_accuracy_3``); lists become comma-joined text."""
    out: dict[str, Any] = {}

    def put(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                put(f"{prefix}_{k}", x)
        elif isinstance(v, (list, tuple)):
            out[prefix] = ",".join(map(str, v))
        else:
            out[prefix] = v

    for k, v in summary.items():
        if k in SKIP_SUMMARY:
            continue
        if v is None and k in ("detection", "membership_inference", "threat_model"):
            continue
        put(PREFIX.get(k, k), v)
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "+".join(map(str, v))
    return v


def write_results(out: Path, keys: list[str], points: list[Point]) -> Any:
    import pandas as pd

    rows = []
    for pt in points:
        row: dict[str, Any] = {"run": pt.name, "status": pt.status,
                               "error": pt.error or "", "dropped": ",".join(pt.dropped)}
        row.update({k: _cell(pt.values.get(k)) for k in keys})
        summ = out / pt.name / "summary.json"
        if pt.status in ("done", "skipped") and summ.is_file():
            row.update(flatten_summary(json.loads(summ.read_text())))
        rows.append(row)
    df = pd.DataFrame(rows)
    tmp = out / "results.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(out / "results.csv")
    try:
        pq = df.copy()
        for c in pq.columns:  # parquet wants one type per column
            if pq[c].dtype == object and pq[c].map(type).nunique() > 1:
                pq[c] = pq[c].map(lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else str(x))
        pq.to_parquet(out / "results.parquet", index=False)
    except ImportError:  # pyarrow missing: the CSV is the table
        pass
    return df


# --------------------------------------------------------------------------- running


def _complete(run: Path, cfg) -> bool:
    """The run finished (summary.json) with the same resolved configuration."""
    if not (run / "summary.json").is_file():
        return False
    try:
        old = tomllib.loads((run / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    old.get("simulation", {}).pop("ray_address", None)
    if old != _comparable(cfg):
        raise ConfigError(
            f"run directory {str(run)!r} is complete but was made with a different configuration; "
            "use a new --out directory or delete it"
        )
    return True


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds through run_sweep's finally (cli.py reports "interrupted")


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    text = msg[0] if msg else ""
    return f"{type(e).__name__}: {text}" if not isinstance(e, ConfigError) else text


def run_sweep(grid_path: str | Path, out: str | Path, *, verbose: bool = False,
              console=None) -> list[Point]:
    """Run every point of the grid into ``out``; returns the points with their status."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..engine import run_experiment

    console = console or Console(highlight=False)
    grid = load_grid(grid_path)
    out = Path(out)
    points = expand(grid)
    keys = list(grid.axes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(
        {"grid_file": str(Path(grid_path).resolve()), "base": str(grid.base), "axes": grid.axes,
         "fixed": grid.fixed, "points": [{"run": p.name, "values": p.values, "dropped": p.dropped}
                                         for p in points]}, indent=2, default=str))
    shutil.copyfile(grid_path, out / "grid.toml")
    todo = []
    for pt in points:
        if pt.cfg is None:
            continue
        if _complete(out / pt.name, pt.cfg):
            pt.status = "skipped"
        else:
            todo.append(pt)
    n_skip = sum(p.status == "skipped" for p in points)
    n_bad = sum(p.status == "failed" for p in points)
    n_grid = math.prod(len(v) for v in grid.axes.values())
    console.print(
        f"[bold]sweep[/bold] {grid.path.name}: {n_grid} grid points -> {len(points)} runs "
        f"({n_grid - len(points)} collapsed as duplicates), {n_skip} already complete (skipped), "
        f"{n_bad} invalid, {len(todo)} to run -> {out}"
    )
    for pt in points:
        if pt.status == "failed":
            console.print(f"  [yellow]invalid[/yellow] {pt.name}: {pt.error}")

    from ..flower.simulation import SimulationPool

    pool = SimulationPool(verbose=verbose)  # one Ray simulation for every point that needs one
    old_term = None
    if hasattr(signal, "SIGTERM"):
        try:  # `kill PID` ends the sweep like Ctrl-C: the table is written
            old_term = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            old_term = None
    try:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("runs"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   TextColumn("{task.fields[detail]}")]
        with Progress(*columns, console=console, transient=False, disable=not todo) as progress:
            task = progress.add_task("sweep", total=len(todo), detail="")
            for pt in todo:
                rounds = pt.cfg.experiment.rounds
                progress.update(task, detail=f"{pt.name} round 0/{rounds}")

                def on_round(row: dict, pt=pt, rounds=rounds) -> None:
                    progress.update(task, detail=f"{pt.name} round {row['round']}/{rounds}")

                t0 = time.perf_counter()
                try:
                    summary = run_experiment(pt.cfg, out / pt.name, verbose=verbose, on_round=on_round,
                                             transport=pool.transport_for(pt.cfg))
                    pt.status = "done"
                    asr = summary.get("attack_success_rate")
                    progress.console.print(
                        f"  [green]done[/green] {pt.name}: accuracy {summary['clean_accuracy']:.3f}"
                        + (f", attack success {asr:.3f}" if asr is not None else "")
                        + f" ({time.perf_counter() - t0:.1f} s)")
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - one failed point must not end the sweep
                    pt.status, pt.error = "failed", _one_line(e)
                    progress.console.print(f"  [red]failed[/red] {pt.name}: {pt.error}")
                progress.advance(task)
                write_results(out, keys, points)  # the table is current after every run
    finally:
        pool.close()
        write_results(out, keys, points)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    done = sum(p.status in ("done", "skipped") for p in points)
    failed = sum(p.status == "failed" for p in points)
    console.print(f"[bold]{done}/{len(points)} runs complete[/bold]"
                  + (f", {failed} failed" if failed else "")
                  + f"; table {out / 'results.csv'}; report: fedmedsec report {out}")
    return points


def run_sweep_cli(args) -> int:
    points = run_sweep(args.grid, args.out, verbose=getattr(args, "verbose", False))
    return 1 if any(p.status == "failed" for p in points) else 0
