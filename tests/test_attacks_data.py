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
    assert atk.n_parts == 4 and atk.part == 1


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
    for entry in ATTACKS:
        atk = make_attack(entry.name, {}, ctx)
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
