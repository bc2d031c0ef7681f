"""Model poisoning attacks, each against its paper's defining property."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from fedmedsec.aggregators.base import AggregationContext
from fedmedsec.aggregators.mean import mean as fedavg
from fedmedsec.attacks import AttackContext, make_attack
from fedmedsec.attacks.model import (
    alie_z,
    fang_krum,
    fang_trimmed_mean,
    krum_index,
    largest_gamma,
    min_max_update,
    min_sum_update,
)
from fedmedsec.attacks.model.min_max import perturbation

CTX = AttackContext(modality="tabular", num_classes=2, input_shape=(5,), n_clients=10)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def honest_updates(n=12, d=30, seed=0, dtype=torch.float64):
    g = gen(seed)
    return (0.5 + torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)


def collude(name, params, honest, m=3, ctx=CTX, seed=0):
    atk = make_attack(name, params, ctx)
    assert atk.needs_honest_updates
    assert atk.threat.adversary == "colluding hospitals"
    assert atk.threat.knowledge == "honest updates"
    mal_in = torch.zeros(m, honest.shape[1], dtype=honest.dtype)
    h0, m0 = honest.clone(), mal_in.clone()
    out = atk.collude(honest, mal_in, gen(seed), ctx)
    assert torch.equal(honest, h0) and torch.equal(mal_in, m0)  # no mutation
    assert out.shape == mal_in.shape and out.dtype == honest.dtype
    return atk, out


# ---------------------------------------------------------------- own-update attacks


def test_sign_flip_exact():
    u = torch.randn(20)
    u0 = u.clone()
    out = make_attack("sign_flip", {"scale": 2.5}, CTX).poison_update(u, gen(), CTX)
    assert torch.equal(u, u0) and torch.equal(out, -2.5 * u0)
    assert torch.equal(make_attack("sign_flip", {}, CTX).poison_update(u, gen(), CTX), -u0)


def test_gaussian_distribution_and_seed():
    u = torch.ones(20000)
    atk = make_attack("gaussian", {"sigma": 3.0}, CTX)
    a = atk.poison_update(u, gen(1), CTX)
    assert torch.equal(a, atk.poison_update(u, gen(1), CTX))
    assert abs(float(a.mean())) < 0.1 and abs(float(a.std()) - 3.0) < 0.1
    assert torch.equal(u, torch.ones(20000))


def test_scaling_replaces_global_under_fedavg():
    """Bagdasaryan et al.: gamma = n makes mean(updates) = X - G with n - 1 honest ~0 updates."""
    n, d = 10, 50
    g = gen(3)
    G = torch.randn(d, generator=g, dtype=torch.float64)
    X = torch.randn(d, generator=g, dtype=torch.float64)  # the attacker's (backdoored) model
    honest = 1e-4 * torch.randn(n - 1, d, generator=g, dtype=torch.float64)
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(5,), n_clients=n)
    atk = make_attack("scaling", {}, ctx)  # boost defaults to n
    mal = atk.poison_update(X - G, gen(), ctx)
    assert torch.allclose(mal, n * (X - G))
    agg = fedavg(torch.cat([honest, mal[None]]), AggregationContext()).aggregate
    new_global = G + agg
    assert torch.allclose(new_global, X, atol=1e-3)
    # without boosting the attacker's model is diluted n-fold
    diluted = G + fedavg(torch.cat([honest, (X - G)[None]]), AggregationContext()).aggregate
    assert (diluted - X).norm() > 0.5 * (G - X).norm()
    boosted = make_attack("scaling", {"boost": 3}, ctx).poison_update(X, gen(), ctx)
    assert torch.allclose(boosted, 3 * X)


# ---------------------------------------------------------------- ALIE


def test_alie_z_matches_paper():
    # n = 50, m = 10: s = floor(26) - 10 = 16, z = ppf(34 / 50) = ppf(0.68)
    assert alie_z(50, 10) == pytest.approx(norm.ppf(0.68))
    assert alie_z(50, 10) == pytest.approx(0.4676987991, abs=1e-9)
    # the cdf (a known bug in one port) would give a different number
    assert abs(alie_z(50, 10) - norm.cdf(0.68)) > 0.2
    for n, m in [(10, 2), (20, 4), (100, 20), (7, 1)]:
        s = math.floor(n / 2 + 1) - m
        assert alie_z(n, m) == pytest.approx(norm.ppf((n - s) / n))


@settings(max_examples=25, deadline=None)
@given(n_h=st.integers(2, 30), m=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_alie_within_z_sigma_of_mean(n_h, m, seed):
    honest = honest_updates(n_h, 16, seed)
    _, out = collude("alie", {}, honest, m=m)
    z = alie_z(n_h + m, m)
    mu, sigma = honest.mean(0), honest.std(0)
    assert torch.allclose(out, (mu - z * sigma).expand(m, -1))
    assert torch.all((out - mu).abs() <= z * sigma + 1e-12)
    assert torch.all(out == out[0])  # all colluders send the same vector


def test_alie_z_override():
    honest = honest_updates()
    _, out = collude("alie", {"z": 1.5}, honest)
    assert torch.allclose(out[0], honest.mean(0) - 1.5 * honest.std(0))


# ---------------------------------------------------------------- IPM


def test_ipm_exact():
    honest = honest_updates()
    _, out = collude("ipm", {"epsilon": 0.3}, honest)
    assert torch.allclose(out, (-0.3 * honest.mean(0)).expand(3, -1))
    _, out = collude("ipm", {}, honest)
    assert torch.allclose(out[1], -0.1 * honest.mean(0))
    assert float(out[0] @ honest.mean(0)) < 0


# ---------------------------------------------------------------- min-max / min-sum


def max_dist(mal, h):
    return float((h - mal).norm(dim=1).max())


def sum_sq(mal, h):
    return float(((h - mal) ** 2).sum())


def thresholds(h):
    d = torch.cdist(h, h)
    return float(d.max()), float((d**2).sum(1).max())


@settings(max_examples=20, deadline=None)
@given(
    n_h=st.integers(3, 20),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["std", "unit_vec", "sign"]),
)
def test_min_max_property_and_maximal_gamma(n_h, seed, kind):
    h = honest_updates(n_h, 24, seed)
    mal, gamma = min_max_update(h, kind)
    t_max, _ = thresholds(h)
    assert max_dist(mal, h) <= t_max * (1 + 1e-9)
    mu, p = h.mean(0), perturbation(h, kind)
    assert torch.allclose(mal, mu + gamma * p)
    assert gamma > 0
    assert max_dist(mu + gamma * (1 + 1e-3) * p, h) > t_max  # maximal
    # the wrapped attack sends the same vector from every colluder
    atk, out = collude("min_max", {"perturbation": kind}, h)
    assert torch.allclose(out, mal.expand(3, -1)) and atk.last_gamma == pytest.approx(gamma)


@settings(max_examples=20, deadline=None)
@given(
    n_h=st.integers(3, 20),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["std", "unit_vec", "sign"]),
)
def test_min_sum_property_and_maximal_gamma(n_h, seed, kind):
    h = honest_updates(n_h, 24, seed)
    mal, gamma = min_sum_update(h, kind)
    _, t_sum = thresholds(h)
    assert sum_sq(mal, h) <= t_sum * (1 + 1e-9)
    mu, p = h.mean(0), perturbation(h, kind)
    assert gamma > 0
    assert sum_sq(mu + gamma * (1 + 1e-3) * p, h) > t_sum  # maximal
    _, out = collude("min_sum", {"perturbation": kind}, h)
    assert torch.allclose(out, mal.expand(3, -1))


def test_min_max_gamma_beyond_initial_bracket():
    """gamma* can exceed 2 * gamma_init (where the paper's fixed-step search stops)."""
    h = honest_updates(10, 24, 5)
    mal, gamma = min_max_update(h, "unit_vec", gamma_init=0.01)
    assert gamma > 0.02
    assert max_dist(h.mean(0) + gamma * 1.001 * perturbation(h, "unit_vec"), h) > max_dist(mal, h)


def test_min_max_float32_input():
    h = honest_updates(8, 24, 1, dtype=torch.float32)
    mal, _ = min_max_update(h)
    assert mal.dtype == torch.float32
    assert max_dist(mal.double(), h.double()) <= thresholds(h.double())[0] * (1 + 1e-5)


@settings(max_examples=50, deadline=None)
@given(g_star=st.floats(1e-3, 1e4), g0=st.floats(1e-2, 100))
def test_largest_gamma_returns_last_success(g_star, g0):
    calls = []

    def feasible(g):
        calls.append(g)
        return g <= g_star

    got = largest_gamma(feasible, g0, 1e-5)
    assert got <= g_star and got >= g_star * (1 - 2e-5)


def test_largest_gamma_only_zero_feasible():
    assert largest_gamma(lambda g: g <= 0, 10.0, 1e-5) == 0.0


# ---------------------------------------------------------------- Fang


def test_fang_trimmed_mean_beyond_honest_range_opposite_to_benign_direction():
    h = honest_updates(12, 40, 2) - 0.5  # mixed signs per coordinate
    m = 4
    out = fang_trimmed_mean(h, m, gen(1))
    s = torch.sign(h.mean(0))
    w_max, w_min = h.max(0).values, h.min(0).values
    up, down = s < 0, s > 0
    assert torch.all(out[:, up] >= w_max[up]) and torch.all(out[:, down] <= w_min[down])
    # the paper's sampling intervals, factor b = 2
    hi_up = torch.where(w_max > 0, 2 * w_max, w_max / 2)
    lo_down = torch.where(w_min > 0, w_min / 2, 2 * w_min)
    assert torch.all(out[:, up] <= hi_up[up]) and torch.all(out[:, down] >= lo_down[down])
    # each attacker samples its own values; the median moves against the benign direction
    assert not torch.equal(out[0], out[1])
    med = torch.cat([h, out]).median(0).values
    assert torch.all((med - h.median(0).values)[up] >= 0)
    assert torch.all((med - h.median(0).values)[down] <= 0)


def test_fang_collude_trimmed_mean_and_krum():
    h = honest_updates(12, 40, 3)
    atk, out = collude("fang", {}, h, m=4)
    assert atk.threat.adversary == "colluding hospitals"
    atk, out = collude("fang", {"target_rule": "krum"}, h, m=4)
    s = torch.sign(h.mean(0))
    lam = atk.last_lambda
    assert torch.allclose(out[0], -lam * s) and torch.all(out == out[0])


def test_fang_krum_is_selected_by_krum():
    for seed in range(5):
        h = honest_updates(15, 40, seed)
        m = 5
        mal, lam = fang_krum(h, m, f=m)
        assert lam > 1e-5
        stacked = torch.cat([h, mal.expand(m, -1)])
        assert krum_index(stacked, m) >= 15  # Krum picks a crafted update
        assert float(mal @ h.mean(0)) < 0  # ... which points against the benign direction


def test_krum_index_reference():
    # three close points and one far outlier: Krum must not pick the outlier
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [9.0, 9.0]])
    assert krum_index(x, 1) in (0, 1, 2)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("alie", {"z": -1}, "attack.z = -1"),
        ("ipm", {"epsilon": 0}, "attack.epsilon = 0"),
        ("min_max", {"perturbation": "cosine"}, "attack.perturbation = 'cosine'"),
        ("min_sum", {"gamma_init": -2}, "attack.gamma_init = -2"),
        ("fang", {"target_rule": "bulyan"}, "attack.target_rule = 'bulyan'"),
        ("sign_flip", {"scale": 0}, "attack.scale = 0"),
        ("gaussian", {"sigma": -1}, "attack.sigma = -1"),
        ("scaling", {"boost": 0}, "attack.boost = 0"),
        ("scaling", {"bost": 2}, "attack.bost: unknown key"),
    ],
)
def test_bad_params_one_line(name, params, needle):
    with pytest.raises(ValueError) as exc:
        make_attack(name, params, CTX)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_attack_lists_choices():
    with pytest.raises(ValueError) as exc:
        make_attack("alie2", {}, CTX)
    assert "attack.name = 'alie2'" in str(exc.value) and "min_max" in str(exc.value)


