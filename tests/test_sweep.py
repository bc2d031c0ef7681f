"""`fedmedsec sweep`: grid expansion, impossible points, the results table, resume. The
mechanics tests use simulation.backend = "inprocess" (same round loop and run directory, no
Ray) so they take seconds."""

from __future__ import annotations

import io
import json
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from fedmedsec.cli import main
from fedmedsec.config import ConfigError
from fedmedsec.results.report import build_report
from fedmedsec.results.sweep import expand, flatten_summary, load_grid, point_name, run_sweep

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.toml"

EXAMPLE = """
base = "{base}"
[grid]
"attack.name" = ["none", "sign_flip"]
"defense.name" = ["fedavg", "median"]
"experiment.seed" = [0, 1]
[fixed]
"attack.fraction" = 0.3
"experiment.rounds" = {rounds}
{extra}
"""


def write_grid(tmp: Path, *, rounds=2, extra='"simulation.backend" = "inprocess"\n"experiment.mia" = false', text=None) -> Path:
    g = tmp / "grid.toml"
    g.write_text(text or EXAMPLE.format(base=QUICKSTART, rounds=rounds, extra=extra))
    return g


def sweep(grid: Path, out: Path, **kw):
    buf = io.StringIO()
    points = run_sweep(grid, out, console=Console(file=buf, width=200), **kw)
    return points, buf.getvalue()


def test_example_grid_expands_to_eight_named_points(tmp_path):
    pts = expand(load_grid(write_grid(tmp_path)))
    assert len(pts) == 8
    names = [p.name for p in pts]
    assert len(set(names)) == 8
    assert "attack=sign_flip__defense=median__seed=1" in names
    # attack.fraction is meaningless without an attack: dropped for those points, kept otherwise
    none = [p for p in pts if p.values["attack.name"] == "none"]
    assert all(p.dropped == ["attack.fraction"] and p.cfg.attack.fraction == 0.0 for p in none)
    flip = [p for p in pts if p.values["attack.name"] == "sign_flip"]
    assert all(p.cfg.attack.fraction == 0.3 and not p.dropped for p in flip)


def test_impossible_points_collapse_instead_of_failing(tmp_path):
    # fraction varies, but for attack "none" every fraction is the same run: 1 + 3 points, not 6
    g = write_grid(tmp_path, text=f"""
base = "{QUICKSTART}"
[grid]
"attack.name" = ["none", "sign_flip"]
"attack.fraction" = [0.1, 0.2, 0.3]
""")
    pts = expand(load_grid(g))
    assert len(pts) == 4
    assert pts[0].name == "attack=none" and pts[0].values["attack.fraction"] is None
    assert {p.name for p in pts[1:]} == {f"attack=sign_flip__attack.fraction={f}" for f in (0.1, 0.2, 0.3)}


def test_privacy_keys_of_every_mode_are_kept_when_dp_is_off(tmp_path):
    # secure aggregation and pruning apply with privacy.mode = "none" too; the noise keys do not
    g = write_grid(tmp_path, text=f"""
base = "{QUICKSTART}"
[grid]
"privacy.mode" = ["none", "central"]
"privacy.prune_ratio" = [0.0, 0.5]
"privacy.noise_multiplier" = [0.5, 1.0]
""")
    pts = expand(load_grid(g))
    off = [p for p in pts if p.cfg.privacy.mode == "none"]
    assert sorted(p.cfg.privacy.prune_ratio for p in off) == [0.0, 0.5]
    assert all(p.dropped == ["privacy.noise_multiplier"] for p in off)
    assert len(pts) == 2 + 4


def test_component_keys_are_dropped_where_the_component_does_not_take_them(tmp_path):
    g = write_grid(tmp_path, text=f"""
base = "{QUICKSTART}"
[grid]
"attack.name" = ["alie", "sign_flip"]
[fixed]
"attack.fraction" = 0.2
"attack.z" = 1.5
""")
    alie, flip = expand(load_grid(g))
    assert alie.cfg is not None and alie.cfg.params("attack").z == 1.5 and not alie.dropped
    assert flip.cfg is not None and flip.dropped == ["attack.z"]


