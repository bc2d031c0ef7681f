"""A markdown table of one summary.json metric over a sweep: rows x columns, mean over seeds
and its 95% t-interval (half-width after the +-), n when it is not the same in every cell.

    python simulations/table.py runs/shapes/ndss_tailored --rows attack.name --cols defense.name
    python simulations/table.py runs/shapes/ndss_tailored --delta attack.name=none   # paired by seed
    python simulations/table.py runs/knowledge_levels --where attack.knowledge=partial
    python simulations/table.py DIR ... --metric clean_twin/clean_accuracy   # nested key

Every run directory under DIR with a summary.json and a config.toml counts (not only the points
of the last sweep.json: check_shapes sweeps a subset grid into the same directory).
--rows / --cols name resolved-config keys (dotted; "a,b" labels a row by both values); --where keeps runs whose key takes one of
the listed values (repeatable); --metric is a summary.json key ("a/b" for nested keys);
--delta KEY=VALUE shows, per cell, the mean over seeds of (cell - the run with KEY=VALUE and
otherwise the same config and seed), e.g. attacked minus clean accuracy. Any other resolved key
that differs within a cell (apart from the seed) must be fixed with --where, or the cell would
pool it: the script refuses and names the key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_shapes import _flat, _get, t_interval  # noqa: E402

#: resolved keys that do not change a run's result (where it ran)
IGNORED = ("simulation.", "tracking.")


def _parse_where(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out.setdefault(k, []).extend(v.split(","))
    return out


def _is(value, allowed: list[str]) -> bool:
    return str(value) in allowed or json.dumps(value) in allowed


def _keep(cfg: dict, where: dict[str, list[str]]) -> bool:
    return all(_is(cfg.get(k), vs) for k, vs in where.items())


def _label(cfg: dict, keys: str) -> str:
    """The cell label of a run: the values of the comma-separated keys, joined by " / " (keys
    the run does not have, e.g. attack.knowledge of a clean run, left out)."""
    vals = [str(cfg[k]) for k in keys.split(",") if cfg.get(k) is not None]
    return " / ".join(vals) or "None"


def runs(sweep_dir: Path) -> list[tuple[dict, dict]]:
    """(resolved config as dotted keys, summary) of every finished run directory in sweep_dir."""
    out = []
    for d in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        try:
            summary = json.loads((d / "summary.json").read_text())
            cfg = _flat(tomllib.loads((d / "config.toml").read_text()))
        except (OSError, ValueError):
            continue
        out.append(({k: v for k, v in cfg.items() if not k.startswith(IGNORED)}, summary))
    return out


def cells_by_seed(sweep_dir: Path, rows: str, cols: str, metric: str,
                  where: dict[str, list[str]] | None = None, seed_key: str = "experiment.seed",
                  delta: tuple[str, str] | None = None) -> dict[tuple[str, str], dict]:
    """{(row value, column value): {seed: metric}}; with delta = (key, value), the metric minus
    that of the run equal in every other key (seed included) but key = value (cells without
    such a partner are left out). ValueError naming a key that varies within a cell."""
    where = where or {}
    all_runs = runs(sweep_dir)
    out: dict[tuple[str, str], dict] = {}
    first: dict[tuple[str, str], dict] = {}
    for cfg, summary in all_runs:
        if not _keep(cfg, where):
            continue
        key = (_label(cfg, rows), _label(cfg, cols))
        rest = {k: v for k, v in cfg.items()
                if k not in (*rows.split(","), *cols.split(","), seed_key) and k not in where}
        ref = first.setdefault(key, rest)
        for k in sorted(set(ref) | set(rest)):
            if ref.get(k) != rest.get(k):
                raise ValueError(f"cell {key} pools {k} = {sorted({json.dumps(ref.get(k)), json.dumps(rest.get(k))})}: "
                                 f"fix it with --where {k}=...")
        x = _get(summary, metric)
        if x is None:
            continue
        if delta:
            # the partner: same keys apart from delta's (and the keys only one of the two has,
            # like attack.* next to a clean run)
            mine = {k: v for k, v in cfg.items() if k != delta[0]}
            partner = None
            for c, s in all_runs:
                if _is(c.get(delta[0]), [delta[1]]) and all(
                        mine.get(k) == v for k, v in c.items() if k != delta[0] and k in mine):
                    partner = s
                    break
            if partner is None or _get(partner, metric) is None:
                continue
            x = float(x) - float(_get(partner, metric))
        out.setdefault(key, {})[cfg.get(seed_key)] = float(x)
    return out


def cells(sweep_dir: Path, rows: str, cols: str, metric: str, where: dict[str, list[str]] | None = None,
          seed_key: str = "experiment.seed", delta: tuple[str, str] | None = None
          ) -> dict[tuple[str, str], list[float]]:
    """{(row value, column value): [metric of each seed, in seed order]} (``cells_by_seed``)."""
    c = cells_by_seed(sweep_dir, rows, cols, metric, where, seed_key, delta)
    return {k: [v[s] for s in sorted(v)] for k, v in c.items()}


def fmt(xs: list[float], digits: int = 3, n_all: int | None = None, sign: bool = False) -> str:
    if not xs:
        return "-"
    m, lo, hi = t_interval(xs)
    s = f"{m:+.{digits}f}" if sign else f"{m:.{digits}f}"
    if len(xs) > 1 and math.isfinite(hi):
        s += f" ± {hi - m:.{digits}f}"
    if n_all is not None and len(xs) != n_all:
        s += f" (n={len(xs)})"
    return s


def markdown(c: dict[tuple[str, str], list[float]], row_order: list[str] | None = None,
             col_order: list[str] | None = None, digits: int = 3, corner: str = "",
             sign: bool = False) -> str:
    rows = row_order or sorted({r for r, _ in c})
    cols = col_order or sorted({k for _, k in c})
    rows = [r for r in rows if any((r, k) in c for k in cols)]
    cols = [k for k in cols if any((r, k) in c for r in rows)]
    n_all = max((len(v) for v in c.values()), default=0)
    lines = [f"| {corner} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(fmt(c.get((r, k), []), digits, n_all, sign) for k in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir")
    ap.add_argument("--rows", default="attack.name")
    ap.add_argument("--cols", default="defense.name")
    ap.add_argument("--metric", default="clean_accuracy")
    ap.add_argument("--where", action="append", default=[], help="KEY=V1,V2 (repeatable)")
    ap.add_argument("--delta", help="KEY=VALUE: paired difference to that run, per seed")
    ap.add_argument("--row-order", help="comma-separated")
    ap.add_argument("--col-order", help="comma-separated")
    ap.add_argument("--digits", type=int, default=3)
    a = ap.parse_args(argv)
    delta = tuple(a.delta.split("=", 1)) if a.delta else None
    try:
        c = cells(Path(a.sweep_dir), a.rows, a.cols, a.metric, _parse_where(a.where), delta=delta)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(c, a.row_order.split(",") if a.row_order else None,
                   a.col_order.split(",") if a.col_order else None, a.digits,
                   corner=f"{a.rows} \\ {a.cols}", sign=bool(delta)))
    n = sorted({len(v) for v in c.values()})
    what = f"{a.metric} minus its {a.delta} run (same seed)" if delta else a.metric
    print(f"\n{what}: mean ± 95% t half-width over seeds; n per cell {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
