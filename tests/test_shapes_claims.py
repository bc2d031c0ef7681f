"""Every published-shape claim is well formed without running it: its grid expands, it has >= 3
seeds, each claim's baseline and treatment select runs that pair up by seed (>= 3 pairs), and
the claims marked quick sit on small grids. Also simulations/table.py's cells and refusal to
pool a varying key. Cheap: grids are expanded (configs validated), nothing is trained."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "simulations"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SIM / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SIM))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(SIM))
    return mod


shapes = _load("check_shapes")
table = _load("table")

FOLDERS = sorted(p.parent for p in SIM.glob("*/shape.toml"))
QUICK_MAX_RUNS = 20  # a quick claim's grid: WDBC-sized runs only, a few minutes in all


def _nested(path: str, value: float) -> dict:
    out: dict = {}
    d = out
    parts = path.split("/")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
    return out


def _merge(into: dict, other: dict) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _expanded(folder: Path):
    from fedmedsec.results.sweep import expand, load_grid

    spec = tomllib.loads((folder / "shape.toml").read_text())
    grid = load_grid(folder / spec["grid"])
    return spec, grid, expand(grid)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_claims_are_well_formed_and_pair_up(folder):
    spec, grid, points = _expanded(folder)
    assert not [p.name for p in points if p.error], "grid points that do not validate"
    seeds = grid.axes.get("experiment.seed", [])
    assert len(seeds) >= 3, "a shape needs >= 3 seeds"
    runs = [(shapes._flat(tomllib.loads(p.cfg.to_toml())), p.values, None) for p in points]
    assert spec.get("claim"), "no claims"
    for c in spec["claim"]:
        assert {"name", "metric", "baseline", "treatment"} <= set(c), c.get("name")
        assert c.get("expect", "lower") in ("lower", "higher", "not_lower", "not_higher"), c["name"]
        summary = _nested(c["metric"], 0.0)
        if "baseline_metric" in c:  # a within-run contrast reads a second key
            _merge(summary, _nested(c["baseline_metric"], 0.0))
        fake = [(cfg, v, summary) for cfg, v, _ in runs]
        r = shapes.check_claim(c, fake)
        assert r["n"] >= 3, f"{c['name']!r}: {r['n']} seed pairs"
        assert r["n"] == len(seeds), f"{c['name']!r}: pairs {r['n']} != seeds {len(seeds)}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_quick_claims_sit_on_small_grids(folder):
    spec, grid, points = _expanded(folder)
    if any(c.get("quick") for c in spec["claim"]):
        assert len(points) <= QUICK_MAX_RUNS, f"{len(points)} runs behind a quick claim"
        assert all(p.cfg.data.name == "wdbc" for p in points), "quick claims run on WDBC only"


def _fake_sweep(tmp: Path, rows: list[tuple[dict, float]]) -> Path:
    points = []
    for i, (values, acc) in enumerate(rows):
        name = f"r{i}"
        (tmp / name).mkdir()
        cfg: dict = {}
        for k, v in values.items():
            sec, key = k.split(".")
            cfg.setdefault(sec, {})[key] = v
        import tomli_w

        (tmp / name / "config.toml").write_text(tomli_w.dumps(cfg))
        (tmp / name / "summary.json").write_text(json.dumps({"clean_accuracy": acc}))
        points.append({"run": name, "values": values})
    (tmp / "sweep.json").write_text(json.dumps({"points": points}))
    return tmp


def test_table_means_per_cell_with_a_t_interval(tmp_path):
    rows = [({"attack.name": a, "defense.name": "median", "experiment.seed": s}, acc)
            for a, accs in (("none", [0.8, 0.9, 0.7]), ("alie", [0.5, 0.5, 0.5])) for s, acc in enumerate(accs)]
    c = table.cells(_fake_sweep(tmp_path, rows), "attack.name", "defense.name", "clean_accuracy")
    assert c[("none", "median")] == pytest.approx([0.8, 0.9, 0.7])
    md = table.markdown(c, ["none", "alie"])
    # mean 0.8, sd 0.1, t(0.975, 2) = 4.303: half-width 0.248
    assert "| none | 0.800 ± 0.248 |" in md and "| alie | 0.500 ± 0.000 |" in md


def test_table_refuses_to_pool_a_varying_key(tmp_path):
    rows = [({"attack.name": "alie", "defense.name": "median", "attack.knowledge": k, "experiment.seed": 0}, 0.5)
            for k in ("full", "partial")]
    d = _fake_sweep(tmp_path, rows)
    with pytest.raises(ValueError, match="attack.knowledge"):
        table.cells(d, "attack.name", "defense.name", "clean_accuracy")
    c = table.cells(d, "attack.name", "defense.name", "clean_accuracy", {"attack.knowledge": ["partial"]})
    assert c == {("alie", "median"): [0.5]}


def test_table_delta_pairs_each_run_with_its_clean_run_of_the_same_seed(tmp_path):
    # the attacked runs carry attack.* keys the clean run does not (the sweep drops them)
    rows = [({"attack.name": "none", "defense.name": "krum", "experiment.seed": s}, acc)
            for s, acc in enumerate([0.6, 0.8, 0.7])]
    rows += [({"attack.name": "min_max", "attack.fraction": 0.2, "defense.name": "krum", "experiment.seed": s}, acc)
             for s, acc in enumerate([0.5, 0.6, 0.6])]
    rows += [({"attack.name": "min_max", "attack.fraction": 0.2, "defense.name": "median", "experiment.seed": 0}, 0.1)]
    d = _fake_sweep(tmp_path, rows)
    c = table.cells(d, "attack.name", "defense.name", "clean_accuracy", delta=("attack.name", "none"))
    assert c[("min_max", "krum")] == pytest.approx([-0.1, -0.2, -0.1])
    assert c[("none", "krum")] == pytest.approx([0.0, 0.0, 0.0])
    assert ("min_max", "median") not in c  # no clean median run to pair with
    md = table.markdown(c, ["min_max"], ["krum"], sign=True)
    # mean -0.133, sd 0.0577, t(0.975, 2) * sd / sqrt(3) = 0.143
    assert "| min_max | -0.133 ± 0.143 |" in md


def test_table_reads_every_run_directory_not_only_the_last_sweep_json(tmp_path):
    rows = [({"attack.name": "alie", "defense.name": "median", "experiment.seed": s}, 0.5 + s / 10) for s in range(3)]
    d = _fake_sweep(tmp_path, rows)
    # a later sweep of a subset grid into the same directory rewrites sweep.json
    (d / "sweep.json").write_text(json.dumps({"points": [{"run": "r0", "values": rows[0][0]}]}))
    assert table.cells(d, "attack.name", "defense.name", "clean_accuracy")[("alie", "median")] == \
        pytest.approx([0.5, 0.6, 0.7])


def test_table_rows_by_two_keys_label_a_clean_run_by_the_keys_it_has(tmp_path):
    rows = [({"attack.name": "none", "defense.name": "median", "experiment.seed": 0}, 0.8)]
    rows += [({"attack.name": "alie", "attack.knowledge": k, "defense.name": "median", "experiment.seed": 0}, acc)
             for k, acc in (("full", 0.5), ("partial", 0.7))]
    c = table.cells(_fake_sweep(tmp_path, rows), "attack.name,attack.knowledge", "defense.name", "clean_accuracy")
    assert c == {("none", "median"): [0.8], ("alie / full", "median"): [0.5], ("alie / partial", "median"): [0.7]}