def test_model_attacks_pass_data_through():
    x = np.ones((4, 5), dtype=np.float32)
    y = np.zeros(4, dtype=np.int64)
    for name in ["sign_flip", "gaussian", "scaling", "alie", "ipm", "min_max", "fang"]:
        atk = make_attack(name, {}, CTX)
        x2, y2 = atk.poison_data(x, y, np.random.default_rng(0), CTX)
        assert np.array_equal(x2, x) and np.array_equal(y2, y)
        assert atk.asr_inputs(x, y, CTX) is None


def test_min_sum_gamma_matches_closed_form():
    """sum_i ||mu + g p - x_i||^2 = S0 + n g^2 ||p||^2 (the cross term vanishes at the mean),
    so the largest feasible gamma is sqrt((T - S0) / (n ||p||^2)): an independent check."""
    for seed in range(5):
        h = honest_updates(9, 24, seed)
        _, gamma = min_sum_update(h, "std")
        _, t_sum = thresholds(h)
        s0 = float(((h - h.mean(0)) ** 2).sum())
        p = perturbation(h, "std")
        assert gamma == pytest.approx(math.sqrt((t_sum - s0) / (9 * float(p @ p))), rel=1e-4)


# ---------------------------------------------------------------- AGR-tailored (NDSS 2021)


