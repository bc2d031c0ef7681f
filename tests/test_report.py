"""`fedmedsec report`: HTML with embedded plots from fake sweep and run directories, and
partial directories that must not crash it. Fast: no Ray, run dirs are written here."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedmedsec.config import ConfigError
from fedmedsec.results.report import build_report, load_dir, report_cli, runs_frame, threat_tables

THREATS = {
    "sign_flip": {"goal": "availability", "adversary": "malicious hospitals", "knowledge": "own update", "targeted": False},
    "backdoor": {"goal": "integrity", "adversary": "malicious hospitals", "knowledge": "own data", "targeted": True},
}


def fake_run(path: Path, *, attack="none", defense="fedavg", seed=0, acc=0.9, asr=None, epsilon=None,
             mia=None, rounds=4, n=5, detection=None) -> Path:
    """A run directory as the engine writes it (summary.json, rounds.csv, clients.csv, config.toml)."""
    path.mkdir(parents=True, exist_ok=True)
    mal = [0] if attack != "none" else []
    per = {str(h): round(acc - 0.05 * h, 3) for h in range(n)}
    summary = {
        "experiment": "fake", "clean_accuracy": acc, "per_hospital_accuracy": per,
        "worst_hospital_accuracy": min(per.values()),
        "honest_hospital_accuracy": {h: a for h, a in per.items() if int(h) not in mal},
        "worst_honest_hospital_accuracy": min(a for h, a in per.items() if int(h) not in mal),
        "attack_success_rate": asr, "epsilon": epsilon, "delta": 1e-5 if epsilon else None,
        "detection": detection, "wall_seconds": 1.0, "rounds": rounds, "seed": seed, "attack": attack,
        "defense": defense, "privacy_mode": "dp_sgd" if epsilon else "none", "malicious_hospitals": mal,
        "threat_model": THREATS.get(attack), "membership_inference": {"auc": mia, "tpr_at_1pct_fpr": 0.01} if mia else None,
        "cost": {"seconds_per_round": 0.1}, "versions": {"python": "3.11"}, "dataset": "wdbc", "num_hospitals": n,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.toml").write_text(
        f'[experiment]\nseed = {seed}\nrounds = {rounds}\n[attack]\nname = "{attack}"\n[defense]\nname = "{defense}"\n')
    with open(path / "rounds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "clean_accuracy", "worst_hospital_accuracy", "attack_success_rate"])
        for r in range(1, rounds + 1):
            w.writerow([r, acc * r / rounds, (acc - 0.2) * r / rounds, "" if asr is None else asr])
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
                fake_run(root / name, attack=a, defense=d, seed=s, acc=float(acc), asr=asr, detection=det, mia=0.55)
                points.append({"run": name, "values": {"attack.name": a, "defense.name": d, "experiment.seed": s}})
    (root / "sweep.json").write_text(json.dumps({"axes": axes, "fixed": {}, "points": points}))
    return root


def _images(html: str) -> int:
    return len(re.findall(r"<img [^>]*src='data:image/png;base64,", html))


def test_sweep_report_embeds_plots_tables_configs(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    out, images, notes = build_report(root)
    html = out.read_text()
    assert _images(html) == images >= 3
    for png in ("accuracy_by_round.png", "heatmap_clean_accuracy.png", "heatmap_attack_success.png",
                "threat_matrix.png", "hospital_accuracy.png", "detection.png", "seed_spread.png"):
        assert (root / "plots" / png).is_file(), png
    assert "src='http" not in html and "src=\"http" not in html  # self-contained
    assert "Privacy-utility" in html and "no run with differential privacy" in html  # skipped with a note
    assert html.count("<details>") == 12  # every resolved config


def test_threat_matrix_measures_drop_against_same_defense_baseline(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    _, runs, meta = load_dir(root)
    df = runs_frame(runs, list(meta["axes"]))
    impact, kinds, declared = threat_tables(df, list(meta["axes"]))
    # untargeted: accuracy drop vs attack=none of the same defense (about 0.93 - 0.55 for fedavg)
    assert kinds.at["sign_flip", "fedavg"] == "drop"
    assert impact.at["sign_flip", "fedavg"] == pytest.approx(0.38, abs=0.05)
    assert impact.at["sign_flip", "median"] == pytest.approx(0.03, abs=0.05)
    # targeted: attack success rate
    assert kinds.at["backdoor", "median"] == "ASR" and impact.at["backdoor", "median"] == pytest.approx(0.3)
    assert declared.at["backdoor", "knowledge"] == "own data"
    assert "none" not in impact.index


def test_privacy_curve_when_dp_runs_exist(tmp_path):
    root = tmp_path / "dp"
    pts = []
    for eps, acc, auc in [(0.5, 0.7, 0.51), (2.0, 0.82, 0.53), (8.0, 0.9, 0.56)]:
        name = f"eps={eps}"
        fake_run(root / name, epsilon=eps, acc=acc, mia=auc)
        pts.append({"run": name, "values": {"privacy.noise_multiplier": eps}})
    fake_run(root / "nodp", acc=0.93, mia=0.6)
    (root / "sweep.json").write_text(json.dumps({"axes": {"privacy.noise_multiplier": [0.5, 2.0, 8.0]}, "points": pts}))
    out, images, _ = build_report(root)
    assert (root / "plots" / "privacy_utility.png").is_file()
    assert "Membership inference on the final model" in out.read_text()


def test_single_run_report(tmp_path):
    run = fake_run(tmp_path / "run", attack="sign_flip", defense="median", acc=0.88, detection={"tpr": 1.0, "fpr": 0.0})
    assert report_cli(type("A", (), {"dir": str(run)})()) == 0
    html = (run / "report.html").read_text()
    assert _images(html) >= 3
    assert "availability" in html and "own update" in html  # the declared threat model


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
    impact, kinds, _ = threat_tables(runs_frame(runs, list(axes)), list(axes))
    assert list(impact.columns) == ["fedavg", "norm_bounding (noise_sigma=0.0)", "norm_bounding (noise_sigma=0.003)"]
    assert impact.loc["backdoor"].tolist() == pytest.approx([0.9, 0.4, 0.2])
    _, images, _ = build_report(root)
    assert images >= 3
