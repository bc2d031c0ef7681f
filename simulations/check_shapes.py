"""Published shapes as regression tests: rerun the simulations and check their claims.

    python simulations/check_shapes.py            # every folder with a shape.toml
    python simulations/check_shapes.py --quick    # only the claims marked quick (minutes)
    python simulations/check_shapes.py --only backdoor_norm_bounding --out runs/shapes

Each ``simulations/<folder>/shape.toml`` names a sweep grid and states what the literature
found as machine-checkable claims over seeds::

    grid = "shape_grid.toml"        # a sweep grid (relative to the folder); needs >= 3 seeds
    source = "Sun et al. 2019, 'Can you really backdoor federated learning?'"

    [[claim]]
    name = "norm bounding stops the boosted backdoor"
    metric = "attack_success_lift"          # a summary.json key ("a/b" for nested keys)
    baseline = { "defense.name" = "fedavg" }        # resolved-config keys selecting runs
    treatment = { "defense.name" = "norm_bounding" }
    expect = "lower"                        # treatment lower (or "higher") than baseline
    margin = 0.3                            # by at least this much, on the mean over seeds
    # expect = "not_lower" / "not_higher": no worse than the margin (e.g. a clean-accuracy cost)
    quick = true                            # part of --quick
    # baseline_metric = "clean_accuracy"   # optional: read the baseline from another key (a
    #                                       # within-run contrast when both selectors are equal)

A claim pairs the baseline and treatment runs by seed (every other resolved key equal
except those the claim names), takes the per-seed differences, and passes when their mean
meets the margin and the 95% t-interval of the mean difference excludes zero ("lower" /
"higher"), or when the mean is no worse than the margin ("not_lower" / "not_higher"). Runs go to
``--out`` (default runs/shapes) and are resumed, not redone, when this is run again.
Exit status 1 when a claim fails.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _get(d: dict, path: str):
    for part in path.split("/"):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _runs(sweep_dir: Path) -> list[tuple[dict, dict, dict]]:
    """(resolved config flattened to dotted keys, the point's grid values, summary) of every
    finished run of the sweep."""
    points = {p["run"]: p["values"] for p in json.loads((sweep_dir / "sweep.json").read_text())["points"]}
    out = []
    for name, values in points.items():
        d = sweep_dir / name
        try:
            summary = json.loads((d / "summary.json").read_text())
            cfg = _flat(tomllib.loads((d / "config.toml").read_text()))
        except (OSError, ValueError):
            continue
        out.append((cfg, values, summary))
    return out


def _matches(cfg: dict, sel: dict) -> bool:
    return all(cfg.get(k) == v for k, v in sel.items())


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t-interval of the mean."""
    from scipy.stats import t

    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, -math.inf, math.inf
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return m, m - h, m + h


def check_claim(claim: dict, runs: list[tuple[dict, dict, dict]]) -> dict:
    """Evaluate one claim on the runs of its grid (module docstring): runs pair up when
    every grid axis the claim does not name has the same value (the seed included)."""
    named = set(claim["baseline"]) | set(claim["treatment"])
    metric = claim["metric"]
    base_metric = claim.get("baseline_metric", metric)

    def key(values: dict) -> tuple:
        return tuple(sorted((k, json.dumps(v)) for k, v in values.items() if k not in named))

    base = {key(v): _get(s, base_metric) for c, v, s in runs if _matches(c, claim["baseline"])}
    treat = {key(v): _get(s, metric) for c, v, s in runs if _matches(c, claim["treatment"])}
    pairs = [(base[k], treat[k]) for k in sorted(base) if k in treat
             and base[k] is not None and treat[k] is not None]
    expect = claim.get("expect", "lower")
    if expect not in ("lower", "higher", "not_lower", "not_higher"):
        raise SystemExit(f"claim {claim['name']!r}: expect = {expect!r}: choose lower, higher, not_lower, not_higher")
    sign = -1.0 if expect in ("lower", "not_higher") else 1.0
    diffs = [sign * (t - b) for b, t in pairs]
    res = {"name": claim["name"], "metric": metric if base_metric == metric else f"{base_metric} -> {metric}",
           "n": len(diffs), "expect": claim.get("expect", "lower"),
           "margin": float(claim.get("margin", 0.0))}
    if len(diffs) < 3:
        return {**res, "passed": False, "why": f"{len(diffs)} seed pairs (need >= 3)"}
    m, lo, hi = t_interval(diffs)
    res.update(baseline=sum(b for b, _ in pairs) / len(pairs), treatment=sum(t for _, t in pairs) / len(pairs),
               effect=m, ci=(lo, hi))
    if expect in ("lower", "higher"):  # an effect of at least the margin, distinguishable from none
        passed = m >= res["margin"] and lo > 0
        why = f"mean effect {m:.3f} < margin {res['margin']}" if m < res["margin"] else "95% CI includes 0"
    else:  # no worse than the margin: (treatment - baseline) in the bad direction <= margin
        passed = m >= -res["margin"]
        why = f"mean effect {m:.3f} is worse than -{res['margin']}"
    return {**res, "passed": passed, "why": "" if passed else why}


def mean_sd(values) -> str:
    """mean +- sd over seeds (n); with n = 2 a 95% t-interval (t = 12.7) says nothing."""
    v = [float(x) for x in values if x is not None and x == x]
    if not v:
        return "-"
    sd = f" +- {statistics.stdev(v):.3f}" if len(v) > 1 else ""
    return f"{statistics.fmean(v):.3f}{sd} (n={len(v)})"


def folder_claims(folder: Path, sweep: Path) -> list[dict]:
    """Every claim of the ``*.toml`` files in ``folder`` whose ``grid`` is the sweep's grid
    file, checked on the sweep's runs (read once)."""
    grid = Path(json.loads((sweep / "sweep.json").read_text()).get("grid_file", "")).name
    runs = _runs(sweep)
    out = []
    for f in sorted(folder.glob("*.toml")):
        spec = tomllib.loads(f.read_text())
        if spec.get("grid") == grid and "claim" in spec:
            out += [{"file": f.name, **check_claim(c, runs)} for c in spec["claim"]]
    return out


def claims_table(results: list[dict]) -> str:
    """A markdown table of checked claims (``check_claim`` results)."""
    lines = ["| claim | n | baseline | treatment | effect (95% CI) | result |", "|---|---|---|---|---|---|"]
    for r in results:
        if "effect" in r:
            lines.append(f"| {r['name']} | {r['n']} | {r['baseline']:.3f} | {r['treatment']:.3f} | "
                         f"{r['effect']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | "
                         f"{'PASS' if r['passed'] else 'FAIL ' + r['why']} |")
        else:
            lines.append(f"| {r['name']} | {r['n']} | | | | FAIL {r['why']} |")
    return "\n".join(lines)


def run_folder(folder: Path, out: Path, quick: bool) -> list[dict]:
    from rich.console import Console

    from fedmedsec.results.sweep import run_sweep

    spec = tomllib.loads((folder / "shape.toml").read_text())
    claims = [c for c in spec.get("claim", []) if c.get("quick") or not quick]
    if not claims:
        return []
    grid = folder / spec["grid"]
    sweep_dir = out / folder.name
    run_sweep(grid, sweep_dir, console=Console(stderr=True, highlight=False))
    runs = _runs(sweep_dir)
    return [{"folder": folder.name, "source": spec.get("source", ""), **check_claim(c, runs)} for c in claims]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the claims marked quick")
    ap.add_argument("--only", nargs="*", help="folders to check (default: every folder with a shape.toml)")
    ap.add_argument("--out", default="runs/shapes", help="where the sweeps run (resumed when rerun)")
    ap.add_argument("--json", help="write the results as JSON here too")
    args = ap.parse_args(argv)
    folders = sorted(p.parent for p in HERE.glob("*/shape.toml"))
    if args.only:
        folders = [f for f in folders if f.name in set(args.only)]
    results = []
    for f in folders:
        results += run_folder(f, Path(args.out), args.quick)
    print(f"\n{'claim':70s} {'n':>2s} {'baseline':>9s} {'treatment':>9s} {'effect':>7s}  95% CI            result")
    for r in results:
        if "effect" in r:
            ci = f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"
            print(f"{(r['folder'] + ': ' + r['name'])[:70]:70s} {r['n']:2d} {r['baseline']:9.3f} "
                  f"{r['treatment']:9.3f} {r['effect']:+7.3f}  {ci:17s} {'PASS' if r['passed'] else 'FAIL ' + r['why']}")
        else:
            print(f"{(r['folder'] + ': ' + r['name'])[:70]:70s} {r['n']:2d} {'':9s} {'':9s} {'':7s}  {'':17s} "
                  f"FAIL {r['why']}")
    failed = [r for r in results if not r["passed"]]
    print(f"\n{len(results) - len(failed)}/{len(results)} claims hold")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.exit(main())