def rule_of(name, **params):
    from fedmedsec.aggregators import AGGREGATORS

    entry = AGGREGATORS.get(name)
    return entry.obj(entry.params.model_validate(params))


def crafted_selected(rule, h, mal, m, f):
    from fedmedsec.aggregators import AggregationContext

    res = rule(torch.cat([h, mal.expand(m, -1)]), AggregationContext(f=f))
    w = res.weights
    return bool((w[h.shape[0]:] > 0).all()) or (int((w > 0).sum()) == 1 and bool((w[h.shape[0]:] > 0).any()))


def agr_shift(rule, h, mal, m, f):
    from fedmedsec.aggregators import AggregationContext

    res = rule(torch.cat([h, mal.expand(m, -1)]), AggregationContext(f=f))
    return float((res.aggregate.double() - h.double().mean(0)).norm())


def tailored(rule_name, h, m, f, params=None, knowledge="full", n_clients=None, seed=0, **ctx_kw):
    ctx = AttackContext(
        modality="tabular", num_classes=2, input_shape=(5,), f=f, defense_rule=rule_name,
        n_clients=n_clients or h.shape[0] + m, knowledge=knowledge, **ctx_kw,
    )
    atk = make_attack("agr_tailored", params or {}, ctx)
    mal_in = h[:m].clone() if knowledge == "partial" else torch.zeros(m, h.shape[1], dtype=h.dtype)
    ref = h[:m] if knowledge == "partial" else h
    out = atk.collude(ref, mal_in, gen(seed), ctx)
    assert out.shape == mal_in.shape and torch.all(out == out[0])
    return atk, out[0]


