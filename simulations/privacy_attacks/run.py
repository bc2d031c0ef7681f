"""Run one of this folder's point lists and print its table (markdown).

    python simulations/privacy_attacks/run.py GRID.toml --data PATH [--out DIR] [--seeds 0 1 2]

A grid here lists named points (``[[point]]`` with a ``set`` table of dotted keys) on top
of ``base`` and ``[fixed]``, and optionally ``seeds``. Each point (and seed) is exactly

    fedmedsec run BASE -s data.path=PATH -s KEY=VALUE ... --out DIR/NAME[_sSEED] --quiet

run in this one process (``fedmedsec.cli.main``, so Python and torch are imported once). A
point whose ``summary.json`` exists is not run again. The table holds the mean (and the
standard deviation over seeds) of the grid's ``columns`` read from each ``summary.json``,
and is written to ``DIR/table.md``. ``data.path`` is given on the command line because the
data files are the user's own (nothing in the repository points at them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

import tomli_w

#: where a column is found in summary.json
PATHS = {
    "mia_auc": ("membership_inference", "auc"),
    "mia_tpr_at_1pct_fpr": ("membership_inference", "tpr_at_1pct_fpr"),
    "lira_auc": ("membership_inference", "lira", "auc"),
    "lira_tpr_at_1pct_fpr": ("membership_inference", "lira", "tpr_at_1pct_fpr"),
    "epsilon": ("epsilon",),
    "clean_accuracy": ("clean_accuracy",),
}


def toml_value(v) -> str:
    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


def value(summary: dict, column: str):
    path = PATHS.get(column, ("reconstruction", column))
    node = summary
    for k in path:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid")
    p.add_argument("--data", required=True, help="data.path for every point (your copy of the file)")
    p.add_argument("--out", help="directory of the runs (default runs/privacy_attacks/GRID)")
    p.add_argument("--seeds", type=int, nargs="*", help="override the grid's seeds")
    args = p.parse_args(argv)
    from fedmedsec.cli import main as fedmedsec

    grid_path = Path(args.grid)
    grid = tomllib.loads(grid_path.read_text())
    base = (grid_path.parent / grid["base"]).resolve()
    out = Path(args.out or Path("runs") / "privacy_attacks" / grid_path.stem)
    seeds = args.seeds if args.seeds is not None else grid.get("seeds", [None])
    columns = grid["columns"]
    rows = []
    for point in grid["point"]:
        results = []
        for seed in seeds:
            name = point["name"] + ("" if seed is None else f"_s{seed}")
            run_dir = out / name
            keys = {"data.path": args.data, **grid.get("fixed", {}), **point.get("set", {})}
            if seed is not None:
                keys["experiment.seed"] = seed
            if not (run_dir / "summary.json").is_file():
                sets = [a for k, v in keys.items() for a in ("-s", f"{k}={toml_value(v)}")]
                print(f"== {name}", flush=True)
                if fedmedsec(["run", str(base), *sets, "--out", str(run_dir), "--quiet", "--overwrite"]):
                    print(f"   {name} failed", file=sys.stderr)
                    continue
            results.append(json.loads((run_dir / "summary.json").read_text()))
        rows.append((point["name"], results))
    lines = ["| point | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, results in rows:
        cells = []
        for c in columns:
            vals = [v for v in (value(s, c) for s in results) if v is not None and math.isfinite(v)]
            if not vals:
                cells.append("-")
                continue
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
            fmt = ".1f" if c.endswith("seconds") or c.endswith("psnr") else ".3g" if c == "epsilon" else ".3f"
            cells.append(f"{mean:{fmt}}" + (f" ± {sd:{fmt}}" if sd is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
