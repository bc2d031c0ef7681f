"""Data poisoning attacks and attacker selection, against their defining properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmedsec.attacks import (
    ATTACKS,
    NO_THREAT,
    TRIGGERS,
    AttackContext,
    active_rounds,
    check_schedule,
    choose_attackers,
    is_active,
    make_attack,
)
from fedmedsec.attacks.data.triggers import split_units

F = 8


def tab_ctx(num_classes=3, n_attackers=1, attacker_index=0):
    return AttackContext(
        modality="tabular",
        num_classes=num_classes,
        input_shape=(F,),
        n_attackers=n_attackers,
        attacker_index=attacker_index,
        feature_low=np.full(F, -2.0),
        feature_high=np.full(F, 3.0),
    )


def data(n=100, num_classes=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.uniform(-2, 3, size=(n, F)).astype(np.float32)
    y = r.integers(0, num_classes, size=n).astype(np.int64)
    return x, y


def one_line_error(name, params, ctx, *needles):
    with pytest.raises(ValueError) as exc:
        make_attack(name, params, ctx)
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ---------------------------------------------------------------- none


def test_none_is_identity():
    ctx = tab_ctx()
    atk = make_attack("none", {}, ctx)
    assert atk.threat == NO_THREAT and atk.target_label is None
    x, y = data()
    x2, y2 = atk.poison_data(x, y, np.random.default_rng(0), ctx)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert atk.asr_inputs(x, y, ctx) is None


# ---------------------------------------------------------------- label flip


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0, 1), n=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_untargeted_flip_exact_share(rate, n, seed):
    ctx = tab_ctx(num_classes=4)
    x, y = data(n, 4, seed)
    x0, y0 = x.copy(), y.copy()
    atk = make_attack("label_flip", {"flip_rate": rate}, ctx)
    _, y2 = atk.poison_data(x, y, np.random.default_rng(seed), ctx)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)  # inputs untouched
    changed = y2 != y
    # with 4 classes y -> 3 - y always changes the label
    assert changed.sum() == round(rate * n)
    assert np.array_equal(y2[changed], 3 - y[changed])
    assert not atk.threat.targeted and atk.asr_inputs(x, y, ctx) is None


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_targeted_flip_only_source(rate, seed):
    ctx = tab_ctx(num_classes=3)
    x, y = data(150, 3, seed)
    atk = make_attack("label_flip", {"source": 1, "target": 2, "flip_rate": rate}, ctx)
    _, y2 = atk.poison_data(x, y, np.random.default_rng(seed), ctx)
    changed = y2 != y
    assert np.all(y[changed] == 1) and np.all(y2[changed] == 2)
    assert changed.sum() == round(rate * (y == 1).sum())
    assert atk.threat.targeted and atk.target_label == 2
    x_eval, eligible = atk.asr_inputs(x, y, ctx)
    assert np.array_equal(x_eval, x) and np.array_equal(eligible, y == 1)


def test_label_flip_deterministic_by_rng():
    ctx = tab_ctx()
    x, y = data()
    atk = make_attack("label_flip", {"flip_rate": 0.3}, ctx)
    a = atk.poison_data(x, y, np.random.default_rng(7), ctx)[1]
    b = atk.poison_data(x, y, np.random.default_rng(7), ctx)[1]
    assert np.array_equal(a, b)


def test_label_flip_bad_params():
    ctx = tab_ctx(num_classes=2)
    one_line_error("label_flip", {"flip_rate": 1.5}, ctx, "attack.flip_rate", "1.5")
    one_line_error("label_flip", {"source": 0, "target": 5}, ctx, "attack.target = 5", "0..1")
    one_line_error("label_flip", {"source": -1, "target": 1}, ctx, "attack.source = -1")
    one_line_error("label_flip", {"source": 1}, ctx, "attack.target")
    one_line_error("label_flip", {"source": 1, "target": 1}, ctx, "attack.target = 1")
    one_line_error("label_flip", {"fraction": 0.2}, ctx, "attack.fraction", "unknown key")


# ---------------------------------------------------------------- noise


def test_noise_feature_and_label_shares():
    ctx = tab_ctx(num_classes=3)
    x, y = data(200, 3)
    x0, y0 = x.copy(), y.copy()
    atk = make_attack(
        "noise", {"feature_sigma": 0.5, "label_noise": 0.25, "poison_fraction": 0.4}, ctx
    )
    x2, y2 = atk.poison_data(x, y, np.random.default_rng(1), ctx)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    noisy_rows = np.any(x2 != x, axis=1)
    assert noisy_rows.sum() == round(0.4 * 200)
    eps = (x2 - x)[noisy_rows]
    assert abs(eps.std() - 0.5) < 0.05 and abs(eps.mean()) < 0.05
    # every relabelled record gets a DIFFERENT class, exactly round(0.25 N) of them
    assert (y2 != y).sum() == round(0.25 * 200)
    assert set(np.unique(y2)) <= {0, 1, 2}
    assert x2.dtype == x.dtype and y2.dtype == y.dtype


def test_noise_label_uniform_over_other_classes():
    ctx = tab_ctx(num_classes=4)
    y = np.zeros(8000, dtype=np.int64)
    x = np.zeros((8000, F), dtype=np.float32)
    atk = make_attack("noise", {"feature_sigma": 0.0, "label_noise": 1.0}, ctx)
    _, y2 = atk.poison_data(x, y, np.random.default_rng(2), ctx)
    counts = np.bincount(y2, minlength=4)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / 8000 - 1 / 3) < 0.03)


def test_noise_bad_params():
    ctx = tab_ctx()
    one_line_error("noise", {"label_noise": 2}, ctx, "attack.label_noise")
    one_line_error("noise", {"feature_sigma": -1}, ctx, "attack.feature_sigma")
    one_line_error("noise", {"poison_fraction": 1.2}, ctx, "attack.poison_fraction")


# ---------------------------------------------------------------- backdoor


@settings(max_examples=25, deadline=None)
@given(pf=st.floats(0.01, 1), n=st.integers(1, 120), seed=st.integers(0, 2**16))
def test_backdoor_stamps_exact_share(pf, n, seed):
    ctx = tab_ctx()
    x, y = data(n, 3, seed)
    x0, y0 = x.copy(), y.copy()
    atk = make_attack("backdoor", {"poison_fraction": pf, "target_label": 2}, ctx)
    x2, y2 = atk.poison_data(x, y, np.random.default_rng(seed), ctx)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    stamped = np.all(x2[:, F - 4 :] == 3.0 + 5.0, axis=1)  # high + margin * (high - low)
    assert stamped.sum() == round(pf * n)
    assert np.all(y2[stamped] == 2)
    assert np.array_equal(y2[~stamped], y[~stamped]) and np.array_equal(x2[~stamped], x[~stamped])
    assert np.array_equal(x2[stamped, : F - 4], x[stamped, : F - 4])  # only trigger features


def test_backdoor_asr_inputs_and_threat():
    ctx = tab_ctx()
    x, y = data(50)
    atk = make_attack("backdoor", {"target_label": 1, "trigger_features": [0, 3]}, ctx)
    assert atk.threat.targeted and atk.target_label == 1 and atk.threat.goal == "integrity"
    x_eval, eligible = atk.asr_inputs(x, y, ctx)
    assert np.array_equal(eligible, y != 1)
    assert np.all(x_eval[:, [0, 3]] == 8.0)
    assert np.array_equal(x_eval[:, [1, 2, 4, 5, 6, 7]], x[:, [1, 2, 4, 5, 6, 7]])
    # out of the training range: the trigger value exceeds every feature's max
    assert np.all(x_eval[:, [0, 3]] > ctx.feature_high[[0, 3]])


def test_backdoor_boost_scales_update_without_mutation():
    import torch

    ctx = tab_ctx()
    u = torch.randn(10)
    u0 = u.clone()
    atk = make_attack("backdoor", {"boost": 5.0}, ctx)
    out = atk.poison_update(u, torch.Generator().manual_seed(0), ctx)
    assert torch.equal(u, u0) and torch.allclose(out, 5.0 * u0)
    plain = make_attack("backdoor", {}, ctx).poison_update(u, torch.Generator(), ctx)
    assert torch.equal(plain, u0) and plain is not u


def test_backdoor_bad_params():
    ctx = tab_ctx(num_classes=2)
    one_line_error("backdoor", {"target_label": 5}, ctx, "attack.target_label = 5", "0..1")
    one_line_error("backdoor", {"poison_fraction": 1.5}, ctx, "attack.poison_fraction")
    one_line_error("backdoor", {"trigger_size": 20}, ctx, "attack.trigger_size = 20")
    one_line_error("backdoor", {"trigger_features": [1, 99]}, ctx, "attack.trigger_features")
    # an unregistered trigger lists the available ones
    missing = "nonexistent_trigger"
    one_line_error("backdoor", {"trigger": missing}, ctx, "attack.trigger", "feature")
    # a tabular trigger on image data
    img = AttackContext(modality="image", num_classes=2, input_shape=(1, 8, 8))
    one_line_error("backdoor", {"trigger": "feature"}, img, "attack.trigger = 'feature'", "image")


def test_default_trigger_follows_modality():
    img = AttackContext(modality="image", num_classes=2, input_shape=(1, 8, 8))
    if "patch" in TRIGGERS:
        atk = make_attack("backdoor", {}, img)
        assert atk.trigger is not None
    else:
        one_line_error("backdoor", {}, img, "attack.trigger = 'patch'", "feature")


# ---------------------------------------------------------------- DBA


@pytest.mark.parametrize("n_parts", [1, 2, 3, 4, 8])
def test_dba_parts_disjoint_union_is_full(n_parts):
    ctx = tab_ctx()
    trig = make_attack("backdoor", {"trigger_size": 8}, ctx).trigger
    base = np.zeros((1, F), dtype=np.float32)
    full = trig.apply(base)[0] != 0
    masks = [trig.apply(base, part=i, n_parts=n_parts)[0] != 0 for i in range(n_parts)]
    assert all(m.any() for m in masks)
    assert np.sum(masks, axis=0).max() == 1  # disjoint
    assert np.array_equal(np.logical_or.reduce(masks), full)  # union = full trigger
    assert np.array_equal(
        trig.apply(base, part=0, n_parts=n_parts)[0][masks[0]], trig.apply(base)[0][masks[0]]
    )


def test_split_units_property():
    for n_units in range(1, 12):
        for n_parts in range(1, n_units + 1):
            parts = [split_units(n_units, i, n_parts) for i in range(n_parts)]
            allu = np.concatenate(parts)
            assert sorted(allu) == list(range(n_units)) and all(len(p) for p in parts)


def test_dba_attackers_stamp_their_part_and_asr_uses_global_trigger():
    x, y = data(40)
    stamped_features = []
    for i in range(4):
        ctx = tab_ctx(n_attackers=4, attacker_index=i)
        atk = make_attack("dba", {"poison_fraction": 1.0, "target_label": 0}, ctx)
        x2, y2 = atk.poison_data(x, y, np.random.default_rng(i), ctx)
        changed = np.any(x2 != x, axis=0)
        stamped_features.append(set(np.flatnonzero(changed)))
        assert np.all(y2 == 0)
        x_eval, eligible = atk.asr_inputs(x, y, ctx)
        assert np.all(x_eval[:, F - 4 :] == 8.0) and np.array_equal(eligible, y != 0)
    assert stamped_features == [{4}, {5}, {6}, {7}]
    assert atk.threat.adversary == "colluding hospitals" and atk.threat.targeted


def test_dba_more_attackers_than_parts_cycle():
    ctx = tab_ctx(n_attackers=6, attacker_index=5)
    atk = make_attack("dba", {"trigger_size": 4}, ctx)
    assert atk.trigger_part(ctx) == (1, 4)
    assert make_attack("backdoor", {}, ctx).trigger_part(ctx) == (None, 1)


@pytest.mark.parametrize("n_attackers", [2, 3, 4])
def test_dba_one_instance_serves_every_attacker(n_attackers):
    """The server builds ONE attack (make_attack with attacker_index 0); each attacker's
    part comes from the ctx passed to poison_data: disjoint parts whose union is the full
    trigger (bug: every attacker stamped part 0)."""
    x, y = data(30)
    atk = make_attack("dba", {"poison_fraction": 1.0, "target_label": 1},
                      tab_ctx(n_attackers=n_attackers, attacker_index=0))
    stamped = []
    for i in range(n_attackers):
        ctx = tab_ctx(n_attackers=n_attackers, attacker_index=i)
        x2, _ = atk.poison_data(x, y, np.random.default_rng(i), ctx)
        stamped.append(np.any(x2 != x, axis=0))
    assert all(s.any() for s in stamped)
    assert np.sum(stamped, axis=0).max() == 1  # disjoint
    x_full, _ = atk.asr_inputs(x, y, tab_ctx(n_attackers=n_attackers))
    assert np.array_equal(np.logical_or.reduce(stamped), np.any(x_full != x, axis=0))
    assert np.array_equal(np.flatnonzero(np.any(x_full != x, axis=0)), np.arange(F - 4, F))


# ---------------------------------------------------------------- selection


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), frac=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_choose_attackers_exact_and_deterministic(n, frac, seed):
    a = choose_attackers(n, frac, None, seed)
    assert a == choose_attackers(n, frac, None, seed)
    assert len(a) == round(frac * n) and len(set(a)) == len(a)
    assert all(0 <= i < n for i in a) and list(a) == sorted(a)


def test_choose_attackers_seed_matters_and_list_wins():
    draws = {choose_attackers(50, 0.2, None, s) for s in range(10)}
    assert len(draws) > 1
    assert choose_attackers(5, 0.9, [3, 1], 0) == (1, 3)


def test_choose_attackers_bad_values():
    for args, key in [
        ((5, 1.5, None, 0), "attack.fraction = 1.5"),
        ((5, -0.1, None, 0), "attack.fraction = -0.1"),
        ((5, 0.2, [7], 0), "attack.hospitals = [7]"),
        ((5, 0.2, [1, 1], 0), "attack.hospitals = [1, 1]"),
    ]:
        with pytest.raises(ValueError) as exc:
            choose_attackers(*args)
        assert key in str(exc.value) and "\n" not in str(exc.value)


def test_is_active():
    assert is_active(1) and is_active(100)
    assert not is_active(2, 3) and is_active(3, 3) and is_active(5, 3, 5)
    assert not is_active(6, 3, 5)


def test_every_registered_attack_builds_with_defaults():
    import dataclasses

    ctx = dataclasses.replace(tab_ctx(), defense_rule="krum")  # agr_tailored needs a rule
    required = {"backdoor_pgd": {"max_norm": 1.0}}
    for entry in ATTACKS:
        atk = make_attack(entry.name, required.get(entry.name, {}), ctx)
        assert atk.threat.goal in ("integrity", "availability", "confidentiality")


# ---------------------------------------------------------------- schedules (issue 17)


def brute_schedule(r, start, end, schedule, every=1, at=None):
    """Reference: the window, then the schedule's rule, written out per schedule."""
    if r < start or (end is not None and r > end):
        return False
    return {
        "every_round": True,
        "every_k": (r - start) % every == 0,
        "single_shot": r == (start if at is None else at),
    }[schedule]


