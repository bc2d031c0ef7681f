"""The server's round logic without Flower: validation, aggregation, collusion, records."""

from __future__ import annotations

import math

import torch

from fedmedsec.client import local_evaluate, local_train
from fedmedsec.config import load_config
from fedmedsec.evaluation import round_metrics, server_evaluation
from fedmedsec.experiment import build_setup
from fedmedsec.results.summary import detection_rates
from fedmedsec.server import ClientEval, ClientReply, Coordinator


def _co(*overrides):
    cfg = load_config(raw={}, overrides=["experiment.rounds=2", *overrides])
    return Coordinator(build_setup(cfg))


def _aggregate(co, r, replies):
    co.sample(r, list(range(co.setup.n)))
    co.aggregate(r, replies)


def test_mean_of_valid_replies_becomes_the_new_global():
    co = _co()
    g = co.global_vec.clone()
    d = g.numel()
    deltas = [torch.full((d,), float(i)) for i in range(co.setup.n)]
    _aggregate(co, 1, [ClientReply(i, g + deltas[i], 10) for i in range(co.setup.n)])
    assert torch.allclose(co.global_vec, g + torch.stack(deltas).mean(0))


def test_malformed_replies_are_dropped_and_recorded_not_raised():
    co = _co()
    g = co.global_vec.clone()
    d = g.numel()
    replies = [
        ClientReply(0, g + 1.0, 10),
        ClientReply(1, torch.full((d,), float("nan")), 10),
        ClientReply(2, torch.zeros(d + 3), 10),
        ClientReply(3, g + 1e9, 10),
        ClientReply(4, None, 10, problem="wrong dtype for 'w': int64"),
        ClientReply(5, g + 3.0, 10),
    ]
    _aggregate(co, 1, replies)
    assert torch.allclose(co.global_vec, g + 2.0)  # mean of the two valid ones
    co.end_round(1, [], 0.0)
    status = {c["partition_id"]: (c["status"], c["problem"]) for c in co.clients}
    assert status[0][0] == "ok" and status[5][0] == "ok"
    assert "non-finite" in status[1][1]
    assert "wrong shape" in status[2][1]
    assert "norm" in status[3][1]
    assert "dtype" in status[4][1]
    assert co.rounds[-1]["dropped"] == 4


def test_duplicate_unsampled_and_list_metric_replies_are_dropped_or_tolerated():
    co = _co()
    g = co.global_vec.clone()
    co.sample(1, [0, 1, 2])
    replies = [
        ClientReply(0, g + 1.0, 10, {"train-loss": [1.0, 2.0], "epsilon": "high"}),
        ClientReply(0, g + 100.0, 10),  # a second reply of hospital 0
        ClientReply(7, g + 100.0, 10),  # hospital 7 was not sampled
        ClientReply(1, (g + 3.0).double(), 10),  # float64: would turn the model float64
    ]
    co.aggregate(1, replies)
    assert torch.equal(co.global_vec, g + 1.0) and co.global_vec.dtype == torch.float32
    co.end_round(1, [], 0.0)
    rows = {c["partition_id"]: c for c in co.clients}
    assert rows[0]["status"] == "ok" and math.isnan(rows[0]["train_loss"]) and math.isnan(rows[0]["epsilon"])
    assert rows[7]["problem"] == "not sampled this round" and "dtype" in rows[1]["problem"]
    assert co.rounds[-1]["replies"] == 3 and co.rounds[-1]["accepted"] == 1


def test_round_without_valid_replies_keeps_the_model():
    co = _co()
    g = co.global_vec.clone()
    _aggregate(co, 1, [ClientReply(0, None, 0, problem="client error: boom")])
    assert torch.equal(co.global_vec, g)
    row = co.end_round(1, [], 0.0)
    assert row["accepted"] == 0 and row["dropped"] == 1


def test_colluding_attack_replaces_malicious_rows_from_honest_ones():
    co = _co("attack.name=ipm", "attack.fraction=0.3", "attack.epsilon=0.5")
    s = co.setup
    g = co.global_vec.clone()
    honest = torch.randn(s.n, g.numel(), generator=torch.Generator().manual_seed(0))
    replies = [ClientReply(i, g + honest[i], 10) for i in range(s.n)]
    _aggregate(co, 1, replies)
    mask = torch.tensor([i in s.attackers for i in range(s.n)])
    sent = honest.clone()
    sent[mask] = -0.5 * honest[~mask].mean(0)  # IPM (Xie et al. 2019)
    assert torch.allclose(co.global_vec, g + sent.mean(0), atol=1e-5)


