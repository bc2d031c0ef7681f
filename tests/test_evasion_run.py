"""Evasion of the federated model and federated adversarial training, end to end through
the round loop (in-process backend)."""

from __future__ import annotations

import csv

import pytest

from fedmedsec.config import ConfigError, load_config
from fedmedsec.engine import run_experiment
from fedmedsec.experiment import build_setup

FAST = ["simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=3",
        "evasion.max_records=40", 'evasion.attacks=["fgsm", "pgd"]']


def test_robust_accuracy_of_the_final_model_overall_and_per_hospital(tmp_path):
    s = run_experiment(load_config(raw={}, overrides=FAST + ["evasion.eps=[0.0, 0.5]", "evasion.every=2",
                                                            'evasion.immutable=["mean radius"]']), tmp_path)
    ra = s["robust_accuracy"]
    assert set(ra) == {"0", "0.5"} and ra["0.5"] <= s["clean_accuracy_evasion_rows"]["0.5"]
    assert ra["0"] == s["clean_accuracy_evasion_rows"]["0"]  # eps 0 changes nothing
    assert set(s["per_hospital_robust_accuracy"]) == set(s["per_hospital_accuracy"])
    for rows in s["evasion"]["per_hospital"].values():
        assert all(r["robust_accuracy"] <= r["clean_accuracy"] for r in rows if r["n"])
    with open(tmp_path / "rounds.csv", newline="") as fh:
        rounds = list(csv.DictReader(fh))
    assert rounds[1]["robust_accuracy@0.5"] != "" and rounds[0]["robust_accuracy@0.5"] == ""


def test_adversarial_training_composes_with_attacks_robust_rules_and_dp_sgd(tmp_path):
    s = run_experiment(load_config(raw={}, overrides=FAST + [
        "evasion.eps=[0.25]", "train.adversarial=pgd", "train.adversarial_eps=0.25",
        "attack.name=sign_flip", "attack.fraction=0.2", "defense.name=median", "defense.f=2",
        "privacy.mode=dp_sgd", "privacy.noise_multiplier=1.0"]), tmp_path)
    assert s["epsilon"] > 0 and s["robust_accuracy"]["0.25"] is not None


@pytest.mark.parametrize("overrides, key", [
    (['evasion.attacks=["autoattack"]', "evasion.eps=[0.1]"], "evasion.attacks"),
    (['evasion.immutable=["no such feature"]', "evasion.eps=[0.1]"], "evasion.immutable"),
    (["evasion.eps=[0.1]", "evasion.targeted=true", "evasion.target_label=7"], "evasion.target_label"),
    (["train.adversarial_eps=0.1"], "train"),
])
def test_bad_evasion_settings_are_one_line_errors(overrides, key):
    with pytest.raises(ConfigError) as e:
        build_setup(load_config(raw={}, overrides=overrides))
    assert str(e.value).startswith(key) or e.value.key == key, str(e.value)