SELECTING_CASES = [("krum", 12, 3, 3), ("multi_krum", 12, 3, 3), ("bulyan", 9, 2, 2), ("krum", 6, 1, 1)]


@pytest.mark.parametrize("rule_name, n_h, m, f", SELECTING_CASES)
@pytest.mark.parametrize("direction", ["std", "unit_mean", "sign"])
def test_agr_tailored_selected_at_gamma_and_not_beyond(rule_name, n_h, m, f, direction):
    """Krum/Multi-Krum/Bulyan: the rule selects the crafted update at the returned gamma and
    rejects it at gamma * (1 + 3e-3) (the margin is 1e-3): the largest gamma the rule accepts
    (paper Sec. IV-B), and the copies are selected wherever they sit among the rows."""
    rule = rule_of(rule_name)
    for seed in range(4):
        h = honest_updates(n_h, 40, seed)
        atk, mal = tailored(rule_name, h, m, f, {"direction": direction})
        gamma = atk.last.gamma
        mu, p = h.mean(0), perturbation(h, "unit_vec" if direction == "unit_mean" else direction)
        assert atk.last.selected and gamma > 0
        assert torch.allclose(mal, mu + gamma * p)
        assert crafted_selected(rule, h, mal, m, f)
        from fedmedsec.aggregators import AggregationContext

        for perm_seed in range(3):  # the copies anywhere among the rows
            n = n_h + m
            pos = torch.randperm(n, generator=gen(perm_seed))[:m]
            rows_ = torch.empty(n, h.shape[1], dtype=h.dtype)
            is_mal = torch.zeros(n, dtype=torch.bool)
            is_mal[pos] = True
            rows_[is_mal], rows_[~is_mal] = mal, h
            w = rule(rows_, AggregationContext(f=f)).weights
            assert bool((w[is_mal] > 0).all()) or (int((w > 0).sum()) == 1 and bool((w[is_mal] > 0).any()))
        assert not crafted_selected(rule, h, mu + gamma * (1 + 3e-3) * p, m, f)
        # brute force: no gamma on a grid beyond 1.003 gamma up to 20 gamma is selected
        for g in np.linspace(gamma * 1.003, 20 * gamma, 60):
            assert not crafted_selected(rule, h, mu + float(g) * p, m, f)


