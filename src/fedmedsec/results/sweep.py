"""``fedmedsec sweep GRID.toml --out DIR [-s key=value ...] [--dry-run]``: the cartesian
product of a grid, one run directory per point, and tidy tables for all of them
(``tidy.py``): ``results`` (one row per run), ``rounds``, ``hospitals`` and ``clients`` (long),
each as .csv and .parquet in DIR.

Grid file::

    base = "configs/quickstart.toml"      # relative to the grid file, or absolute
    [grid]                                # cartesian product of these dotted keys
    "attack.name" = ["none", "sign_flip"]
    "defense.name" = ["fedavg", "median"]
    [fixed]                               # applied to every point
    "attack.fraction" = 0.3

Impossible points are normalised, not errors: keys of a section that is switched off
(``attack.*`` with ``attack.name = "none"``, ``privacy.*`` with ``privacy.mode = "none"``, except ``privacy.secure_aggregation`` and
``privacy.prune_ratio``, which every mode reads) and
component keys the chosen component does not take (``attack.z`` for ``label_flip``) are
dropped for that point; points that then resolve to the same configuration are run once.
A point whose configuration is still invalid is recorded as failed with its one-line error.
``-s key=value`` on the command line applies to every point like ``[fixed]`` (and wins over
it); sweep.json records the grid, the fixed keys and these overrides. ``--dry-run`` prints the
points with the resolved keys that differ between them and stops.

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

from ..config import ConfigError, config_from_dict, parse_value, read_toml, set_dotted
from . import tidy
from .tidy import flatten_summary  # noqa: F401 - re-exported

GRID_KEYS = {"base", "grid", "fixed"}
#: sections switched off by one of their keys; their other keys are dropped for that point
OFF_SWITCHES = {"attack": ("name", "none"), "privacy": ("mode", "none")}


def _keys_when_off(section: str) -> set[str]:
    """Keys a switched-off section still reads (``privacy.secure_aggregation`` and
    ``privacy.prune_ratio`` apply with ``privacy.mode = "none"`` too)."""
    if section != "privacy":
        return set()
    from ..config import PrivacyNone

    return {f"privacy.{k}" for k in PrivacyNone.model_fields if k != "mode"}
_UNKNOWN_KEY = re.compile(r"^unknown key '((?:attack|defense|data|model)\.[A-Za-z0-9_]+)' for ")


# --------------------------------------------------------------------------- grid


@dataclass
class Grid:
    path: Path
    base: Path
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    #: ``-s key=value`` from the command line: like fixed, applied to every point
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Point:
    """One grid point after normalisation."""

    values: dict[str, Any]  # every axis -> its value (None where dropped for this point)
    name: str = ""
    cfg: Any = None  # the validated Config, or None when invalid
    error: str | None = None
    dropped: list[str] = field(default_factory=list)
    status: str = "pending"  # pending | skipped | done | failed


def parse_overrides(assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> {"a.b": 1}, values parsed as TOML (as ``fedmedsec run -s``)."""
    out: dict[str, Any] = {}
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"-s {a!r}: expected dotted.key=value")
        key, _, text = a.partition("=")
        key = key.strip()
        if len(key.split(".")) < 2 or not all(key.split(".")):
            raise ConfigError(f"-s {a!r}: key must be section.key, e.g. attack.name")
        out[key] = parse_value(text.strip())
    return out