@settings(max_examples=60, deadline=None)
@given(start=st.integers(1, 10), length=st.integers(0, 30), every=st.integers(1, 7),
       schedule=st.sampled_from(["every_round", "every_k", "single_shot"]), data=st.data())
def test_schedules_match_reference(start, length, every, schedule, data):
    end = start + length
    at = data.draw(st.one_of(st.none(), st.integers(start, end)))
    for r in range(1, end + 5):
        assert is_active(r, start, end, schedule, every, at) == brute_schedule(r, start, end, schedule, every, at)
    got = active_rounds(end + 4, start, end, schedule, every, at)
    assert got == tuple(r for r in range(1, end + 5) if brute_schedule(r, start, end, schedule, every, at))


def test_every_k_and_single_shot_examples():
    assert active_rounds(20, 3, 15, "every_k", every=4) == (3, 7, 11, 15)
    assert active_rounds(20, 1, None, "single_shot", at_round=9) == (9,)
    assert active_rounds(20, 5, None, "single_shot") == (5,)
    assert active_rounds(6) == (1, 2, 3, 4, 5, 6)


@settings(max_examples=40, deadline=None)
@given(start=st.integers(1, 5), length=st.integers(0, 40), frac=st.floats(0, 1),
       seed=st.integers(0, 2**31))