def test_detection_rates_count_exclusions_against_true_attackers():
    rows = [
        {"status": "ok", "attacking": 1, "accepted": 0},
        {"status": "ok", "attacking": 1, "accepted": 1},
        {"status": "ok", "attacking": 0, "accepted": 0},
        {"status": "ok", "attacking": 0, "accepted": 1},
        {"status": "ok", "attacking": 0, "accepted": 1},
        {"status": "ok", "attacking": 0, "accepted": 1},
        {"status": "dropped", "attacking": 0, "accepted": 0},
    ]
    det = detection_rates(rows)
    assert det["tpr"] == 0.5 and det["fpr"] == 0.25
    assert detection_rates([r for r in rows if not r["attacking"]]) is None


def test_a_federated_round_trains_and_evaluates_in_process():
    co = _co()
    s = co.setup
    before = round_metrics(s, server_evaluation(s, co.global_model()))["clean_accuracy"]
    for r in (1, 2, 3, 4, 5):
        replies = []
        for h in s.data.hospitals:
            v, m = local_train(s, h, co.global_vec, r, {})
            replies.append(ClientReply(h.id, v, int(m["num-examples"]), m))
        _aggregate(co, r, replies)
        evals = [ClientEval(h.id, **{k: local_evaluate(s, h, co.global_vec)[0][k] for k in ("loss", "accuracy")},
                            num_examples=len(h.y_test)) for h in s.data.hospitals]
        row = co.end_round(r, evals, 0.0)
    assert row["clean_accuracy"] > max(before, 0.85)
    assert not math.isnan(row["worst_hospital_accuracy"])


def test_dp_sgd_fixes_a_batchnorm_model_once_at_setup():
    from torch import nn

    from fedmedsec.models import MODELS
    from fedmedsec.registry import NoParams

    if "test_bn_mlp" not in MODELS:
        @MODELS.register("test_bn_mlp", NoParams, modalities=("tabular",))
        def _bn(params, input_shape, num_classes):
            return nn.Sequential(nn.Linear(input_shape[0], 8), nn.BatchNorm1d(8), nn.ReLU(),
                                 nn.Linear(8, num_classes))

    cfg = load_config(raw={}, overrides=["model.name=test_bn_mlp", "privacy.mode=dp_sgd"])
    s = build_setup(cfg)
    assert s.dp_fix
    model = s.new_model()
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    v, m = local_train(s, s.data.hospitals[0], co_vec(s), 1, {})
    assert math.isfinite(m["epsilon"]) and v.shape == co_vec(s).shape


def co_vec(setup):
    from fedmedsec.training import state_vector

    return state_vector(setup.new_model())


def test_inprocess_run_reports_loss_and_lira_membership_inference(tmp_path, check_run_dir):
    from fedmedsec.engine import run_experiment

    cfg = load_config(raw={}, overrides=["experiment.rounds=2", "simulation.backend=inprocess",
                                         "experiment.mia_lira_shadows=4"])
    s = run_experiment(cfg, tmp_path)
    assert check_run_dir(tmp_path) == []
    mia = s["membership_inference"]
    assert mia["attack"] == "loss_threshold" and 0 <= mia["auc"] <= 1
    assert mia["lira"]["attack"] == "lira_offline" and mia["lira"]["shadows"] == 4
    assert 0 <= mia["lira"]["auc"] <= 1 and 0 <= mia["lira"]["tpr_at_1pct_fpr"] <= 1


def test_a_failed_precondition_in_a_round_is_recorded_not_raised():
    """Dropped replies leave Krum fewer rows than it needs (n > 2f + 2): the round keeps the
    global model and says why; bucketing halves the rows the same way."""
    for overrides, n_valid in ((["defense.name=krum", "defense.f=2"], 5),
                               (["defense.name=krum", "defense.f=2", 'defense.pre=["bucketing"]'], 10)):
        co = _co(*overrides, "data.num_hospitals=20") if n_valid == 10 else _co(*overrides)
        g = co.global_vec.clone()
        ids = list(range(co.setup.n))
        co.sample(1, ids)
        replies = [ClientReply(i, g + 0.01 * (i + 1), 10) for i in ids[:n_valid]]
        replies += [ClientReply(i, None, 0, problem="no reply") for i in ids[n_valid:]]
        co.aggregate(1, replies)
        assert torch.equal(co.global_vec, g)
        row = co.end_round(1, [], 0.0)
        assert row["round_problem"].startswith("precondition failed: krum needs n > 2f + 2"), row["round_problem"]
        assert row["accepted"] == 0
