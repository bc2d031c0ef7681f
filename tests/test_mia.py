"""Membership inference: loss threshold (Yeom et al. 2018) and offline LiRA (Carlini et al.
2022), measured by ROC AUC and TPR at 1% FPR on balanced member / non-member sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmedsec.privacy import (
    balanced_members,
    lira_offline,
    logit_confidence,
    loss_threshold_attack,
    mia_evaluate,
    per_example_losses,
    train_dp_sgd,
)

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
D = 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def random_label_task(seed: int, n: int):
    """Features carry no information about the labels: only memorisation lowers a loss."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, 2, n).astype(np.int64)


def mlp(seed: int, width: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, width), nn.ReLU(), nn.Linear(width, 2))


def fit(x, y, seed=0, steps=300) -> nn.Module:
    m = mlp(seed, 64)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(xt), yt).backward()
        opt.step()
    return m


# ---------------------------------------------------------------- ROC summary


def test_identical_distributions_give_auc_one_half():
    rng = np.random.default_rng(0)
    res = loss_threshold_attack(rng.exponential(size=3000), rng.exponential(size=3000))
    assert res.auc == pytest.approx(0.5, abs=0.03)
    assert 0.0 <= res.tpr_at_1pct_fpr <= 0.05
    assert (res.n_members, res.n_nonmembers, res.attack) == (3000, 3000, "loss_threshold")


def test_separated_and_reversed_losses():
    low, high = np.linspace(0, 1, 100), np.linspace(2, 3, 100)
    perfect = loss_threshold_attack(low, high)  # members have the lower loss
    assert perfect.auc == 1.0 and perfect.tpr_at_1pct_fpr == 1.0
    wrong = loss_threshold_attack(high, low)
    assert wrong.auc == 0.0 and wrong.tpr_at_1pct_fpr == 0.0


def test_tpr_at_one_percent_fpr_read_off_the_roc():
    # 200 non-members with losses 1..200; members: 30 with loss 0.5 (beat every non-member),
    # 70 with loss 1000. The ROC goes (0, 0) -> (0, 0.3) -> (1/200, 0.3) -> (2/200, 0.3)...
    non = np.arange(1, 201, dtype=float)
    mem = np.r_[np.full(30, 0.5), np.full(70, 1000.0)]
    res = loss_threshold_attack(mem, non)
    assert res.tpr_at_1pct_fpr == pytest.approx(0.3)
    assert res.auc == pytest.approx(0.3)


def test_balanced_members():
    rng = np.random.default_rng(0)
    mi, ni = balanced_members(50, 400, rng)
    assert len(mi) == len(ni) == 50
    assert len(set(ni)) == 50 and ni.max() < 400 and sorted(mi) == list(range(50))
    mi2, ni2 = balanced_members(50, 400, np.random.default_rng(0))
    assert np.array_equal(ni, ni2)
    with pytest.raises(ValueError):
        balanced_members(0, 10, rng)