@pytest.mark.parametrize("rule_name, params", [("median", {}), ("trimmed_mean", {}),
                                               ("trimmed_mean", {"beta": 0.3})])
def test_agr_tailored_coordinate_rules_maximise_the_shift(rule_name, params):
    """Median / trimmed mean: the returned gamma maximises ||f_agr(benign + m mal) - mu||
    (brute-force grid), so the tailored shift is at least the AGR-agnostic min-max and
    min-sum shifts on the same inputs."""
    rule = rule_of(rule_name, **params)
    n_h, m, f = 12, 3, 3
    for seed in range(4):
        h = honest_updates(n_h, 40, seed)
        atk, mal = tailored(rule_name, h, m, f, defense_params=params)
        best = atk.last.objective
        assert best == pytest.approx(agr_shift(rule, h, mal, m, f), rel=1e-12)
        for agnostic in (min_max_update, min_sum_update):
            assert best >= agr_shift(rule, h, agnostic(h)[0], m, f) * (1 - 1e-12)
        mu, p = h.mean(0), perturbation(h, "std")
        grid = np.concatenate([np.linspace(0, 10, 1001), np.geomspace(1e-3, 1e4, 200)])
        brute = max(agr_shift(rule, h, mu + float(g) * p, m, f) for g in grid)
        assert best >= brute * (1 - 1e-6)


def test_agr_tailored_uses_the_deployed_rule_and_its_params():
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(5,), f=2, n_clients=15,
                        defense_rule="trimmed_mean", defense_params={"beta": 0.25})
    atk = make_attack("agr_tailored", {}, ctx)
    assert atk.rule_name == "trimmed_mean" and atk.threat.knowledge == "honest updates, aggregation rule"
    from fedmedsec.aggregators import AggregationContext

    x = honest_updates(15, 30, 2)
    assert torch.equal(atk.rule(x, AggregationContext(f=2)).aggregate,
                       rule_of("trimmed_mean", beta=0.25)(x, AggregationContext(f=2)).aggregate)
    # an explicit attack.rule other than the deployed one takes that rule's defaults
    atk = make_attack("agr_tailored", {"rule": "median"}, ctx)
    assert atk.rule_name == "median"
    assert atk.threat_for("partial").knowledge == "own benign updates, aggregation rule"


