"""Attack features wired through the round loop (in-process backend): schedules, knowledge
levels, attacks tailored to the deployed rule, durable and defense-aware backdoors, DBA."""

from __future__ import annotations

import csv

import pytest
import torch

from fedmedsec.config import load_config
from fedmedsec.engine import run_experiment
from fedmedsec.experiment import build_setup
from fedmedsec.rounds import ClientReply
from fedmedsec.server import Coordinator

FAST = ["simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=4",
        "experiment.clean_twin=false"]


def _clients(path):
    with open(path / "clients.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_k_schedule_attacks_only_in_its_rounds(tmp_path):
    s = run_experiment(load_config(raw={}, overrides=FAST + [
        "attack.name=sign_flip", "attack.fraction=0.2", "attack.schedule=every_k", "attack.every=2"]), tmp_path)
    rounds = {int(c["round"]) for c in _clients(tmp_path) if c["attacking"] == "1"}
    assert rounds == {1, 3} and s["attack_rounds"] == [1, 3]
    with pytest.raises(Exception, match="attack.every does not apply"):
        load_config(raw={}, overrides=["attack.name=sign_flip", "attack.every=2"])


def test_partial_knowledge_uses_only_the_colluders_own_updates():
    cfg = load_config(raw={}, overrides=["attack.name=alie", "attack.fraction=0.3", "attack.knowledge=partial",
                                         "attack.z=1.0"])
    co = Coordinator(build_setup(cfg))
    s, g = co.setup, co.global_vec.clone()
    ups = torch.randn(s.n, g.numel(), generator=torch.Generator().manual_seed(0))
    co.sample(1, list(range(s.n)))
    co.aggregate(1, [ClientReply(i, g + ups[i], 10) for i in range(s.n)])
    mal = torch.tensor([i in s.attackers for i in range(s.n)])
    own = ups[mal].double()
    crafted = own.mean(0) - 1.0 * own.std(0)  # ALIE from the attackers' own benign updates
    expected = ups.clone().double()
    expected[mal] = crafted
    torch.testing.assert_close(co.global_vec.double(), (g + expected.float().mean(0)).double(), atol=1e-5, rtol=0)
    assert "own benign updates" in s.attack.threat_for("partial").knowledge


@pytest.mark.parametrize("defense", ["median", "krum"])
def test_agr_tailored_runs_against_the_configured_rule(tmp_path, defense):
    s = run_experiment(load_config(raw={}, overrides=FAST + [
        "attack.name=agr_tailored", "attack.fraction=0.2", f"defense.name={defense}", "defense.f=2"]), tmp_path)
    assert s["threat_model"] is not None and s["malicious_hospitals"]


def test_neurotoxin_and_defense_aware_backdoor_train_through_the_round_loop(tmp_path):
    for name, extra in (("neurotoxin", ["attack.top_k_ratio=0.1"]),
                        ("backdoor_pgd", ["attack.max_norm=0.5", "defense.name=norm_bounding",
                                          "defense.max_norm=0.5"])):
        try:
            s = run_experiment(load_config(raw={}, overrides=FAST + [
                f"attack.name={name}", "attack.fraction=0.2", *extra]), tmp_path / name)
        except Exception as e:  # noqa: BLE001 - a defense key the rule may not take
            pytest.fail(f"{name}: {e}")
        assert s["attack_success_rate"] is not None
    rows = [c for c in _clients(tmp_path / "backdoor_pgd") if c["attacking"] == "1"]
    assert rows and all(float(c["update_norm"]) <= 0.5 + 1e-4 for c in rows)


def test_dba_attackers_stamp_different_parts_in_a_run():
    cfg = load_config(raw={}, overrides=["attack.name=dba", "attack.fraction=0.3"])
    s = build_setup(cfg)
    import numpy as np

    x = np.zeros((4,) + s.data.input_shape, np.float32)
    y = np.ones(4, np.int64)
    parts = []
    for pid in s.attackers:
        ctx = s.attack_context(pid, 1)
        xp, _ = s.attack.poison_data(x, y, np.random.default_rng(0), ctx)
        parts.append(frozenset(np.flatnonzero((xp != 0).any(0).reshape(-1)).tolist()))
    assert len(set(parts)) == len(parts) and all(parts)


def test_backdoor_lifespan_after_the_attack_window(tmp_path):
    s = run_experiment(load_config(raw={}, overrides=[
        "simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=8",
        "attack.name=backdoor", "attack.fraction=0.3", "attack.end_round=3"]), tmp_path)
    life = s["backdoor_lifespan"]
    assert life["last_attack_round"] == 3 and life["rounds_after"] == 5 and life["measure"] == "attack_success_lift"
    assert life["censored"] == (life["rounds_to_fade"] is None)
    with open(tmp_path / "rounds.csv", newline="") as fh:
        all_lifts = [float(r["attack_success_lift"]) for r in csv.DictReader(fh)]
    lifts = all_lifts[3:]
    assert life["at_last_attack"] == pytest.approx(all_lifts[2], abs=1e-5)
    assert life["planted"] == (all_lifts[2] >= 0.1)
    assert life["curve"] == pytest.approx(lifts, abs=1e-5) and life["mean_after"] == pytest.approx(sum(lifts) / 5, abs=1e-5)
    if life["rounds_to_fade"] is not None:
        k = life["rounds_to_fade"]
        assert lifts[k - 1] < 0.1 and all(v >= 0.1 for v in lifts[: k - 1])
