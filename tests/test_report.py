"""`fedmedsec report`: figures and HTML from fake run directories (fast) and from one real
in-process sweep with several varying keys; no plotted statistic may pool runs whose
configurations differ (checked on plots/series.json), every axis is labelled, chance is in
range, intervals are t-intervals over seeds. Partial directories must not crash it."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from fedmedsec.config import ConfigError
from fedmedsec.results import plots
from fedmedsec.results.report import (
    Conditions,
    build_report,
    build_tables,
    fmt_value,
    load_dir,
    report_cli,
    threat_tables,
)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.toml"

THREATS = {
    "sign_flip": {"goal": "availability", "adversary": "malicious hospitals", "knowledge": "own update", "targeted": False},
    "backdoor": {"goal": "integrity", "adversary": "malicious hospitals", "knowledge": "own data", "targeted": True},
}


@pytest.fixture(autouse=True)
def fast_figures(request, monkeypatch):
    """PNG at 72 dpi only, except in tests that ask for the real formats (``full_figures``):
    PDF font subsetting and 300 dpi rendering are most of a report's time."""
    if "full_figures" not in request.fixturenames:
        monkeypatch.setattr(plots, "DPI", 72)
        monkeypatch.setattr(plots, "FORMATS", ("png",))


@pytest.fixture
def full_figures():
    return True