@pytest.mark.parametrize("params, defense, needle", [
    ({}, None, "attack.rule: not set"),
    ({}, "fedavg", "defense.name = 'fedavg'"),
    ({"rule": "flame"}, "krum", "attack.rule = 'flame'"),
    ({"direction": "cos"}, "krum", "attack.direction = 'cos'"),
    ({"tau": 2}, "krum", "attack.tau = 2"),
])
def test_agr_tailored_bad_config(params, defense, needle):
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(5,), defense_rule=defense)
    with pytest.raises(ValueError) as exc:
        make_attack("agr_tailored", params, ctx)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_agr_tailored_bad_defense_params_name_the_defense_key():
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(5,), defense_rule="trimmed_mean",
                        defense_params={"beta": 0.9})
    with pytest.raises(ValueError, match=r"defense\.beta = 0\.9"):
        make_attack("agr_tailored", {}, ctx)


@pytest.mark.parametrize("rule_name", ["krum", "multi_krum", "bulyan", "median", "trimmed_mean"])
@pytest.mark.parametrize("m", [1, 3])
def test_agr_tailored_partial_knowledge(rule_name, m):
    """Partial knowledge: the attackers craft from their own benign rows (mean and direction
    of the reference only) and simulate the round's n - m benign rows; the round's f applies
    (lowered when the simulated rule would refuse it)."""
    n, f = 15, 3
    h = honest_updates(n, 30, 4)
    atk, mal = tailored(rule_name, h, m, f, knowledge="partial", n_clients=n)
    assert atk.threat.knowledge == "own benign updates, aggregation rule"
    ref = h[:m]
    mu, p = ref.mean(0), perturbation(ref, "std")
    assert torch.allclose(mal, mu + atk.last.gamma * p)
    assert torch.isfinite(mal).all() and atk.last.f is not None and atk.last.f <= f
    if m == 1:  # one row: sigma = |x| (the documented fallback), still a real perturbation
        assert torch.allclose(p, -ref[0].abs()) and atk.last.gamma > 0
    # the collusion is reproducible from its generator
    _, mal2 = tailored(rule_name, h, m, f, knowledge="partial", n_clients=n)
    assert torch.equal(mal, mal2)


# ---------------------------------------------------------------- accuracy far from the origin


def direct_dists(h):
    """Reference: pairwise distances by direct float64 differences."""
    h = h.double()
    return torch.stack([(h - h[i]).norm(dim=1) for i in range(h.shape[0])])


@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
@pytest.mark.parametrize("seed", range(4))
def test_min_max_min_sum_constraint_holds_far_from_the_origin(kind, seed):
    """Rows at offset 1e4 with spread 1e-2: the uncentred Gram lost ~1e-6 relative of the
    threshold; now the constraint holds to float64 rounding (direct differences)."""
    g = gen(seed)
    h = 1e4 + 1e-2 * torch.randn(10, 64, generator=g, dtype=torch.float64)
    dist = direct_dists(h)
    mal, gamma = min_max_update(h, kind)
    assert gamma > 0
    assert float((mal - h).norm(dim=1).max()) <= float(dist.max()) * (1 + 1e-12)
    mal, gamma = min_sum_update(h, kind)
    assert gamma > 0
    assert float(((mal - h) ** 2).sum()) <= float((dist ** 2).sum(1).max()) * (1 + 1e-12)


def test_pairwise_sq_dists_accurate_far_from_the_origin():
    from fedmedsec.attacks.model._common import pairwise_sq_dists

    h = 1e4 + 1e-2 * torch.randn(8, 200, generator=gen(1), dtype=torch.float64)
    ref = direct_dists(h) ** 2
    assert torch.allclose(pairwise_sq_dists(h), ref, rtol=1e-10, atol=0)
    h[0] = 1e8  # one huge row (an attacker) does not spoil the others' distances
    ref = direct_dists(h) ** 2
    assert torch.allclose(pairwise_sq_dists(h)[1:, 1:], ref[1:, 1:], rtol=1e-8, atol=0)


# ---------------------------------------------------------------- knowledge levels


def ctx_k(knowledge, n=20, f=0):
    return AttackContext(modality="tabular", num_classes=2, input_shape=(5,), n_clients=n,
                         knowledge=knowledge, f=f, defense_rule="median")