def test_random_schedule_exact_share_reproducible(start, length, frac, seed):
    end = start + length
    got = active_rounds(end + 3, start, end, "random", round_fraction=frac, seed=seed)
    assert len(got) == round(frac * (length + 1)) and all(start <= r <= end for r in got)
    assert got == active_rounds(end + 3, start, end, "random", round_fraction=frac, seed=seed)
    assert got == tuple(r for r in range(1, end + 4)
                        if is_active(r, start, end, "random", round_fraction=frac, seed=seed))


def test_random_schedule_depends_on_seed_not_on_attacker():
    draws = {active_rounds(30, 1, 30, "random", round_fraction=0.3, seed=s) for s in range(10)}
    assert len(draws) > 1
    assert active_rounds(30, 1, 30, "random", round_fraction=1.0) == tuple(range(1, 31))
    assert active_rounds(30, 1, 30, "random", round_fraction=0.0) == ()


@pytest.mark.parametrize("kw, needle", [
    ({"schedule": "sometimes"}, "attack.schedule = 'sometimes'"),
    ({"schedule": "every_k", "every": 0}, "attack.every = 0"),
    ({"schedule": "single_shot", "at_round": 0}, "attack.at_round = 0"),
    ({"schedule": "single_shot", "start_round": 3, "end_round": 5, "at_round": 7}, "attack.at_round = 7"),
    ({"schedule": "random", "round_fraction": 1.5, "end_round": 9}, "attack.round_fraction = 1.5"),
    ({"schedule": "random"}, "attack.schedule = 'random'"),
    ({"start_round": 5, "end_round": 2}, "attack.end_round = 2"),
])
def test_schedule_bad_values(kw, needle):
    with pytest.raises(ValueError) as exc:
        check_schedule(**kw)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValueError):
        is_active(4, **kw)


