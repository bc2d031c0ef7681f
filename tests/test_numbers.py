"""Numbers that mean what they say: the clean twin beside attack success, clinical metrics,
and warnings for runs whose numbers mislead (in-process backend, a few rounds)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from fedmedsec.config import load_config
from fedmedsec.engine import run_experiment
from fedmedsec.experiment import build_setup
from fedmedsec.training import load_state_vector, predict

ROOT = Path(__file__).resolve().parents[1]
FAST = ["simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=4"]


def _rounds(path: Path) -> list[dict]:
    with open(path / "rounds.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_targeted_attack_reports_its_clean_twin_and_lift(tmp_path, check_run_dir):
    cfg = load_config(raw={}, overrides=FAST + ["attack.name=backdoor", "attack.fraction=0.2"])
    s = run_experiment(cfg, tmp_path)
    assert check_run_dir(tmp_path) == []
    assert s["attack_success_rate_clean"] is not None and s["clean_twin"]["clean_accuracy"] > 0.5
    assert s["attack_success_lift"] == pytest.approx(s["attack_success_rate"] - s["attack_success_rate_clean"])
    rows = _rounds(tmp_path)
    assert all(r["attack_success_rate_clean"] != "" for r in rows)
    for r in rows:
        lift = float(r["attack_success_rate"]) - float(r["attack_success_rate_clean"])
        assert float(r["attack_success_lift"]) == pytest.approx(lift)
    off = load_config(raw={}, overrides=FAST + ["attack.name=backdoor", "attack.fraction=0.2",
                                                "experiment.clean_twin=false"])
    s2 = run_experiment(off, tmp_path / "off")
    assert s2["attack_success_rate_clean"] is None and s2["attack_success_rate"] == s["attack_success_rate"]


def test_attackers_that_never_act_equal_their_twin(tmp_path):
    """The twin is the same federation trained the same way: when the attack window never
    opens, the run and its twin are the same model, so the lift is exactly zero."""
    cfg = load_config(raw={}, overrides=FAST + ["attack.name=backdoor", "attack.fraction=0.2",
                                                "attack.start_round=5"])
    s = run_experiment(cfg, tmp_path)
    assert s["attack_success_lift"] == 0.0
    assert s["clean_twin"]["clean_accuracy"] == s["clean_accuracy"]
    assert any("never acted" in w for w in s["warnings"])


def test_clinical_metrics_match_scikit_learn(tmp_path):
    cfg = load_config(raw={}, overrides=FAST)
    s = run_experiment(cfg, tmp_path)
    setup = build_setup(cfg)
    # rebuild the final model from the run: the same config and seed give the same numbers
    from fedmedsec.rounds import run_rounds
    from fedmedsec.server import Coordinator
    from fedmedsec.transports import InProcessTransport

    co = run_rounds(Coordinator(setup), InProcessTransport(setup))
    model = setup.new_model()
    load_state_vector(model, co.global_vec)
    logits = predict(model, setup.data.x_test)
    y, pred = setup.data.y_test, logits.argmax(1)
    c = s["clinical"]
    assert c["positive_class"] == "malignant"  # wdbc's class 0
    assert c["accuracy"] == pytest.approx(np.mean(pred == y)) == pytest.approx(s["clean_accuracy"])
    assert c["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert c["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert c["specificity"] == pytest.approx(recall_score(y, pred, pos_label=1))
    p0 = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
    assert c["auroc"] == pytest.approx(roc_auc_score(y == 0, p0), abs=1e-3)
    assert set(s["per_hospital_clinical"]) == set(s["per_hospital_accuracy"])


@pytest.mark.parametrize("overrides, fragment", [
    (["attack.name=alie"], "no hospital is malicious"),
    (["attack.name=sign_flip", "attack.fraction=0.3", "defense.name=krum"], "defense.f = 0 but up to 3"),
    (["train.lr=1e-6", "train.momentum=0.0"], "one class only"),
])
def test_misleading_runs_warn(tmp_path, overrides, fragment):
    s = run_experiment(load_config(raw={}, overrides=FAST + overrides), tmp_path)
    assert any(fragment in w for w in s["warnings"]), s["warnings"]


def test_a_run_that_cannot_make_progress_stops(tmp_path):
    from fedmedsec.rounds import RunFailed

    cfg = load_config(raw={}, overrides=FAST + ["defense.max_update_norm=1e-300"])
    with pytest.raises(RunFailed, match="no update was aggregated in the last 3 rounds"):
        run_experiment(cfg, tmp_path)


def test_cli_prints_warnings_and_refuses_to_overwrite_a_complete_run(tmp_path):
    args = [sys.executable, "-m", "fedmedsec.cli", "run", "configs/quickstart.toml", "--out", str(tmp_path),
            "-s", "attack.name=alie", *[a for o in FAST for a in ("-s", o)]]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning: attack.name = 'alie' but no hospital is malicious" in r.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["warnings"]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "holds a complete run" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(args + ["--overwrite"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_detector_excludes_flagged_clients_before_the_rule(tmp_path):
    cfg = load_config(raw={}, overrides=FAST + ["attack.name=gaussian", "attack.fraction=0.2",
                                                "attack.sigma=5.0", "detection.name=flame_cluster"])
    s = run_experiment(cfg, tmp_path)
    with open(tmp_path / "clients.csv", newline="") as fh:
        clients = list(csv.DictReader(fh))
    flagged = [c for c in clients if c["flagged"] == "1"]
    assert flagged and all(c["accepted"] == "0" for c in flagged)
    assert s["detector"]["name"] == "flame_cluster" and s["detector"]["tpr"] == 1.0
    assert s["detection"]["tpr"] == 1.0  # the exclusions include the detector's flags
    rows = _rounds(tmp_path)
    assert all(float(r["detector_tpr"]) == 1.0 for r in rows)
    with pytest.raises(Exception, match="detection.name"):
        load_config(raw={}, overrides=["detection.name=nope"])
