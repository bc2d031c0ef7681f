"""What a curious server can see (issue 16), wired through the run: the privacy keys every
mode takes, gradient pruning in the hospital's local_train, the reconstruction audit at the
configured round with the run's own defenses, the per-hospital privacy report (epsilon,
membership inference, reconstruction) and its HTML section, per-hospital LiRA, and the
memorising preset in which membership inference works.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmedsec.client import local_train
from fedmedsec.config import ConfigError, load_config
from fedmedsec.engine import run_experiment
from fedmedsec.experiment import build_setup
from fedmedsec.privacy.pruning import prune_update
from fedmedsec.privacy.reconstruction import curious_server_audit
from fedmedsec.privacy.report import privacy_line, privacy_report, privacy_section_html
from fedmedsec.rounds import run_rounds
from fedmedsec.server import Coordinator
from fedmedsec.training import state_vector
from fedmedsec.transports import InProcessTransport

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning",
                                        "ignore:Secure RNG turned off:UserWarning",
                                        "ignore:Optimal order is the:UserWarning")

PRESET = Path(__file__).resolve().parents[1] / "configs" / "mia_memorising.toml"
SMALL = ["experiment.mia=false", "data.num_hospitals=4", "simulation.backend=inprocess"]
REC = ["reconstruction.enabled=true", "reconstruction.iterations=200"]


def cfg_of(*overrides):
    return load_config(raw={}, overrides=[*SMALL, *overrides])


def rows_of(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("mode", ["none", "dp_sgd", "central"])
def test_every_privacy_mode_takes_secure_aggregation_and_pruning(mode):
    cfg = load_config(raw={}, overrides=[f"privacy.mode='{mode}'", "privacy.secure_aggregation=true",
                                         "privacy.prune_ratio=0.25"])
    assert cfg.privacy.secure_aggregation and cfg.privacy.prune_ratio == 0.25
    assert cfg.to_dict()["privacy"]["prune_ratio"] == 0.25
    assert load_config(raw=cfg.to_dict()).privacy == cfg.privacy
    for bad in ("1.0", "-0.1", "nan", "true"):
        with pytest.raises(ConfigError, match="privacy.prune_ratio"):
            load_config(raw={}, overrides=[f"privacy.mode='{mode}'", f"privacy.prune_ratio={bad}"])


def test_reconstruction_section_is_strict_and_checked_against_the_run():
    with pytest.raises(ConfigError, match="unknown key 'reconstruction.strength'"):
        load_config(raw={}, overrides=["reconstruction.strength=3"])
    with pytest.raises(ConfigError, match="reconstruction.method"):
        load_config(raw={}, overrides=["reconstruction.method='gan'"])
    with pytest.raises(ConfigError, match="reconstruction.batch_size"):
        load_config(raw={}, overrides=["reconstruction.batch_size=true"])
    with pytest.raises(ConfigError, match=r"reconstruction.round = 9: must be <= experiment.rounds \(3\)"):
        load_config(raw={}, overrides=["reconstruction.enabled=true", "reconstruction.round=9",
                                       "experiment.rounds=3"])
    with pytest.raises(ConfigError, match="does not apply to experiment.mode = 'centralized'") as e:
        load_config(raw={}, overrides=["reconstruction.enabled=true", "experiment.mode='centralized'"])
    assert e.value.inapplicable
    with pytest.raises(ConfigError, match=r"reconstruction.target_hospital = 4: ids are 0..3"):
        Coordinator(build_setup(cfg_of(*REC, "reconstruction.target_hospital=4")))


# ---------------------------------------------------------------- pruning in local_train
@pytest.mark.parametrize("attack", ["none", "sign_flip"])
def test_local_train_prunes_what_leaves_the_hospital(attack):
    over = [f"attack.name={attack}"] + (["attack.hospitals=[0]"] if attack != "none" else [])
    plain = build_setup(cfg_of(*over))
    pruned = build_setup(cfg_of(*over, "privacy.prune_ratio=0.7"))
    g = state_vector(plain.new_model())
    h = plain.data.hospitals[0]
    full, _ = local_train(plain, h, g, 1, {})
    local, m = local_train(pruned, pruned.data.hospitals[0], g, 1, {})
    u_full, u = full - g, local - g
    expected = prune_update(u_full, 0.7)  # the attack's update (sign flip) is what gets pruned
    assert int((u == 0).sum()) >= math.floor(0.7 * g.numel())
    assert torch.all(u[expected == 0] == 0)  # exactly zero on the hospital's side
    torch.testing.assert_close(u, expected, rtol=0, atol=1e-6)  # the kept entries, up to g + u rounding
    assert m["malicious"] == float(attack != "none")


# ---------------------------------------------------------------- the reconstruction audit in the run
@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    return run_experiment(cfg_of(*REC, "experiment.rounds=2"), tmp_path_factory.mktemp("alone"))


def test_the_curious_server_reconstructs_the_target_record(alone):
    rec = alone["reconstruction"]
    assert rec["observed"] == "update" and rec["round"] == 1 and rec["target_hospital"] == 0
    assert rec["records"] == 1 and rec["hospitals_in_sum"] == 1 and rec["psnr"] is None  # tabular
    assert rec["mse"] < 1e-3 * rec["baseline_mse"] and rec["correlation"] > 0.99
    assert rec["label_accuracy"] == 1.0
    assert rec["defenses"] == {"dp_noise_multiplier": None, "prune_ratio": 0.0, "secure_aggregation": False,
                               "client_clip_norm": None}
    assert rec["settings"]["setting"] == "fedsgd" and rec["settings"]["iterations"] == 200
    report = alone["privacy_report"]
    assert sorted(report) == ["0", "1", "2", "3"]
    assert report["0"]["reconstruction"]["beats_baseline"] is True
    assert report["0"]["reconstruction"]["mse"] == rec["mse"]
    assert all(report[k]["reconstruction"] is None for k in "123")


@pytest.mark.parametrize("defense", [["privacy.secure_aggregation=true"],
                                     ["privacy.mode='dp_sgd'", "privacy.noise_multiplier=1.0"],
                                     ["privacy.prune_ratio=0.99"]])
def test_the_run_s_defenses_reach_the_audit_and_blunt_it(alone, defense, tmp_path):
    s = run_experiment(cfg_of(*REC, "experiment.rounds=1", *defense), tmp_path)
    rec, base = s["reconstruction"], alone["reconstruction"]
    d = rec["defenses"]
    if "privacy.secure_aggregation=true" in defense:
        assert rec["observed"] == "secure_sum" and rec["hospitals_in_sum"] == 4 and d["secure_aggregation"]
        assert rec["hospitals_in_sum_ids"] == [0, 1, 2, 3]
    elif "privacy.prune_ratio=0.99" in defense:
        assert d["prune_ratio"] == 0.99
    else:
        assert d["dp_noise_multiplier"] == 1.0
        assert s["privacy_report"]["0"]["epsilon_level"] == "record"
    assert rec["mse"] > 100 * base["mse"]


def test_the_audit_waits_for_the_target_s_first_update(tmp_path):
    s = run_experiment(cfg_of(*REC, "experiment.rounds=8", "experiment.fraction_train=0.25",
                              "reconstruction.round=2"), tmp_path)
    sampled = [int(r["round"]) for r in rows_of(tmp_path / "clients.csv") if r["partition_id"] == "0"]
    later = [r for r in sampled if r >= 2]
    rec = s["reconstruction"]
    if later:
        assert rec["round"] == later[0] and rec["requested_round"] == 2
    else:
        assert "skipped" in rec


def test_the_figure_and_arrays_go_into_the_run_directory(tmp_path):
    setup = build_setup(cfg_of(*REC, "experiment.rounds=1", "privacy.secure_aggregation=true",
                               "reconstruction.batch_size=2"))
    co = Coordinator(setup)
    co.run_dir = tmp_path
    run_rounds(co, InProcessTransport(setup))
    assert co.reconstruction["figure"] == "reconstruction.png"
    assert (tmp_path / "reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(tmp_path / "reconstruction.npz")
    orig = arrays["originals"]
    assert orig.shape[0] == 2 * 4 and arrays["reconstructions"].shape == orig.shape
    # the target's records come first, then the other hospitals', each from its own training data
    for j, pid in enumerate([0, 0, 1, 1, 2, 2, 3, 3]):
        x = setup.data.hospitals[pid].x_train
        assert np.any(np.all(np.isclose(x, orig[j]), axis=tuple(range(1, x.ndim))))
    html = privacy_section_html({"privacy_report": privacy_report(
        {h.id: h.name for h in setup.data.hospitals}, setup.cfg.privacy.model_dump(mode="json"), epsilons={},
        run_privacy={}, membership=None, reconstruction=co.reconstruction),
        "reconstruction": co.reconstruction}, tmp_path)
    assert "data:image/png;base64," in html and html.count("<tr>") >= 4


def test_without_the_target_s_records_the_audit_is_skipped():
    setup = build_setup(cfg_of(*REC, "experiment.rounds=1"))
    h = setup.data.hospitals[0]
    empty = dataclasses.replace(h, x_train=h.x_train[:0], y_train=h.y_train[:0])
    data = dataclasses.replace(setup.data, hospitals=[empty, *setup.data.hospitals[1:]])
    res, rec = curious_server_audit(dataclasses.replace(setup, data=data), state_vector(setup.new_model()), 1, [0])
    assert rec is None and "holds no records" in res["skipped"]


# ---------------------------------------------------------------- the per-hospital privacy report
def test_dp_sgd_report_gives_each_hospital_its_own_epsilon(tmp_path):
    s = run_experiment(cfg_of("experiment.rounds=2", "experiment.fraction_train=0.5", "experiment.mia=true",
                              "privacy.mode='dp_sgd'", "privacy.noise_multiplier=1.5"), tmp_path)
    last = {}
    for r in rows_of(tmp_path / "clients.csv"):
        last[r["partition_id"]] = float(r["epsilon"])
    rep = s["privacy_report"]
    for pid, entry in rep.items():
        assert entry["epsilon_level"] == "record" and entry["delta"] == 1e-5
        if pid in last:
            assert entry["epsilon"] == pytest.approx(last[pid], rel=1e-6)
        else:
            assert entry["epsilon"] is None and "never sampled" in entry["epsilon_note"]
        assert entry["mia_auc"] == s["membership_inference"]["per_hospital_auc"].get(pid)
        assert entry["defenses"]["mode"] == "dp_sgd" and entry["defenses"]["noise_multiplier"] == 1.5
    assert max(e["epsilon"] for e in rep.values() if e["epsilon"] is not None) == pytest.approx(s["epsilon"])
    assert "largest epsilon" in privacy_line(s)


def test_central_report_gives_every_hospital_the_client_level_epsilon():
    names = {0: "a", 1: "b"}
    rep = privacy_report(names, {"mode": "central"}, epsilons={}, membership=None, reconstruction=None,
                         run_privacy={"epsilon": 3.5, "delta": 1e-5, "epsilon_note": None})
    assert [e["epsilon"] for e in rep.values()] == [3.5, 3.5]
    assert {e["epsilon_level"] for e in rep.values()} == {"client"}
    none = privacy_report(names, {"mode": "none"}, epsilons={0: 9.0}, membership=None, reconstruction=None,
                          run_privacy={"epsilon": None, "delta": None})
    assert all(e["epsilon"] is None and e["delta"] is None for e in none.values())


def test_privacy_section_escapes_and_has_one_row_per_hospital():
    names = {0: "<script>alert(1)</script>", 1: "b & c"}
    mia = {"per_hospital_auc": {"0": 0.71}, "per_hospital_tpr_at_1pct_fpr": {"0": 0.05},
           "per_hospital_n": {"0": [40, 12]},
           "lira": {"per_hospital": {"0": {"auc": 0.66, "tpr_at_1pct_fpr": 0.08}}}}
    rep = privacy_report(names, {"mode": "none", "secure_aggregation": False}, epsilons={}, membership=mia,
                         reconstruction=None, run_privacy={})
    assert rep["0"]["mia_members"] == 40 and rep["0"]["lira_tpr_at_1pct_fpr"] == 0.08
    assert rep["1"]["mia_auc"] is None
    html = privacy_section_html({"privacy_report": rep})
    assert "<script>" not in html and "&lt;script&gt;" in html and "b &amp; c" in html
    assert html.count("<tr>") == 3  # the header and two hospitals
    assert privacy_section_html({}) == ""


# ---------------------------------------------------------------- LiRA per hospital
def test_lira_per_hospital_scores_each_hospital_s_own_targets(monkeypatch):
    from fedmedsec.privacy import audit
    from fedmedsec.privacy.mia import MIAResult

    setup = build_setup(cfg_of("experiment.mia=true", "experiment.mia_lira_shadows=2", "experiment.rounds=1"))
    seen = {}

    def fake_lira(model, x_t, y_t, is_member, pop, train_shadow, rng, k):
        scores = np.random.default_rng(0).standard_normal(len(y_t))
        seen.update(x=x_t, member=np.asarray(is_member), scores=scores)
        return MIAResult(0.5, 0.0, int(is_member.sum()), int((~is_member).sum())), scores

    monkeypatch.setattr(audit, "lira_offline", fake_lira)
    d = setup.data
    member_of = np.concatenate([np.full(len(h.y_train), h.id) for h in d.hospitals])
    nonmember_of = np.concatenate([np.full(len(d.y_test), -1)] + [np.full(len(h.y_test), h.id) for h in d.hospitals])
    nonmembers = (np.concatenate([d.x_test] + [h.x_test for h in d.hospitals]),
                  np.concatenate([d.y_test] + [h.y_test for h in d.hospitals]))
    out = audit.lira_audit(setup, setup.new_model(), d.pooled_train, nonmembers, (member_of, nonmember_of))
    x, member, scores = seen["x"], seen["member"], seen["scores"]

    def owner(row, is_member):  # brute force: find the record among each hospital's own
        for h in d.hospitals:
            pool = h.x_train if is_member else h.x_test
            if np.any(np.all(pool == row, axis=1)):
                return h.id
        return -1

    owners = np.array([owner(x[i], member[i]) for i in range(len(x))])
    for h in d.hospitals:
        sm, sn = scores[member & (owners == h.id)], scores[~member & (owners == h.id)]
        entry = out["per_hospital"][str(h.id)]
        assert (entry["n_members"], entry["n_nonmembers"]) == (len(sm), len(sn))
        if min(len(sm), len(sn)) >= audit.MIN_PER_HOSPITAL:
            pairs = [(a > b) + 0.5 * (a == b) for a in sm for b in sn]  # Mann-Whitney AUC
            assert entry["auc"] == pytest.approx(np.mean(pairs))
        else:
            assert entry["auc"] is None


# ---------------------------------------------------------------- the memorising preset
def test_membership_inference_works_on_the_memorising_preset(shared_data, tmp_path):
    path = shared_data / "uci-heart-disease" / "heart_disease_4sites.csv"
    cfg = load_config(PRESET, [f"data.path='{path}'", "experiment.rounds=10", "experiment.mia_lira_shadows=0"])
    s = run_experiment(cfg, tmp_path)
    assert s["membership_inference"]["auc"] > 0.6
    assert s["privacy_report"]["0"]["mia_auc"] is not None