def fake_run(path: Path, *, attack="none", defense="fedavg", seed=0, acc=0.9, asr=None, asr_clean=None, epsilon=None,
             mia=None, rounds=4, n=5, detection=None, warnings=(), privacy=None, extra_config="") -> Path:
    """A run directory as the engine writes it (summary.json, rounds.csv, clients.csv, config.toml)."""
    path.mkdir(parents=True, exist_ok=True)
    mal = [0] if attack != "none" else []
    per = {str(h): round(acc - 0.05 * h, 3) for h in range(n)}
    mode = privacy or ("dp_sgd" if epsilon else "none")
    summary = {
        "experiment": "fake", "clean_accuracy": acc, "per_hospital_accuracy": per,
        "worst_hospital_accuracy": min(per.values()),
        "honest_hospital_accuracy": {h: a for h, a in per.items() if int(h) not in mal},
        "worst_honest_hospital_accuracy": min(a for h, a in per.items() if int(h) not in mal),
        "hospital_names": {str(h): f"site-{h}" for h in range(n)},
        "attack_success_rate": asr, "epsilon": epsilon, "delta": 1e-5 if epsilon else None,
        "detection": detection, "wall_seconds": 1.0, "rounds": rounds, "seed": seed, "attack": attack,
        "defense": defense, "privacy_mode": mode, "malicious_hospitals": mal,
        "threat_model": THREATS.get(attack), "membership_inference": {"auc": mia, "tpr_at_1pct_fpr": 0.01} if mia else None,
        "cost": {"seconds_per_round": 0.1}, "versions": {"python": "3.11"}, "dataset": "wdbc", "num_hospitals": n,
        "clinical": {"balanced_accuracy": acc - 0.02, "auroc": 0.95, "sensitivity": 0.9, "specificity": 0.8,
                     "positive_class": "malignant",
                     "per_class": {"malignant": {"support": 40}, "benign": {"support": 60}}},
        "warnings": list(warnings),
    }
    if asr_clean is not None:
        summary["attack_success_rate_clean"] = asr_clean
        summary["attack_success_lift"] = asr - asr_clean
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.toml").write_text(
        f'[experiment]\nseed = {seed}\nrounds = {rounds}\n[attack]\nname = "{attack}"\n[defense]\nname = "{defense}"\n'
        f'[privacy]\nmode = "{mode}"\n{extra_config}')
    with open(path / "rounds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "clean_accuracy", "worst_hospital_accuracy", "attack_success_rate",
                    "attack_success_rate_clean", "replies", "accepted", "dropped"])
        for r in range(1, rounds + 1):
            w.writerow([r, acc * r / rounds, (acc - 0.2) * r / rounds, "" if asr is None else asr,
                        "" if asr_clean is None else asr_clean, n, n, 0])
    with open(path / "clients.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "partition_id", "malicious", "attacking", "status", "accepted", "update_norm"])
        for r in range(1, rounds + 1):
            for h in range(n):
                w.writerow([r, h, int(h in mal), int(h in mal), "ok", int(not (h in mal and defense != "fedavg")),
                            10.0 if h in mal else 1.0 + 0.1 * h])
    return path


def fake_sweep(root: Path) -> Path:
    axes = {"attack.name": ["none", "sign_flip", "backdoor"], "defense.name": ["fedavg", "median"],
            "experiment.seed": [0, 1]}
    points = []
    rng = np.random.default_rng(0)
    for a in axes["attack.name"]:
        for d in axes["defense.name"]:
            for s in axes["experiment.seed"]:
                name = f"attack={a}__defense={d}__seed={s}"
                acc = {"none": 0.93, "sign_flip": 0.55 if d == "fedavg" else 0.9, "backdoor": 0.91}[a] + rng.normal(0, 0.01)
                asr = (0.8 if d == "fedavg" else 0.3) if a == "backdoor" else None
                det = {"tpr": 0.9, "fpr": 0.1} if (a != "none" and d == "median") else None
                fake_run(root / name, attack=a, defense=d, seed=s, acc=float(acc), asr=asr, detection=det, mia=0.55,
                         asr_clean=0.05 if a == "backdoor" and s == 0 else None)
                points.append({"run": name, "values": {"attack.name": a, "defense.name": d, "experiment.seed": s}})
    (root / "sweep.json").write_text(json.dumps({"axes": axes, "fixed": {}, "points": points}))
    return root


def _images(html: str) -> int:
    return len(re.findall(r"<img [^>]*src='data:image/png;base64,", html))


def series(root: Path) -> dict:
    return json.loads((root / "plots" / "series.json").read_text())


def assert_no_pooling(root: Path, varying: list[str]) -> int:
    """Every plotted statistic aggregates runs that agree on every varying key; returns the
    number of statistics checked."""
    t = pd.read_parquet(root / "results.parquet") if (root / "results.parquet").is_file() else None
    _, runs, meta = load_dir(root)
    keys = {r.name: r.keys() for r in runs if r.summary}
    checked = 0
    for name, fig in series(root).items():
        for p in fig["points"]:
            runs_here = [r for r in p["runs"] if r in keys]
            if len(runs_here) < 2:
                continue
            for k in varying:
                vals = {json.dumps(keys[r].get(k), default=str) for r in runs_here}
                assert len(vals) == 1, f"{name}: {p['series']!r} at {p['x']!r} pools {k} = {vals}"
            assert p["n"] == len(set(p["runs"])) or name == "hospital_accuracy", (name, p)
            checked += 1
    assert t is None or len(t) >= 1
    return checked


def assert_labelled(root: Path) -> None:
    for name, fig in series(root).items():
        for ax in fig["axes"]:
            if ax["colorbar"]:
                assert ax["ylabel"] or ax["xlabel"], f"{name}: colorbar without a label"
            else:
                assert ax["xlabel"] and ax["ylabel"], f"{name}: axis without a label ({ax['title']!r})"


# --------------------------------------------------------------------------- fakes


def test_sweep_report_embeds_plots_tables_configs(tmp_path, full_figures):
    root = fake_sweep(tmp_path / "sweep")
    out, images, notes = build_report(root)
    html = out.read_text()
    assert _images(html) == images >= 3
    for stem in ("accuracy_by_round", "heatmap_clean_accuracy", "heatmap_attack_success", "asr_by_defense",
                 "threat_matrix", "hospital_accuracy", "detection", "seed_spread"):
        for ext in ("png", "pdf"):
            assert (root / "plots" / f"{stem}.{ext}").is_file(), (stem, ext)
        with Image.open(root / "plots" / f"{stem}.png") as im:  # 300 dpi
            assert round(im.info["dpi"][0]) == 300
    assert "src='http" not in html and "src=\"http" not in html  # self-contained
    assert "Not in this sweep, so left out: privacy-utility" in html  # said, not drawn empty
    assert html.count("<details>") == 12 + 1  # every resolved config, and the every-run table
    assert "have fewer than 3 runs" in html  # two seeds per configuration: said prominently
    assert_labelled(root)
    assert assert_no_pooling(root, ["attack.name", "defense.name"]) > 10


def test_threat_matrix_measures_drop_against_same_defense_baseline(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    _, runs, meta = load_dir(root)
    t = build_tables(runs, list(meta["axes"]))
    assert t.cond.label == ["attack.name", "defense.name"] and t.cond.n_configs == 6
    impact, kinds, declared = threat_tables(t.view, t.cond.label)
    # untargeted: accuracy drop vs attack=none of the same defense (about 0.93 - 0.55 for fedavg)
    assert kinds.at["sign_flip", "fedavg"] == "drop"
    assert impact.at["sign_flip", "fedavg"] == pytest.approx(0.38, abs=0.05)
    assert impact.at["sign_flip", "median"] == pytest.approx(0.03, abs=0.05)
    # targeted, with a clean twin (seed 0 only): the lift over the twin, on the runs that have one
    assert kinds.at["backdoor", "median"] == "lift" and impact.at["backdoor", "median"] == pytest.approx(0.3 - 0.05)
    assert impact.attrs["text"].at["backdoor", "median"] == "lift +0.25 (ASR 0.30, twin 0.05)"
    assert declared.at["backdoor", "knowledge"] == "own data"
    assert "none" not in impact.index


def test_asr_bar_chart_shows_the_clean_twin_and_tolerates_runs_without_it(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    _, runs, meta = load_dir(root)
    t = build_tables(runs, list(meta["axes"]))
    fig = plots.asr_by_defense(t.view, t.cond.label, tmp_path / "asr")
    twin = [p for p in fig.points if p["series"] == "clean twin"]
    attack = [p for p in fig.points if p["series"] == "attack"]
    assert {p["x"] for p in attack} == {"fedavg", "median"} and all(p["n"] == 2 for p in attack)
    assert {p["x"] for p in twin} == {"fedavg", "median"} and all(p["n"] == 1 for p in twin)  # only seed 0 has one
    assert "clean twin" in fig.caption and all(a["ylabel"] == "attack success rate" for a in fig.axes)
    old = tmp_path / "old"  # no attack_success_rate_clean at all (runs from before the clean twin)
    for d in ("fedavg", "median"):
        fake_run(old / f"b-{d}", attack="backdoor", defense=d, asr=0.5)
    (old / "sweep.json").write_text(json.dumps({"axes": {"defense.name": ["fedavg", "median"]}, "points": [
        {"run": f"b-{d}", "values": {"defense.name": d}} for d in ("fedavg", "median")]}))
    _, runs, meta = load_dir(old)
    t = build_tables(runs, list(meta["axes"]))
    fig = plots.asr_by_defense(t.view, t.cond.label, tmp_path / "asr_old")
    assert "no clean twin was recorded" in fig.caption and {p["series"] for p in fig.points} == {"attack"}


def test_privacy_curve_one_line_per_defense_no_dp_reference_each_and_readable_ticks(tmp_path):
    root = tmp_path / "dp"
    pts = []
    for d, shift in (("fedavg", 0.0), ("median", -0.05)):
        for s in (0, 1, 2):
            for eps, acc, auc in [(1.0, 0.7, 0.49), (3.0, 0.82, 0.5), (8.0, 0.9, 0.52)]:
                name = f"dp-{d}-{eps}-{s}"
                fake_run(root / name, defense=d, seed=s, epsilon=eps * (1 + 0.01 * s), acc=acc + shift + 0.01 * s,
                         mia=auc, extra_config=f"target_epsilon = {eps}\n")
                pts.append({"run": name, "values": {"privacy.mode": "dp_sgd", "privacy.target_epsilon": eps,
                                                    "defense.name": d, "experiment.seed": s}})
            name = f"nodp-{d}-{s}"
            fake_run(root / name, defense=d, seed=s, acc=0.93 + shift, mia=0.6)
            pts.append({"run": name, "values": {"privacy.mode": "none", "privacy.target_epsilon": None,
                                                "defense.name": d, "experiment.seed": s}})
    axes = {"privacy.mode": ["none", "dp_sgd"], "privacy.target_epsilon": [1.0, 3.0, 8.0],
            "defense.name": ["fedavg", "median"], "experiment.seed": [0, 1, 2]}
    (root / "sweep.json").write_text(json.dumps({"axes": axes, "points": pts}))
    out, images, _ = build_report(root)
    html = out.read_text()
    fig = series(root)["privacy_utility"]
    acc_pts = [p for p in fig["points"] if p["panel"] == "clean accuracy"]
    lines = {p["series"] for p in acc_pts}
    assert lines == {"defense=fedavg", "defense=median", "defense=fedavg: no DP", "defense=median: no DP"}
    for d in ("fedavg", "median"):
        ref = [p for p in acc_pts if p["series"] == f"defense={d}: no DP"]
        assert len(ref) == 1 and ref[0]["n"] == 3 and all(f"-{d}-" in r for r in ref[0]["runs"])
        per_eps = sorted((p["x"], p["n"]) for p in acc_pts if p["series"] == f"defense={d}")
        assert [round(x) for x, _ in per_eps] == [1, 3, 8] and all(n == 3 for _, n in per_eps)
    ax_acc, ax_mia = [a for a in fig["axes"] if not a["colorbar"]]
    assert ax_acc["xscale"] == "log" and ax_acc["xticklabels"] == ["1", "3", "8"]  # 8 is a tick, labelled
    assert ax_mia["ylim"][0] < 0.5 < ax_mia["ylim"][1] and ax_mia["ylim"][1] - ax_mia["ylim"][0] >= 0.3
    assert ax_acc["ylim"][0] <= 0.6 <= ax_acc["ylim"][1]  # the majority-class rate (60 of 100) is in range
    assert "Membership inference on the final model" in html
    assert "have fewer than 3 runs" not in html  # three seeds everywhere: no warning
    assert_labelled(root)
    assert_no_pooling(root, ["privacy.mode", "privacy.target_epsilon", "defense.name"])
    # the accuracy-by-round lines: one per (privacy, epsilon, defense), n = 3 each
    br = series(root)["accuracy_by_round"]
    assert len({(p["panel"], p["series"]) for p in br["points"]}) == 8
    assert {p["n"] for p in br["points"]} == {3}


def test_t_interval_matches_scipy_and_needs_two_runs():
    rng = np.random.default_rng(1)
    for n in (2, 3, 7):
        x = rng.normal(0.8, 0.05, n)
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        got = plots.t_interval(x)
        assert got[0] == n and got[1] == pytest.approx(x.mean())
        assert got[2] == pytest.approx(lo) and got[3] == pytest.approx(hi)
    n, m, lo, hi = plots.t_interval([0.7])
    assert (n, m) == (1, 0.7) and math.isnan(lo) and math.isnan(hi)
    assert plots.t_interval([np.nan, None, 0.5, 0.7])[0] == 2


def test_conditions_label_keys_are_the_fewest_that_tell_configurations_apart():
    df = pd.DataFrame({
        "run": list("abcdef"),
        "attack.name": ["none", "none", "backdoor", "backdoor", "backdoor", "backdoor"],
        "attack.fraction": [None, None, 0.2, 0.2, 0.2, 0.2],  # follows attack.name
        "defense.name": ["fedavg", "median"] * 3,
        "experiment.seed": [0, 0, 0, 0, 1, 1],
        "experiment.rounds": [5] * 6,
    })
    c = Conditions.of(df, ["attack.name", "defense.name", "experiment.seed"])
    assert c.group == ["attack.name", "attack.fraction", "defense.name"]
    assert c.label == ["attack.name", "defense.name"] and c.n_configs == 4
    # a key off the grid that still differs is kept apart, not pooled
    df2 = df.assign(**{"train.lr": [0.1, 0.1, 0.1, 0.1, 0.01, 0.01]})
    c2 = Conditions.of(df2, ["attack.name", "defense.name"])
    assert c2.label == ["attack.name", "defense.name", "train.lr"] and c2.n_configs == 6
    assert fmt_value(0.003) == "0.003" and fmt_value(8.0) == "8" and fmt_value(None) == "–" and fmt_value(True) == "true"


def test_single_run_report_shows_warnings_clinical_and_integers(tmp_path):
    run = fake_run(tmp_path / "run", attack="sign_flip", defense="median", acc=0.88, detection={"tpr": 1.0, "fpr": 0.0},
                   warnings=["defense.f = 0 but 1 hospital is malicious: the rule assumes fewer attackers"])
    assert report_cli(type("A", (), {"dir": str(run)})()) == 0
    html = (run / "report.html").read_text()
    assert _images(html) >= 3
    assert "availability" in html and "own update" in html  # the declared threat model
    warn = html.index("class='warn'")
    assert warn < html.index("<img") and "the rule assumes fewer attackers" in html[warn:warn + 600]
    assert "balanced accuracy" in html and "AUROC" in html and "malignant" in html
    rounds_table = html[html.index("id='rounds'"):]
    assert "<td class=''>5</td>" in rounds_table and "5.0<" not in rounds_table  # replies as integers
    assert "dropped replies" in rounds_table  # one meaning, said
    assert_labelled(run)


def test_partial_directories_do_not_crash(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    # a run killed mid-way: config and a truncated rounds.csv, no summary
    killed = root / "attack=none__defense=krum__seed=0"
    killed.mkdir()
    (killed / "config.toml").write_text('[defense]\nname = "krum"\n')
    (killed / "rounds.csv").write_text("round,clean_acc")
    # unreadable summary, missing csvs
    broken = fake_run(root / "broken", defense="krum")
    (broken / "summary.json").write_text("{not json")
    (broken / "clients.csv").unlink()
    out, images, notes = build_report(root)
    html = out.read_text()
    assert images >= 3 and "incomplete" in html
    # a run directory with nothing but a config
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.toml").write_text("[experiment]\nseed = 1\n")
    out, images, notes = build_report(lone)
    assert out.is_file() and images == 0 and any("rounds.csv" in n for n in notes)
    # a directory with runs lacking everything (summary only, empty)
    only = tmp_path / "only"
    (only / "r1").mkdir(parents=True)
    (only / "r1" / "summary.json").write_text("{}")
    out, _, _ = build_report(only)
    assert out.is_file()


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no run directory"):
        build_report(tmp_path / "empty")


def test_defense_parameters_on_the_grid_become_separate_columns(tmp_path):
    root = tmp_path / "nb"
    pts = []
    for a in ("none", "backdoor"):
        for d, sigma in (("fedavg", None), ("norm_bounding", 0.0), ("norm_bounding", 0.003)):
            name = f"{a}-{d}-{sigma}"
            asr = None if a == "none" else {None: 0.9, 0.0: 0.4, 0.003: 0.2}[sigma]
            fake_run(root / name, attack=a, defense=d, acc=0.9 if sigma is None else 0.88, asr=asr)
            pts.append({"run": name, "values": {"attack.name": a, "defense.name": d, "defense.noise_sigma": sigma}})
    axes = {"attack.name": ["none", "backdoor"], "defense.name": ["fedavg", "norm_bounding"],
            "defense.noise_sigma": [0.0, 0.003]}
    (root / "sweep.json").write_text(json.dumps({"axes": axes, "points": pts}))
    _, runs, meta = load_dir(root)
    t = build_tables(runs, list(axes))
    impact, kinds, _ = threat_tables(t.view, t.cond.label)
    assert list(impact.columns) == ["fedavg", "norm_bounding (noise_sigma=0)", "norm_bounding (noise_sigma=0.003)"]
    assert impact.loc["backdoor"].tolist() == pytest.approx([0.9, 0.4, 0.2])
    assert set(kinds.loc["backdoor"]) == {"ASR"}  # no clean twin in these runs: the ASR itself
    _, images, _ = build_report(root)
    assert images >= 3
    assert_no_pooling(root, ["attack.name", "defense.name", "defense.noise_sigma"])


# --------------------------------------------------------------------------- a real sweep

GRID = """
base = "{base}"
[grid]
"privacy.mode" = ["none", "dp_sgd"]
"privacy.noise_multiplier" = [0.7, 2.0]
"defense.name" = ["fedavg", "median"]
"experiment.seed" = [0, 1]
[fixed]
"experiment.rounds" = 2
"data.num_hospitals" = 4
"simulation.backend" = "inprocess"
"""


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    import io

    from rich.console import Console

    from fedmedsec.results.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("real")
    grid = tmp / "grid.toml"
    grid.write_text(GRID.format(base=QUICKSTART))
    out = tmp / "sweep"
    points = run_sweep(grid, out, console=Console(file=io.StringIO(), width=200))
    assert [p.status for p in points].count("done") == 12  # none collapses over sigma: 2*2 + 2*2*2
    build_report(out)
    return out


def test_real_sweep_never_pools_what_differs(real_sweep):
    out = real_sweep
    varying = ["privacy.mode", "privacy.noise_multiplier", "defense.name"]
    assert assert_no_pooling(out, varying) > 20
    figs = series(out)
    br = figs["accuracy_by_round"]
    assert len({(p["panel"], p["series"]) for p in br["points"]}) == 6  # (none | sigma 0.7 | sigma 2) x 2 defenses
    assert {p["n"] for p in br["points"]} == {2}
    html = (out / "report.html").read_text()
    assert "have fewer than 3 runs" in html  # two seeds: the warning is there
    pu = figs["privacy_utility"]
    assert {p["series"] for p in pu["points"]} == {"defense=fedavg", "defense=median",
                                                  "defense=fedavg: no DP", "defense=median: no DP"}
    # x = the epsilon the runs reached: larger noise, smaller epsilon, one point per sigma
    acc = [p for p in pu["points"] if p["panel"] == "clean accuracy" and p["series"] == "defense=fedavg"]
    assert len(acc) == 2 and all(p["n"] == 2 for p in acc)
    assert_labelled(out)


def test_real_sweep_tidy_tables(real_sweep):
    out = real_sweep
    res = pd.read_parquet(out / "results.parquet")
    assert len(res) == 12 and res["run"].is_unique
    # one column per resolved key, fixed keys included; no summary duplicates of config keys
    for col in ("privacy.mode", "defense.name", "experiment.seed", "experiment.rounds", "data.num_hospitals",
                "simulation.backend", "model.hidden", "train.lr"):
        assert col in res, col
    for dup in ("attack", "defense", "seed", "privacy_mode", "rounds", "dataset", "num_hospitals",
                "per_hospital_accuracy_0", "dropped"):
        assert dup not in res, dup
    assert str(res["experiment.seed"].dtype) == "Int64" and str(res["experiment.mia"].dtype) == "boolean"
    assert res["epsilon"].dtype == "float64" and res.loc[res["privacy.mode"] == "none", "epsilon"].isna().all()
    assert str(res["dropped_keys"].dtype).startswith("str") or str(res["dropped_keys"].dtype) == "string"
    assert set(res.loc[res["privacy.mode"] == "none", "dropped_keys"]) == {"privacy.noise_multiplier"}
    rounds = pd.read_parquet(out / "rounds.parquet")
    assert len(rounds) == 12 * 2 and {"run", "round", "privacy.mode", "defense.name", "dropped_replies"} <= set(rounds)
    assert str(rounds["round"].dtype) == "Int64" and str(rounds["dropped_replies"].dtype) == "Int64"
    hosp = pd.read_parquet(out / "hospitals.parquet")
    assert len(hosp) == 12 * 4 and str(hosp["malicious"].dtype) == "boolean"
    assert {"run", "partition_id", "hospital", "accuracy", "balanced_accuracy", "mia_auc"} <= set(hosp)
    # a pandas one-liner across the sweep, no join needed
    m = rounds.groupby(["privacy.mode", "privacy.noise_multiplier", "defense.name", "round"], dropna=False).clean_accuracy.mean()
    assert len(m) == 6 * 2
    # the CSV and the parquet hold the same table
    csv_t = pd.read_csv(out / "results.csv")
    assert list(csv_t.columns) == list(res.columns)


def test_sweep_warnings_come_first_grouped_by_kind(tmp_path):
    root = tmp_path / "w"
    pts = []
    for s, acc in ((0, 0.41), (1, 0.52), (2, 0.93)):
        warn = [f"the final model is no better than always answering the majority class (accuracy {acc:.2f})"] \
            if acc < 0.6 else []
        fake_run(root / f"s{s}", seed=s, acc=acc, warnings=warn + ["attack.name = 'none': nothing to measure"])
        pts.append({"run": f"s{s}", "values": {"experiment.seed": s}})
    (root / "sweep.json").write_text(json.dumps({"axes": {"experiment.seed": [0, 1, 2]}, "points": pts}))
    out, _, notes = build_report(root)
    html = out.read_text()
    box = html[html.index("class='warn'"):html.index("</div>", html.index("class='warn'"))]
    assert html.index("class='warn'") < html.index("<img")
    assert box.count("<li>") == 2  # two kinds of warning, not three lines
    assert "2 of 3 runs: s0, s1" in box and "its numbers differ" in box
    assert "3 of 3 runs" in box