# ---------------------------------------------------------------- Neurotoxin (ICML 2022)

import dataclasses  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fedmedsec.attacks.data import neurotoxin_mask, project_update  # noqa: E402
from fedmedsec.attacks.data.history import LAST_GLOBAL, PREV_GLOBAL  # noqa: E402
from fedmedsec.training import TrainHooks, predict, state_vector, train_local  # noqa: E402


def brute_mask(direction, ratio, eligible):
    """Reference: sort the eligible coordinates by (-|b_j|, j) and drop the first k."""
    idx = [j for j in range(len(direction)) if eligible[j]]
    k = min(len(idx), max(0, int(round(ratio * len(idx)))))
    ranked = sorted(idx, key=lambda j: (-abs(float(direction[j])), j))
    keep = [bool(e) for e in eligible]
    for j in ranked[:k]:
        keep[j] = False
    return keep


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 60), ratio=st.floats(0, 0.99), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_neurotoxin_mask_matches_reference(d, ratio, seed, ties):
    r = np.random.default_rng(seed)
    direction = r.normal(size=d)
    if ties:  # many equal magnitudes, both signs
        direction = np.round(direction) * r.choice([-1, 1], size=d)
    eligible = r.random(d) < 0.8
    got = neurotoxin_mask(torch.tensor(direction), ratio, torch.tensor(eligible))
    assert got.tolist() == brute_mask(direction, ratio, eligible)


