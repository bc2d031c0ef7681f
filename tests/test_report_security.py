"""`fedmedsec report` includes the security figures (results/report_security.py) exactly when
the runs recorded their data: robust accuracy against eps per defense (one series per
configuration, the values of summary.json's worst-case rows), the adversarial example figure
of a real run's final model, and the backdoor durability plot with the attack window
shaded; a sweep without evasion rows or attack windows gets none of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmedsec.results import plots
from fedmedsec.results.report import build_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import fake_run  # noqa: E402

EPS = [0.1, 0.25]


@pytest.fixture(autouse=True)
def fast_figures(monkeypatch):
    from fedmedsec.results import plots_security as ps

    monkeypatch.setattr(plots, "DPI", 72)
    monkeypatch.setattr(plots, "FORMATS", ("png",))
    monkeypatch.setattr(ps, "DPI", 72)


def _robust(defense: str, adv: str, seed: int, eps: float) -> float:
    return round({"fedavg": 0.8, "median": 0.7}[defense] + 0.1 * (adv == "pgd") - eps + 0.01 * seed, 6)


def _evasion_sweep(root: Path) -> list[dict]:
    points = []
    for d in ("fedavg", "median"):
        for a in ("none", "pgd"):
            for s in (0, 1):
                name = f"defense={d}__train.adversarial={a}__seed={s}"
                p = fake_run(root / name, defense=d, seed=s, acc=0.9,
                             extra_config=f'[train]\nadversarial = "{a}"\n[evasion]\neps = {json.dumps(EPS)}\n')
                summ = json.loads((p / "summary.json").read_text())
                rows = []
                for e in EPS:
                    v = _robust(d, a, s, e)
                    rows += [{"attack": "worst_case", "eps": e, "robust_accuracy": v, "clean_accuracy": 0.9,
                              "sensitivity_robust": v - 0.1, "detection_rate": 0.3},
                             {"attack": "pgd", "eps": e, "robust_accuracy": v + 0.05, "clean_accuracy": 0.9}]
                summ["evasion"] = {"rows": rows}
                (p / "summary.json").write_text(json.dumps(summ))
                points.append({"run": name, "values": {"defense.name": d, "train.adversarial": a,
                                                       "experiment.seed": s}})
    axes = {"defense.name": ["fedavg", "median"], "train.adversarial": ["none", "pgd"], "experiment.seed": [0, 1]}
    (root / "sweep.json").write_text(json.dumps({"axes": axes, "fixed": {}, "points": points}))
    return points


def test_sweep_report_plots_robust_accuracy_per_defense_and_adversarial_training(tmp_path):
    root = tmp_path / "ev"
    _evasion_sweep(root)
    html, _, notes = build_report(root)
    text = html.read_text()
    assert "id='evasion'" in text and "id='durability'" not in text
    series = json.loads((root / "plots" / "series.json").read_text())
    assert {"robust_accuracy_vs_eps", "robust_sensitivity_vs_eps", "evasion_detection_vs_eps"} <= set(series)
    fig = series["robust_accuracy_vs_eps"]
    assert (root / "plots" / "robust_accuracy_vs_eps.png").is_file()
    assert all(ax["xlabel"] and ax["ylabel"] for ax in fig["axes"])
    got = {}
    for p in fig["points"]:  # one series per (defense, adversarial training), never pooled
        d = {r.split("__")[0] for r in p["runs"]}
        a = {r.split("__")[1] for r in p["runs"]}
        assert len(d) == 1 and len(a) == 1 and p["n"] == [2] * len(p["x"])
        got[(d.pop().split("=")[1], a.pop().split("=")[1])] = dict(zip(p["x"], p["mean"]))
    assert len(got) == 4
    for (d, a), by_eps in got.items():
        assert by_eps[0.0] == pytest.approx(0.9)  # eps 0: the clean accuracy
        for e in EPS:  # the worst-case rows, mean over the two seeds (not the pgd rows)
            assert by_eps[e] == pytest.approx(np.mean([_robust(d, a, s, e) for s in (0, 1)]))
    # the fake runs keep no final model: the example figure is skipped with a note
    assert any("final_model.pt" in n for n in notes) and "adversarial_examples" not in series


def test_durability_section_shades_the_window(tmp_path):
    root = tmp_path / "dur"
    points = []
    for a in ("backdoor", "neurotoxin"):
        for s in (0, 1):
            name = f"attack={a}__seed={s}"
            p = fake_run(root / name, attack=a, seed=s, acc=0.9, asr=0.5, asr_clean=0.05, rounds=8)
            summ = json.loads((p / "summary.json").read_text())
            summ["attack_rounds"] = [2, 3]
            (p / "summary.json").write_text(json.dumps(summ))
            points.append({"run": name, "values": {"attack.name": a, "experiment.seed": s}})
    (root / "sweep.json").write_text(json.dumps({"axes": {"attack.name": ["backdoor", "neurotoxin"],
                                                          "experiment.seed": [0, 1]}, "fixed": {}, "points": points}))
    html, _, _ = build_report(root)
    text = html.read_text()
    assert "id='durability'" in text and "id='evasion'" not in text
    fig = json.loads((root / "plots" / "series.json").read_text())["backdoor_durability"]
    metrics = {(p["series"].split(":")[0], p["metric"]) for p in fig["points"]}
    assert metrics == {(a, m) for a in ("attack=backdoor", "attack=neurotoxin")
                       for m in ("attack_success_rate", "attack_success_rate_clean", "clean_accuracy")}
    rounds = pd.read_csv(root / "attack=backdoor__seed=0" / "rounds.csv")
    p = next(p for p in fig["points"] if p["metric"] == "clean_accuracy" and "backdoor" in p["series"]
             and "neurotoxin" not in p["series"])
    assert p["mean"] == pytest.approx(rounds["clean_accuracy"].tolist())  # both seeds share the fake curve


def test_no_security_section_without_the_data(tmp_path):
    root = tmp_path / "plain"
    for s in (0, 1):
        fake_run(root / f"seed={s}", seed=s)
    (root / "sweep.json").write_text(json.dumps({"axes": {"experiment.seed": [0, 1]}, "fixed": {}, "points": [
        {"run": f"seed={s}", "values": {"experiment.seed": s}} for s in (0, 1)]}))
    html, _, _ = build_report(root)
    text = html.read_text()
    assert "id='evasion'" not in text and "id='durability'" not in text


def test_single_real_run_report_has_the_adversarial_example_figure(tmp_path):
    """A 2-round WDBC run with evasion: the run report draws robust accuracy and attacks the
    run's own final model for the example figure."""
    from fedmedsec.config import load_config
    from fedmedsec.engine import run_experiment

    out = tmp_path / "run"
    run_experiment(load_config(raw={}, overrides=[
        "simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=2",
        "evasion.eps=[0.1, 0.25]", "evasion.max_records=30", 'evasion.attacks=["fgsm", "pgd"]']), out)
    html, _, notes = build_report(out)
    text = html.read_text()
    series = json.loads((out / "plots" / "series.json").read_text())
    assert {"robust_accuracy_vs_eps", "adversarial_examples"} <= set(series), notes
    assert "PGD-10 (linf) at eps 0.25" in series["adversarial_examples"]["caption"] or \
        "eps 0.25" in text
    s = json.loads((out / "summary.json").read_text())
    worst = {r["eps"]: r["robust_accuracy"] for r in s["evasion"]["rows"] if r["attack"] == "worst_case"}
    pt = series["robust_accuracy_vs_eps"]["points"][0]
    assert dict(zip(pt["x"], pt["mean"]))[0.25] == pytest.approx(worst[0.25])