@pytest.mark.parametrize("m", [2, 4, 7])
def test_partial_knowledge_alie_uses_exactly_the_reference_statistics(m):
    """Partial knowledge (NDSS 2021 Sec. III-B): ALIE from the m attackers' own benign rows:
    their mean and sample std, and z from the round's n (ctx.n_clients), not n_ref + m."""
    n = 20
    own = honest_updates(m, 16, 9)
    atk = make_attack("alie", {}, ctx_k("partial", n))
    assert atk.threat.knowledge == "own benign updates"
    out = atk.collude(own, own.clone(), gen(), ctx_k("partial", n))
    z = alie_z(n, m)
    assert torch.allclose(out, (own.mean(0) - z * own.std(0, correction=1)).expand(m, -1))
    # full knowledge: the same rows are the honest set, n = n_h + m
    full = make_attack("alie", {}, ctx_k("full", n)).collude(own, own.clone(), gen(), ctx_k("full", n))
    assert torch.allclose(full[0], own.mean(0) - alie_z(2 * m, m) * own.std(0))
    assert make_attack("alie", {}, ctx_k("full")).threat.knowledge == "honest updates"


@pytest.mark.parametrize("name, params", [
    ("alie", {}), ("ipm", {}), ("min_max", {}), ("min_sum", {}), ("fang", {}),
    ("fang", {"target_rule": "krum"}), ("agr_tailored", {}),
])
@pytest.mark.parametrize("m", [1, 2, 5])
def test_every_colluding_attack_runs_on_the_attackers_own_rows(name, params, m):
    """Partial knowledge with the reference = the m attackers' own benign updates, m = 1
    included: a finite, non-benign update, a partial threat model, reproducible."""
    own = honest_updates(m, 24, 3)
    ctx = ctx_k("partial", n=20, f=m)
    atk = make_attack(name, params, ctx)
    assert atk.threat.knowledge.startswith("own benign updates")
    assert atk.threat_for("full").knowledge.startswith("honest updates")
    assert atk.threat_for("partial") == atk.threat
    out = atk.collude(own, own.clone(), gen(5), ctx)
    assert out.shape == own.shape and torch.isfinite(out).all()
    assert torch.equal(out, atk.collude(own, own.clone(), gen(5), ctx))
    if name == "alie" and alie_z(20, m) == 0:  # the paper's z: s = 10 of 20 -> ppf(0.5) = 0
        assert torch.allclose(out, own.mean(0).expand(m, -1))
    else:
        assert (out.mean(0) - own.mean(0)).norm() > 1e-3 * own.mean(0).norm()  # it deviates


def test_single_reference_row_fallback():
    """One reference row: sigma = |x| (SINGLE_ROW_CV = 1); min-max threshold sqrt(2)||x||,
    so with p = -std the crafted update is x - sqrt(2)|x| (gamma = sqrt 2)."""
    x = honest_updates(1, 12, 2)
    mal, gamma = min_max_update(x, "std")
    assert gamma == pytest.approx(math.sqrt(2), rel=1e-4)
    assert torch.allclose(mal, x[0] - gamma * x[0].abs())
    mal, gamma = min_sum_update(x, "std")  # ||mal - x||^2 <= 2 ||x||^2: the same gamma
    assert gamma == pytest.approx(math.sqrt(2), rel=1e-4)
    atk = make_attack("fang", {}, ctx_k("partial"))
    out = atk.collude(x, x.clone(), gen(1), ctx_k("partial"))
    s = torch.sign(x[0])
    lo = torch.where(s < 0, x[0] + 3 * x[0].abs(), x[0] - 4 * x[0].abs())
    assert torch.all(out[0] >= lo - 1e-12) and torch.all(out[0] <= lo + x[0].abs() + 1e-12)


def test_threat_for_rejects_unknown_level():
    with pytest.raises(ValueError, match="attack.knowledge = 'some'"):
        make_attack("alie", {}, CTX).threat_for("some")
    assert make_attack("sign_flip", {}, CTX).threat_for("partial").knowledge == "own update"