def tiny_mlp(seed=0, f=F):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(f, 16), nn.ReLU(), nn.Linear(16, 2))


def toy_ctx(**kw):
    return dataclasses.replace(tab_ctx(num_classes=2), **kw)


def toy_data(n=240, seed=0):
    """Two Gaussian classes in 8 features; the trigger (last 4 features) is out of range."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, size=n).astype(np.int64)
    x = (r.normal(size=(n, F)) * 0.6 + (2 * y[:, None] - 1) * 0.8).clip(-2, 3).astype(np.float32)
    return x, y


def neurotoxin_setup(params, seed=0):
    ctx = toy_ctx(round=2)
    atk = make_attack("neurotoxin", params, ctx)
    model = tiny_mlp(seed)
    g = state_vector(model)
    state: dict = {}
    prev = g + 0.01 * torch.randn(g.shape, generator=torch.Generator().manual_seed(seed + 1))
    atk.observe(prev, state, dataclasses.replace(ctx, round=1))
    hooks = atk.train_hooks(g, state, ctx)
    return atk, model, g, state, hooks, ctx


@pytest.mark.parametrize("momentum, wd, full", [(0.9, 0.0, False), (0.9, 0.0, True), (0.5, 0.05, True)])
def test_neurotoxin_update_exactly_zero_outside_mask(momentum, wd, full):
    """The gradient projection (before_step) alone keeps the excluded coordinates fixed under
    momentum SGD without weight decay; with weight decay the after_step reset does."""
    atk, model, g, state, hooks, ctx = neurotoxin_setup({"top_k_ratio": 0.3, "poison_fraction": 0.5})
    x, y = toy_data()
    x, y = atk.poison_data(x, y, np.random.default_rng(0), ctx)
    used = hooks if full else TrainHooks(before_step=hooks.before_step)
    train_local(model, x, y, epochs=3, batch_size=16, lr=0.1, momentum=momentum,
                weight_decay=wd, generator=torch.Generator().manual_seed(0), hooks=used)
    update = state_vector(model) - g
    mask = atk.last_mask
    direction = state[LAST_GLOBAL] - state[PREV_GLOBAL]
    assert mask is not None and mask.shape == g.shape
    assert torch.all(update[~mask] == 0)  # exactly
    assert (update[mask] != 0).float().mean() > 0.5  # the rest trains
    # the mask avoids the largest observed benign coordinates: exactly the top 30 %
    assert mask.tolist() == brute_mask(direction.numpy(), 0.3, np.ones(len(g), bool))
    assert direction.abs()[~mask].min() >= direction.abs()[mask].max()


def test_neurotoxin_first_round_unmasked_and_observe_idempotent():
    ctx = toy_ctx(round=1)
    atk = make_attack("neurotoxin", {}, ctx)
    g = state_vector(tiny_mlp())
    state: dict = {}
    assert atk.train_hooks(g, state, ctx) is None  # nothing observed before: no mask
    assert torch.equal(state[LAST_GLOBAL], g) and PREV_GLOBAL not in state
    atk.observe(g + 1, state, ctx)  # same round again: ignored
    assert torch.equal(state[LAST_GLOBAL], g)
    atk.observe(g + 1, state, dataclasses.replace(ctx, round=3))
    assert torch.equal(state[PREV_GLOBAL], g) and torch.equal(state[LAST_GLOBAL], g + 1)
    assert atk.threat.targeted and atk.target_label is not None


def test_neurotoxin_clip_norm_and_asr_inputs():
    ctx = toy_ctx()
    atk = make_attack("neurotoxin", {"clip_norm": 0.5, "boost": 3.0}, ctx)
    u = torch.full((100,), 0.1)
    out = atk.poison_update(u, torch.Generator(), ctx)
    assert float(out.norm()) == pytest.approx(0.5) and torch.allclose(out / out.norm(), u / u.norm())
    small = torch.full((100,), 1e-3)
    assert torch.allclose(atk.poison_update(small, torch.Generator(), ctx), 3 * small)
    x, y = data(20, 2)
    x_eval, eligible = atk.asr_inputs(x, y, ctx)
    assert np.all(x_eval[:, F - 4:] == 8.0) and np.array_equal(eligible, y != atk.target_label)


# ---------------------------------------------------------------- defense-aware PGD backdoor


def brute_projection(u, b, c, r, grid=600):
    """Reference: the optimum lies in span(b, u); scan polar points (rho, phi) of that plane
    inside the set (rho <= r, angle to b <= arccos c) for the nearest one."""
    u, b = np.asarray(u, float), np.asarray(b, float) / np.linalg.norm(b)
    a = u @ b
    w = u - a * b
    e = w / np.linalg.norm(w) if np.linalg.norm(w) > 0 else np.zeros_like(w)
    phi = np.linspace(0, np.arccos(c), grid)[None, :, None]
    rho = np.linspace(0, r, grid // 2)[:, None, None]
    v = rho * (np.cos(phi) * b + np.sin(phi) * e)  # [rho, phi, d]
    return float(np.linalg.norm(v - u, axis=-1).min())


@pytest.mark.parametrize("seed", range(6))
def test_project_update_is_the_nearest_feasible_point(seed):
    r = np.random.default_rng(seed)
    d = 5
    u, b = r.normal(size=d) * 2, r.normal(size=d)
    c, radius = float(r.uniform(0, 0.95)), float(r.uniform(0.3, 3))
    v = project_update(torch.tensor(u), radius, torch.tensor(b), c).numpy()
    assert np.linalg.norm(v) <= radius * (1 + 1e-12)
    if np.linalg.norm(v) > 0:
        assert v @ b / (np.linalg.norm(v) * np.linalg.norm(b)) >= c - 1e-9
    assert np.linalg.norm(v - u) <= brute_projection(u, b, c, radius) + 1e-9
    # inside the set: unchanged; ball only: plain rescaling
    inside = b / np.linalg.norm(b) * radius * 0.5
    assert np.allclose(project_update(torch.tensor(inside), radius, torch.tensor(b), c).numpy(), inside)
    assert np.allclose(project_update(torch.tensor(u), radius).numpy(),
                       u * min(1, radius / np.linalg.norm(u)))


def asr(model, atk, x, y, ctx):
    x_eval, eligible = atk.asr_inputs(x, y, ctx)
    pred = predict(model, x_eval).argmax(1)
    return float(np.mean(pred[eligible] == atk.target_label))


def test_backdoor_pgd_stays_in_the_ball_every_step_and_asr_rises():
    """Sun et al. / Wang et al.: after every local step ||w - g|| <= max_norm / boost, the sent
    update <= max_norm, cos(update, observed benign direction) >= min_cosine, and the
    backdoor is still learned on a toy task."""
    x, y = toy_data(400, 1)
    xt, yt = toy_data(200, 2)
    clean = tiny_mlp(1)
    train_local(clean, x, y, epochs=5, batch_size=16, lr=0.1, generator=torch.Generator().manual_seed(1))
    g = state_vector(clean)
    max_norm, boost, c = 2.0, 2.0, 0.2
    ctx = toy_ctx(round=2)
    atk = make_attack("backdoor_pgd", {"max_norm": max_norm, "boost": boost, "min_cosine": c,
                                       "poison_fraction": 0.5, "target_label": 0}, ctx)
    state: dict = {}
    benign = 0.05 * torch.randn(g.shape, generator=torch.Generator().manual_seed(3))
    atk.observe(g - benign, state, dataclasses.replace(ctx, round=1))
    hooks = atk.train_hooks(g, state, ctx)
    norms, cosines = [], []

    def after(model):
        hooks.after_step(model)
        u = (state_vector(model) - g).double()
        norms.append(float(u.norm()))
        cosines.append(float(u @ benign.double() / (u.norm() * benign.double().norm() + 1e-300)))

    model = tiny_mlp(1)
    model.load_state_dict(clean.state_dict())
    xp, yp = atk.poison_data(x, y, np.random.default_rng(0), ctx)
    before = asr(model, atk, xt, yt, ctx)
    train_local(model, xp, yp, epochs=8, batch_size=16, lr=0.2, momentum=0.9,
                generator=torch.Generator().manual_seed(0), hooks=TrainHooks(after_step=after))
    assert max(norms) <= max_norm / boost * (1 + 1e-6) and min(cosines) >= c - 1e-6
    sent = atk.poison_update(state_vector(model) - g, torch.Generator(), ctx)
    assert float(sent.norm()) <= max_norm * (1 + 1e-6)
    after_asr = asr(model, atk, xt, yt, ctx)
    assert before < 0.2 and after_asr > before + 0.5
    # the bound binds: unconstrained, the same training moves much further
    free = tiny_mlp(1)
    free.load_state_dict(clean.state_dict())
    train_local(free, xp, yp, epochs=8, batch_size=16, lr=0.2, momentum=0.9,
                generator=torch.Generator().manual_seed(0))
    assert float((state_vector(free) - g).norm()) > 2 * max_norm / boost


def test_backdoor_pgd_bound_from_the_defense():
    nb = toy_ctx(defense_rule="norm_bounding", defense_params={"max_norm": 3.5})
    assert make_attack("backdoor_pgd", {}, nb).max_norm == 3.5
    assert make_attack("backdoor_pgd", {"max_norm": 1.0}, nb).max_norm == 1.0
    one_line_error("backdoor_pgd", {}, toy_ctx(), "attack.max_norm")
    one_line_error("backdoor_pgd", {}, toy_ctx(defense_rule="norm_bounding"), "attack.max_norm")
    one_line_error("backdoor_pgd", {"max_norm": 1, "min_cosine": 1.0}, toy_ctx(), "attack.min_cosine")
    one_line_error("neurotoxin", {"top_k_ratio": 1.0}, toy_ctx(), "attack.top_k_ratio")


# ---------------------------------------------------------------- default backdoor target


CLEAN_CASES = {
    # name: (config, overrides, needs shared data, seeds, epochs, lr, momentum)
    "wdbc": ("configs/quickstart.toml", [], False, range(5), 20, 0.05, 0.0),
    "heart": ("configs/heart_sites.toml", ["data.path={data}/uci-heart-disease/heart_disease_4sites.csv"],
              True, range(5), 20, 0.05, 0.0),
    "breastmnist": ("configs/breastmnist.toml", ["data.path={data}/medmnist/breastmnist.npz"],
                    True, range(2), 30, 0.01, 0.9),
    "ecg_synthetic": ("configs/ecg_synthetic.toml", [], False, range(2), 20, 0.05, 0.0),
}


def shared_data_dir():
    """The first ``shared/data`` folder above the checkout (main checkout or a worktree)."""
    from pathlib import Path

    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


@pytest.mark.parametrize("name", list(CLEAN_CASES))
def test_default_backdoor_target_is_not_already_hit_by_a_clean_model(name):
    """A backdoor's 'success' must be the poisoning, not the trigger: the default trigger's
    rate (the ASR definition) on a model trained without attackers stays <= 0.15 on every
    shipped dataset. The context carries what the lead passes: class names and counts."""
    from fedmedsec.config import load_config
    from fedmedsec.data.pipeline import build_federated_data
    from fedmedsec.models import build_model

    path, overrides, shared, seeds, epochs, lr, momentum = CLEAN_CASES[name]
    SHARED_DATA = shared_data_dir()
    if shared and SHARED_DATA is None:
        pytest.skip("shared/data is not present above the checkout")
    expected_target = {"wdbc": 1, "heart": 0, "breastmnist": 0, "ecg_synthetic": 0}[name]
    for seed in seeds:
        ov = [o.format(data=SHARED_DATA) for o in overrides] + [f"experiment.seed={seed}"]
        cfg = load_config(path, ov)
        d = build_federated_data(cfg)
        x, y = d.pooled_train
        counts = np.bincount(y, minlength=d.num_classes)
        model = build_model(cfg.model.name, cfg.params("model"), d.input_shape, d.num_classes, seed=seed)
        train_local(model, x, y, epochs=epochs, batch_size=cfg.train.batch_size, lr=lr,
                    momentum=momentum, generator=torch.Generator().manual_seed(seed))
        acc = float(np.mean(predict(model, d.x_test).argmax(1) == d.y_test))
        assert acc > counts.max() / counts.sum() + 0.02, (name, seed, acc)  # it learned
        ctx = AttackContext(
            modality=d.modality, num_classes=d.num_classes, input_shape=d.input_shape,
            feature_low=d.feature_low, feature_high=d.feature_high,
            class_names=tuple(d.class_names) if d.class_names else None,
            class_counts=tuple(int(c) for c in counts),
        )
        atk = make_attack("backdoor", {}, ctx)
        assert atk.target_label == expected_target
        x_eval, eligible = atk.asr_inputs(d.x_test, d.y_test, ctx)
        rate = float(np.mean(predict(model, x_eval).argmax(1)[eligible] == atk.target_label))
        assert rate <= 0.15, (name, seed, rate)


def test_default_target_rule():
    def ctx(modality="tabular", names=None, counts=None, c=2):
        return AttackContext(modality=modality, num_classes=c, input_shape=(F,),
                             class_names=names, class_counts=counts)

    from fedmedsec.attacks.data import default_target_label as dt

    assert dt(ctx(names=("malignant", "benign"))) == 1
    assert dt(ctx(names=("abnormal", "normal"))) == 1
    assert dt(ctx(modality="ecg", names=("AF", "normal_sinus", "x"), c=3)) == 1
    assert dt(ctx(modality="ecg", names=("MI", "NORM", "STTC"), c=3)) == 1
    assert dt(ctx(names=("0", "1|2|3|4"))) == 0 and dt(ctx()) == 0
    assert dt(ctx(modality="image", names=("malignant", "benign"), counts=(125, 342))) == 0
    assert dt(ctx(modality="image", counts=(300, 90))) == 1 and dt(ctx(modality="image")) == 0