def test_invalid_point_is_recorded_as_failed_and_the_sweep_continues(tmp_path):
    g = write_grid(tmp_path, text=f"""
base = "{QUICKSTART}"
[grid]
"data.num_hospitals" = [4, 0]
[fixed]
"simulation.backend" = "inprocess"
"experiment.rounds" = 1
""")
    pts, log = sweep(g, tmp_path / "out")
    ok, bad = pts
    assert ok.status == "done" and bad.status == "failed"
    assert bad.error.startswith("data.num_hospitals = 0") and "\n" not in bad.error
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table["status"]) == ["done", "failed"]
    assert table.loc[1, "error"] == bad.error
    assert pd.isna(table.loc[1, "clean_accuracy"]) and table.loc[0, "clean_accuracy"] > 0.5


def test_grid_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    for text, msg in [('base = "nope.toml"\n', "does not exist"),
                      (f'base = "{QUICKSTART}"\n[grid]\n"attack.name" = "none"\n', "non-empty list"),
                      (f'base = "{QUICKSTART}"\nbogus = 1\n', "unknown key 'bogus'"),
                      (f'base = "{QUICKSTART}"\n[grid]\nattack.name = ["none"]\n', "dotted keys in quotes")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_grid(bad)
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_base_is_relative_to_the_grid_file(tmp_path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    (tmp_path / "a" / "base.toml").write_text(QUICKSTART.read_text())
    (sub / "g.toml").write_text('base = "../base.toml"\n[grid]\n"experiment.seed" = [3]\n')
    assert load_grid(sub / "g.toml").base == (tmp_path / "a" / "base.toml").resolve()


def test_names_are_stable_and_readable():
    keys = ["attack.name", "attack.fraction", "experiment.seed", "privacy.mode", "defense.pre"]
    name = point_name({"attack.name": "min_max", "attack.fraction": 0.2, "experiment.seed": 0,
                       "privacy.mode": "none", "defense.pre": ["bucketing", "nnm"]}, keys)
    assert name == "attack=min_max__attack.fraction=0.2__seed=0__privacy=none__defense.pre=bucketing+nnm"
    assert len(point_name({"x.y": "z" * 400}, ["x.y"])) <= 150


def test_flatten_summary():
    row = flatten_summary({"clean_accuracy": 0.9, "detection": {"tpr": 1.0, "fpr": 0.0},
                           "membership_inference": {"auc": 0.6}, "threat_model": None,
                           "malicious_hospitals": [1, 2], "versions": {"x": 1}})
    assert row == {"clean_accuracy": 0.9, "detection_tpr": 1.0, "detection_fpr": 0.0, "mia_auc": 0.6,
                   "malicious_hospitals": "[1, 2]", "malicious_count": 2}


def test_example_grid_table_resume_and_report(tmp_path):
    grid, out = write_grid(tmp_path), tmp_path / "sweep"
    pts, log = sweep(grid, out)
    assert [p.status for p in pts] == ["done"] * 8
    # not a terminal: one plain line per finished run with elapsed time and ETA, no squashed bar
    done = [ln for ln in log.splitlines() if "] done " in ln]
    assert len(done) == 8 and done[0].startswith("  [1/8] done ") and re.search(r"ETA \d+:\d\d:\d\d$", done[-1])
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 8 and len(pd.read_parquet(out / "results.parquet")) == 8
    for col in ("attack.name", "defense.name", "experiment.seed", "clean_accuracy",
                "worst_honest_hospital_accuracy", "cost_seconds_per_round"):
        assert col in table, col
    assert sorted(table["experiment.seed"]) == [0, 0, 0, 0, 1, 1, 1, 1]

    # second invocation: everything skipped, nothing rewritten
    stamp = {p.name: (out / p.name / "summary.json").stat().st_mtime_ns for p in pts}
    pts2, log2 = sweep(grid, out)
    assert [p.status for p in pts2] == ["skipped"] * 8
    assert "8 already complete (skipped)" in log2 and "0 to run" in log2
    assert all((out / p.name / "summary.json").stat().st_mtime_ns == stamp[p.name] for p in pts)

    # a sweep killed mid-run: the run in flight has no summary.json and is the only one redone
    lost = out / pts[5].name / "summary.json"
    lost.unlink()
    pts3, log3 = sweep(grid, out)
    assert sum(p.status == "done" for p in pts3) == 1 and pts3[5].status == "done"
    assert "7 already complete" in log3

    # a run made before an option existed (its config.toml lacks the new keys) is still
    # complete when the option is at its default
    import tomli_w
    cfg_path = out / pts[0].name / "config.toml"
    stored = tomllib.loads(cfg_path.read_text())
    stored.pop("reconstruction", None)
    stored["privacy"].pop("prune_ratio", None)
    stored.setdefault("simulation", {})["num_cpus_per_client"] = 1.0  # older versions wrote it in-process
    cfg_path.write_text(tomli_w.dumps(stored))
    pts4, _ = sweep(grid, out)
    assert [p.status for p in pts4] == ["skipped"] * 8

    # same --out with a changed configuration is refused, not silently mixed
    grid.write_text(grid.read_text().replace('"experiment.rounds" = 2', '"experiment.rounds" = 3'))
    with pytest.raises(ConfigError, match="different configuration"):
        sweep(grid, out)

    html, images, _ = build_report(out)
    assert images >= 3 and html.read_text().count("data:image/png;base64,") == images


def test_set_applies_to_every_point_is_recorded_and_tables_are_tidy(tmp_path):
    g = write_grid(tmp_path, text=f"""
base = "{QUICKSTART}"
[grid]
"defense.name" = ["fedavg", "median"]
[fixed]
"simulation.backend" = "inprocess"
"experiment.rounds" = 3
"data.num_hospitals" = 4
""")
    out = tmp_path / "out"
    pts, _ = sweep(g, out, overrides=["experiment.rounds=1", "experiment.mia=false"])
    assert [p.status for p in pts] == ["done", "done"]
    assert all(p.cfg.experiment.rounds == 1 and p.cfg.experiment.mia is False for p in pts)  # -s wins over [fixed]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["overrides"] == {"experiment.rounds": 1, "experiment.mia": False}
    assert meta["fixed"]["experiment.rounds"] == 3  # the grid file's own, as written
    res = pd.read_parquet(out / "results.parquet")
    # one column per resolved key, fixed and -s keys included, no summary repeats
    assert {"experiment.rounds", "experiment.mia", "simulation.backend", "data.num_hospitals", "train.lr"} <= set(res)
    assert not {"attack", "defense", "seed", "privacy_mode", "rounds", "dataset", "dropped"} & set(res)
    assert not any(c.startswith("per_hospital") for c in res)
    # fixed dtypes: counts are integers, flags booleans, an all-null metric is float, text is text
    assert str(res["experiment.rounds"].dtype) == "Int64" and str(res["experiment.mia"].dtype) == "boolean"
    assert res["epsilon"].dtype == "float64" and res["epsilon"].isna().all()
    assert res["attack_success_rate"].dtype == "float64" and res["mia_auc"].dtype == "float64"
    assert pd.api.types.is_string_dtype(res["warnings"]) and str(res["warning_count"].dtype) == "Int64"
    rounds = pd.read_parquet(out / "rounds.parquet")
    assert list(rounds["run"]) == [p.name for p in pts] and "defense.name" in rounds
    assert "dropped_replies" in rounds and "dropped" not in rounds
    hosp = pd.read_parquet(out / "hospitals.parquet")
    assert len(hosp) == 2 * 4 and str(hosp["partition_id"].dtype) == "Int64"
    assert hosp.groupby("defense.name").accuracy.count().to_dict() == {"fedavg": 4, "median": 4}
    clients = pd.read_parquet(out / "clients.parquet")
    assert str(clients["accepted"].dtype) == "boolean" and str(clients["malicious"].dtype) == "boolean"
    # a -s that names a grid axis is refused
    with pytest.raises(ConfigError, match="is a \\[grid\\] axis"):
        sweep(g, tmp_path / "o2", overrides=["defense.name=krum"])


def test_long_frame_mixes_runs_from_before_and_after_a_column_rename():
    """rounds.csv of older runs says "dropped", newer ones "dropped_replies": one column, no
    duplicate (a duplicate made the whole table write fail once a sweep mixed the two)."""
    from fedmedsec.results import tidy

    old = pd.DataFrame({"round": [1, 2], "dropped": [0, 1]}).assign(run="a")
    new = pd.DataFrame({"round": [1], "dropped_replies": [2]}).assign(run="b")
    res = pd.DataFrame({"run": ["a", "b"], "attack.name": ["none", "alie"]})
    df = tidy.long_frame([old, new], res, ["attack.name"])
    assert list(df.columns).count("dropped_replies") == 1 and "dropped" not in df
    assert df.sort_values(["run", "round"])["dropped_replies"].tolist() == [0, 1, 2]
    assert df["attack.name"].tolist() == ["none", "none", "alie"]