def load_grid(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Grid:
    """Read and check a grid file (and ``-s`` overrides); every problem is a one-line ``ConfigError``."""
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
    sets = parse_overrides(overrides)
    clash = sorted(set(sets) & set(axes))
    if clash:
        raise ConfigError(f"-s {clash[0]}: {clash[0]!r} is a [grid] axis of {str(p)!r}; "
                          "change the grid file or give the key as a single value there")
    return Grid(p, base, dict(axes), dict(fixed), sets)





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


#: config parts that do not change a run's results (where it runs, where it is tracked)
NOT_COMPARED = (("simulation", "ray_address"), ("tracking", None))


def _strip(d: dict) -> dict:
    for sec, key in NOT_COMPARED:
        if key is None:
            d.pop(sec, None)
        else:
            d.get(sec, {}).pop(key, None)
    return d


def _comparable(cfg) -> dict:
    return _strip(cfg.to_dict())


def _stored(old: dict) -> dict:
    """A stored config.toml as the current code resolves it: keys added since the run was
    made (new sections, new options) take their defaults, so a finished run stays finished
    after an upgrade that adds an option it did not use; a stored config the current code
    refuses is compared as written; keys it calls inapplicable are left out."""
    raw = copy.deepcopy(old)
    for _ in range(8):  # older versions wrote keys now called inapplicable (Ray keys in-process)
        try:
            return _comparable(config_from_dict(raw))
        except ConfigError as e:
            if not (e.inapplicable and e.key) or _get(raw, e.key) is None:
                break
            _del(raw, e.key)
        except (ValueError, TypeError):
            break
    return _strip(old)


def expand(grid: Grid) -> list[Point]:
    """All points of the grid, normalised, validated and deduplicated (first one kept)."""
    base_raw = read_toml(grid.base)
    keys = list(grid.axes)
    points: list[Point] = []
    seen: dict[str, Point] = {}
    for combo in itertools.product(*(grid.axes[k] for k in keys)):
        values = dict(zip(keys, combo))
        raw = copy.deepcopy(base_raw)
        varied = {**grid.fixed, **grid.overrides, **values}
        for k, v in varied.items():
            set_dotted(raw, k, v)
        dropped: list[str] = []
        for sec, (switch, off) in OFF_SWITCHES.items():
            if _get(raw, f"{sec}.{switch}", off) == off:
                for k in varied:
                    if k.startswith(sec + ".") and k != f"{sec}.{switch}" and k not in _keys_when_off(sec):
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


# --------------------------------------------------------------------------- results tables


def point_config(pt: Point, grid: Grid) -> dict[str, Any]:
    """The point's resolved config as dotted keys (``tracking.*`` left out: it does not
    change results and a URI may hold credentials); for an invalid point, the keys it set."""
    if pt.cfg is not None:
        flat = tidy.flatten_config(pt.cfg.to_dict())
    else:
        flat = {k: (tidy._text(v) if isinstance(v, (list, tuple)) else v)
                for k, v in {**grid.fixed, **grid.overrides, **pt.values}.items()
                if v is not None and k not in pt.dropped}
    return {k: v for k, v in flat.items() if not k.startswith("tracking.")}


def _summary(out: Path, pt: Point) -> dict | None:
    summ = out / pt.name / "summary.json"
    if pt.status not in ("done", "skipped") or not summ.is_file():
        return None
    try:
        return json.loads(summ.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def results_table(out: Path, grid: Grid, points: list[Point]):
    """``results`` (``tidy.py``): one row per point, its resolved config and its summary."""
    rows, keys = [], {}
    for pt in points:
        cfg = point_config(pt, grid)
        keys.update(dict.fromkeys(cfg))
        row: dict[str, Any] = {"run": pt.name, "status": pt.status, "error": pt.error or "",
                               "dropped_keys": ",".join(pt.dropped), **cfg}
        summary = _summary(out, pt)
        if summary is not None:
            if row.get("data.num_hospitals") is None and summary.get("num_hospitals") is not None:
                row["data.num_hospitals"] = summary["num_hospitals"]  # the number the split used
                keys.setdefault("data.num_hospitals", None)
            row.update(tidy.flatten_summary(summary))
        rows.append(row)
    return tidy.results_frame(rows, list(keys))


def write_results(out: Path, grid: Grid, points: list[Point], long: bool = True):
    """Write ``results`` (and, with ``long``, ``rounds``, ``hospitals``, ``clients``) into
    ``out``; returns the results frame."""
    res = results_table(out, grid, points)
    tidy.write_table(res, out, "results")
    if long:
        rounds, hospitals, clients = [], [], []
        for pt in points:
            summary = _summary(out, pt)
            if summary is None:
                continue
            for name, parts in (("rounds.csv", rounds), ("clients.csv", clients)):
                t = tidy.read_run_csv(out / pt.name / name)
                if t is not None:
                    parts.append(t.assign(run=pt.name))
            h = tidy.hospital_rows(pt.name, summary)
            if h:
                import pandas as pd

                hospitals.append(pd.DataFrame(h))
        keys = list(grid.axes)  # the grid's axes, so that a long table groups without a join
        tidy.write_table(tidy.long_frame(rounds, res, keys), out, "rounds")
        tidy.write_table(tidy.long_frame(hospitals, res, keys), out, "hospitals")
        tidy.write_table(tidy.long_frame(clients, res, keys, tidy.CLIENT_KINDS), out, "clients")
    return res


# --------------------------------------------------------------------------- running


def _complete(run: Path, cfg) -> bool:
    """The run finished (a readable summary.json) with the same resolved configuration; a
    truncated or corrupt summary.json counts as not finished (the run is redone or resumed)."""
    if not (run / "summary.json").is_file():
        return False
    try:
        json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    try:
        old = tomllib.loads((run / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    if _stored(old) != _comparable(cfg):
        raise ConfigError(
            f"run directory {str(run)!r} is complete but was made with a different configuration; "
            "use a new --out directory or delete it"
        )
    return True


def _resumable(run: Path, cfg) -> bool:
    """A killed run of this point left a checkpoint of the same configuration."""
    from ..checkpoint import RECORDS

    try:
        return json.loads((run / RECORDS).read_text()).get("config") == cfg.to_toml()
    except (OSError, ValueError):
        return False


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds through run_sweep's finally (cli.py reports "interrupted")


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    text = msg[0] if msg else ""
    return f"{type(e).__name__}: {text}" if not isinstance(e, ConfigError) else text


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _console(console=None):
    if console is not None:
        return console
    from ..cli import make_console

    return make_console()


def _write_meta(out: Path, grid: Grid, grid_path: str | Path, points: list[Point]) -> None:
    (out / "sweep.json").write_text(json.dumps(
        {"grid_file": str(Path(grid_path).resolve()), "base": str(grid.base), "axes": grid.axes,
         "fixed": grid.fixed, "overrides": grid.overrides,
         "points": [{"run": p.name, "values": p.values, "dropped": p.dropped} for p in points]},
        indent=2, default=str))
    shutil.copyfile(grid_path, out / "grid.toml")


def escape(text: str) -> str:
    from rich.markup import escape as esc

    return esc(text)


def _header(console, grid: Grid, points: list[Point], extra: str) -> None:
    n_grid = math.prod(len(v) for v in grid.axes.values())
    n_bad = sum(p.status == "failed" for p in points)
    console.print(
        f"[bold]sweep[/bold] {grid.path.name}: {n_grid} grid points -> {len(points)} runs "
        f"({n_grid - len(points)} collapsed as duplicates), {n_bad} invalid{extra}")
    if grid.overrides:
        console.print("  -s (every point): " + ", ".join(f"{k} = {v!r}" for k, v in grid.overrides.items()),
                      markup=False)
    for pt in points:
        if pt.status == "failed":
            console.print(f"  [yellow]invalid[/yellow] {pt.name}: {escape(pt.error or '')}")


def dry_run(grid_path: str | Path, out: str | Path | None = None, *, overrides: tuple[str, ...] | list[str] = (),
            console=None) -> list[Point]:
    """Print the points and the resolved keys that differ between them; run nothing and write
    nothing. With ``out``, also say which points are already complete there."""
    from rich.table import Table

    console = _console(console)
    grid = load_grid(grid_path, overrides)
    points = expand(grid)
    flat = {pt.name: point_config(pt, grid) for pt in points}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1]
    state = {}
    if out is not None:
        for pt in points:
            if pt.cfg is None:
                continue
            try:
                state[pt.name] = "complete" if _complete(Path(out) / pt.name, pt.cfg) else "to run"
            except ConfigError:
                state[pt.name] = "differs"
    _header(console, grid, points, "; dry run: nothing is run or written")
    t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    t.add_column("run")
    for k in differ:
        t.add_column(escape(k), justify="right")
    t.add_column("not applied")
    if state:
        t.add_column(f"in {out}")
    for pt in points:
        f = flat[pt.name]
        cells = [pt.name, *[("-" if f.get(k) is None else str(f[k])) for k in differ],
                 ", ".join(pt.dropped) or "-"]
        if state:
            cells.append(state.get(pt.name, "invalid"))
        t.add_row(*[escape(c) for c in cells])
    console.print(t)
    same = len(keys) - len(differ)
    console.print(f"{len(differ)} resolved keys differ between the points; {same} are the same for all.")
    return points


def run_sweep(grid_path: str | Path, out: str | Path, *, verbose: bool = False,
              console=None, overrides: tuple[str, ...] | list[str] = ()) -> list[Point]:
    """Run every point of the grid into ``out``; returns the points with their status. On a
    terminal a progress bar; otherwise (logs) one plain line per finished run with the
    elapsed time and the ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..engine import run_experiment

    console = _console(console)
    grid = load_grid(grid_path, overrides)
    out = Path(out)
    points = expand(grid)
    out.mkdir(parents=True, exist_ok=True)
    _write_meta(out, grid, grid_path, points)
    todo = []
    for pt in points:
        if pt.cfg is None:
            continue
        if _complete(out / pt.name, pt.cfg):
            pt.status = "skipped"
        else:
            todo.append(pt)
    n_skip = sum(p.status == "skipped" for p in points)
    _header(console, grid, points, f", {n_skip} already complete (skipped), {len(todo)} to run -> {out}")

    from ..flower.simulation import SimulationPool

    pool = SimulationPool(verbose=verbose)  # one Ray simulation for every point that needs one
    old_term = None
    if hasattr(signal, "SIGTERM"):
        try:  # `kill PID` ends the sweep like Ctrl-C: the table is written
            old_term = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            old_term = None
    bar = console.is_terminal and bool(todo)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("runs"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
               TextColumn("{task.fields[detail]}")]
    started = time.perf_counter()
    try:
        with Progress(*columns, console=console, transient=False, disable=not bar) as progress:
            task = progress.add_task("sweep", total=len(todo), detail="")
            say = progress.console.print if bar else console.print
            for i, pt in enumerate(todo, 1):
                rounds = pt.cfg.experiment.rounds
                progress.update(task, detail=f"{pt.name} round 0/{rounds}")

                def on_round(row: dict, pt=pt, rounds=rounds) -> None:
                    progress.update(task, detail=f"{pt.name} round {row['round']}/{rounds}")

                def on_twin(pt=pt) -> None:
                    progress.update(task, detail=f"{pt.name} clean twin")

                t0 = time.perf_counter()
                try:
                    summary = run_experiment(pt.cfg, out / pt.name, verbose=verbose, on_round=on_round,
                                             on_twin_start=on_twin, resume=_resumable(out / pt.name, pt.cfg),
                                             transport=pool.transport_for(pt.cfg))
                    pt.status = "done"
                    asr = summary.get("attack_success_rate")
                    msg = (f"[green]done[/green] {pt.name}: accuracy {summary['clean_accuracy']:.3f}"
                           + (f", attack success {asr:.3f}" if asr is not None else "")
                           + f" ({time.perf_counter() - t0:.1f} s)")
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - one failed point must not end the sweep
                    pt.status, pt.error = "failed", _one_line(e)
                    msg = f"[red]failed[/red] {pt.name}: {escape(pt.error)}"
                if not bar:
                    spent = time.perf_counter() - started
                    eta = spent / i * (len(todo) - i)
                    msg = f"[{i}/{len(todo)}] {msg}; elapsed {_clock(spent)}, ETA {_clock(eta)}"
                say("  " + msg, soft_wrap=True)
                progress.advance(task)
                write_results(out, grid, points, long=False)  # the table is current after every run
    finally:
        pool.close()
        write_results(out, grid, points)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    done = sum(p.status in ("done", "skipped") for p in points)
    failed = sum(p.status == "failed" for p in points)
    console.print(f"[bold]{done}/{len(points)} runs complete[/bold]"
                  + (f", {failed} failed" if failed else "")
                  + f"; tables {out}/{{results,rounds,hospitals,clients}}.{{csv,parquet}}; "
                  f"report: fedmedsec report {out}", soft_wrap=True)
    return points


def run_sweep_cli(args) -> int:
    overrides = getattr(args, "set", None) or []
    if getattr(args, "dry_run", False):
        dry_run(args.grid, getattr(args, "out", None), overrides=overrides)
        return 0
    if not getattr(args, "out", None):
        raise ConfigError("fedmedsec sweep: --out DIR is required (the sweep directory), except with --dry-run")
    points = run_sweep(args.grid, args.out, verbose=getattr(args, "verbose", False), overrides=overrides)
    return 1 if any(p.status == "failed" for p in points) else 0