def test_per_example_losses_and_logit_confidence():
    x, y = random_label_task(0, 37)
    m = mlp(0)
    m.train()
    losses = per_example_losses(m, x, y, batch_size=8)
    assert m.training  # mode restored
    with torch.no_grad():
        logits = m(torch.tensor(x)).double()
    p = torch.softmax(logits, 1)[torch.arange(37), torch.tensor(y)].numpy()
    # the model computes in float32: agree to float32 resolution (absolute near zero)
    np.testing.assert_allclose(losses, -np.log(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logit_confidence(m, x, y, 5), np.log(p / (1 - p)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- end to end


def test_memorisation_is_detected_and_dp_sgd_hides_it():
    """Random labels: a model can only fit members by memorising them. Same recipe with
    sigma = 5, C = 1 (epsilon ~ 1) brings the attack back to guessing."""
    x, y = random_label_task(1, 400)
    members, nonmembers = (x[:200], y[:200]), (x[200:], y[200:])
    kw = dict(epochs=15, batch_size=20, lr=0.1, momentum=0.9, history=[], delta=1e-5)

    plain = mlp(1)
    train_dp_sgd(plain, *members, noise_multiplier=0.0, max_grad_norm=1e6,
                 generator=torch.Generator().manual_seed(1), **kw)
    leak = mia_evaluate(plain, members, nonmembers, np.random.default_rng(0))
    assert leak["attack"] == "loss_threshold" and leak["n"] == 200
    assert leak["auc"] > 0.7

    private = mlp(1)
    res = train_dp_sgd(private, *members, noise_multiplier=5.0, max_grad_norm=1.0,
                       generator=torch.Generator().manual_seed(1), **kw)
    assert res.epsilon < 1.5
    safe = mia_evaluate(private, members, nonmembers, np.random.default_rng(0))
    assert abs(safe["auc"] - 0.5) < 0.1
    assert safe["auc"] < leak["auc"] - 0.15
    for r in (leak, safe):
        assert 0.0 <= r["tpr_at_1pct_fpr"] <= 1.0


# ---------------------------------------------------------------- offline LiRA


class _Fixed(nn.Module):
    """Returns the logits stored for each (integer-coded) input row."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x):
        return self.table[x[:, 0].long()]


def test_lira_score_is_the_out_gaussian_z_score():
    T, k = 6, 4
    rng = np.random.default_rng(0)
    x = np.arange(T, dtype=np.float32)[:, None]
    y = np.zeros(T, dtype=np.int64)
    shadow_phi = rng.normal(size=(k, T))  # logits (phi, 0): phi is the logit confidence
    target_phi = rng.normal(size=T) + 2.0
    seen: list[np.ndarray] = []

    def train_shadow(idx):
        seen.append(idx)
        s = shadow_phi[len(seen) - 1]
        return _Fixed(torch.tensor(np.c_[s, np.zeros(T)], dtype=torch.float32))

    target = _Fixed(torch.tensor(np.c_[target_phi, np.zeros(T)], dtype=torch.float32))
    member = np.array([1, 1, 1, 0, 0, 0], bool)
    for fixed in (False, True):
        seen.clear()
        res, scores = lira_offline(target, x, y, member, 50, train_shadow,
                                   np.random.default_rng(1), k=k, fixed_variance=fixed)
        mu = shadow_phi.mean(0)
        sd = shadow_phi.std(0, ddof=1)
        if fixed:
            sd = np.full(T, np.sqrt(np.mean(shadow_phi.var(0, ddof=1))))
        np.testing.assert_allclose(scores, (target_phi - mu) / sd, rtol=1e-5)
        assert res.attack == "lira_offline" and (res.n_members, res.n_nonmembers) == (3, 3)
        # each shadow trains on a random half of the attacker's population
        assert len(seen) == k and all(len(i) == 25 and len(set(i)) == 25 for i in seen)
        assert all(i.max() < 50 for i in seen)
        assert not all(np.array_equal(seen[0], i) for i in seen[1:])


def test_lira_detects_memorisation_and_not_a_non_member_model():
    x, y = random_label_task(2, 600)
    xt, yt = x[:200], y[:200]  # targets; the attacker's population is x[200:]
    member = np.zeros(200, bool)
    member[:100] = True
    px, py = x[200:], y[200:]
    count = [0]

    def train_shadow(idx):
        count[0] += 1
        return fit(px[idx], py[idx], seed=100 + count[0])

    target = fit(xt[member], yt[member])
    res, _ = lira_offline(target, xt, yt, member, 400, train_shadow, np.random.default_rng(0))
    assert res.auc > 0.7

    # a model that never saw any target: "members" are members in name only
    outsider = fit(px[:200], py[:200], seed=7)
    res0, _ = lira_offline(outsider, xt, yt, member, 400, train_shadow,
                           np.random.default_rng(0), k=4)
    assert abs(res0.auc - 0.5) < 0.12


def test_merged_hospital_audits_equal_the_pooled_loss_attack():
    from fedmedsec.privacy.mia import histogram_of, hospital_audit, roc_from_histograms

    m = mlp(0)
    audits, lm, ln = [], [], []
    for h in range(4):
        x, y = random_label_task(h, 30)
        xt, yt = random_label_task(h + 10, 20)
        audits.append(hospital_audit(m, (x, y), (xt, yt)))
        lm.append(per_example_losses(m, x, y))
        ln.append(per_example_losses(m, xt, yt))
    pooled = loss_threshold_attack(np.concatenate(lm), np.concatenate(ln))
    merged = roc_from_histograms(sum(histogram_of(a, "members") for a in audits),
                                 sum(histogram_of(a, "nonmembers") for a in audits))
    assert merged.auc == pytest.approx(pooled.auc, abs=2e-3)
    assert merged.n_members == 120 and merged.n_nonmembers == 80
    assert all(a["auc"] is not None for a in audits)
