"""Secure aggregation by pairwise additive masking (Bonawitz et al., CCS 2017).

Properties from the definition: the masked sum decodes to exactly the sum of the fixed-point
encodings (checked against Python integers); each masked vector alone is uniform on
Z_{2^64} whatever the update (two-sample and one-sample KS tests, bit frequencies); masks
change with the round; a missing client leaves the sum undecodable unless its key is
recovered from Shamir shares; the self mask keeps a vector private even when all pairwise
keys are known.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedmedsec.privacy.secure_agg import (
    FixedPoint,
    generate_keypair,
    mask,
    pairwise_mask,
    pairwise_seed,
    secure_sum,
    server_view,
    shamir_combine,
    shamir_split,
    unmask_sum,
)

FP = FixedPoint()
D = 4000


def setup(n, seed=0):
    rng = np.random.default_rng(seed)
    keys = [generate_keypair(u, rng) for u in range(n)]
    pubs = {k.client_id: k.public for k in keys}
    return keys, pubs


def peers_of(u, pubs):
    return {v: p for v, p in pubs.items() if v != u}


def as_unit(y: np.ndarray) -> np.ndarray:
    """uint64 -> [0, 1) through the top 53 bits (exact in float64)."""
    return (y >> np.uint64(11)).astype(np.float64) / 2.0**53


def test_sum_decodes_exactly_to_the_fixed_point_sum():
    n = 5
    keys, pubs = setup(n)
    updates = torch.randn(n, D) * torch.logspace(-6, 2, D)
    masked = [mask(updates[u], keys[u], peers_of(u, pubs), 7, FP) for u in range(n)]
    got = unmask_sum(masked, FP)
    # reference in Python integers: sum of round(x * 2^32), divided once
    ints = [sum(int(np.rint(float(updates[u, j]) * 2.0**32)) for u in range(n)) for j in range(D)]
    assert got.tolist() == [i / 2.0**32 for i in ints]
    assert float((got - updates.double().sum(0)).abs().max()) <= n * 2.0**-33


def test_pairwise_seeds_are_symmetric_and_pairwise_masks_cancel():
    keys, pubs = setup(4)
    s01 = pairwise_seed(keys[0].private, 0, 1, pubs[1], 3)
    assert s01 == pairwise_seed(keys[1].private, 1, 0, pubs[0], 3)
    assert s01 != pairwise_seed(keys[0].private, 0, 2, pubs[2], 3)
    total = sum((pairwise_mask(k, peers_of(k.client_id, pubs), 3, 64) for k in keys),
                np.zeros(64, np.uint64))
    assert not total.any()


def test_a_masked_vector_is_uniform_whatever_the_update():
    keys, pubs = setup(3)
    zeros = torch.zeros(D)
    large = 1000.0 * torch.randn(D, generator=torch.Generator().manual_seed(0))
    y0 = mask(zeros, keys[0], peers_of(0, pubs), 1, FP)
    y1 = mask(large, keys[0], peers_of(0, pubs), 2, FP)  # a fresh round: fresh masks
    u0, u1 = as_unit(y0), as_unit(y1)
    assert stats.ks_2samp(u0, u1).pvalue > 1e-3
    for u in (u0, u1):
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    # each of the 64 bits is set about half the time (binomial sd of the mean: 0.008)
    bits = ((y1[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(0)
    assert np.all(np.abs(bits - 0.5) < 0.04)
    # control: the unmasked encoding is far from uniform
    assert stats.kstest(as_unit(FP.encode(large)), "uniform").pvalue < 1e-10


def test_masks_differ_between_rounds_and_are_reproducible_from_the_rng():
    keys, pubs = setup(3)
    x = torch.randn(D)
    a = mask(x, keys[1], peers_of(1, pubs), 1, FP)
    b = mask(x, keys[1], peers_of(1, pubs), 2, FP)
    assert np.mean(a == b) < 1e-3
    keys2, pubs2 = setup(3)  # same seed: same keys, same masks
    assert np.array_equal(a, mask(x, keys2[1], peers_of(1, pubs2), 1, FP))
    fresh = generate_keypair(1)  # OS CSPRNG path
    assert fresh.private != keys[1].private and len(fresh.public) == 32


def test_a_missing_client_makes_the_sum_undecodable_without_recovery():
    n = 4
    keys, pubs = setup(n)
    updates = torch.randn(n, D) * 0.01
    masked = [mask(updates[u], keys[u], peers_of(u, pubs), 5, FP) for u in range(n)]
    partial = unmask_sum(masked[:3], FP)  # client 3 masked with the others, then dropped
    err = (partial - updates[:3].double().sum(0)).abs()
    # the leftover masks are uniform on the int64 range: |error| ~ 2^63 / 2^32 ~ 2e9
    assert float(err.median()) > 1e8
    # with client 3's private key (reconstructed from shares) the sum comes back
    shares = shamir_split(keys[3].private, [0, 1, 2], threshold=2, rng=np.random.default_rng(1))
    sk3 = shamir_combine({h: shares[h] for h in (0, 2)})
    assert sk3 == keys[3].private
    rec = unmask_sum(dict(enumerate(masked[:3])), FP, round_id=5, dropped_private={3: sk3},
                     public_keys={u: pubs[u] for u in range(3)})
    assert float((rec - updates[:3].double().sum(0)).abs().max()) <= 3 * 2.0**-33


@pytest.mark.parametrize("dropped", [(), (2,), (0, 5)])
def test_full_protocol_with_self_masks_and_dropouts(dropped):
    updates = torch.randn(6, 300)
    got = secure_sum(updates, 9, rng=np.random.default_rng(3), dropped=dropped, threshold=3)
    alive = [u for u in range(6) if u not in dropped]
    assert float((got - updates[alive].double().sum(0)).abs().max()) <= 6 * 2.0**-33


def test_too_few_survivors_cannot_recover():
    with pytest.raises(ValueError, match="threshold"):
        secure_sum(torch.randn(4, 10), 0, rng=np.random.default_rng(0), dropped=(0, 1, 2), threshold=2)


def test_self_mask_hides_a_vector_even_with_all_pairwise_keys():
    """A late client whose private key the server reconstructed (it was reported dropped):
    removing all its pairwise masks still leaves PRG(b_u) on its vector."""
    keys, pubs = setup(3)
    x = torch.zeros(D)
    seed = np.random.default_rng(5).bytes(32)
    y = mask(x, keys[0], peers_of(0, pubs), 4, FP, self_seed=seed)
    stripped = y - pairwise_mask(keys[0], peers_of(0, pubs), 4, D)
    assert stats.kstest(as_unit(stripped), "uniform").pvalue > 1e-3
    no_self = mask(x, keys[0], peers_of(0, pubs), 4, FP) - pairwise_mask(keys[0], peers_of(0, pubs), 4, D)
    assert not no_self.any()  # control: without the self mask the zero update is exposed


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), data=st.data())
def test_shamir_any_t_shares_recover_and_fewer_do_not(n, data):
    t = data.draw(st.integers(1, n))
    secret = data.draw(st.binary(min_size=32, max_size=32))
    holders = list(range(10, 10 + n))
    shares = shamir_split(secret, holders, t, rng=np.random.default_rng(n * 31 + t))
    subset = data.draw(st.permutations(holders))[:t]
    assert shamir_combine({h: shares[h] for h in subset}) == secret
    if t > 1:
        assert shamir_combine({h: shares[h] for h in subset[:-1]}) != secret


def test_fixed_point_clips_checks_capacity_and_refuses_bad_input():
    fp = FixedPoint(scale_bits=8, clip=2.0)
    dec = fp.decode(fp.encode(torch.tensor([5.0, -5.0, 0.123])))
    assert dec.tolist() == [2.0, -2.0, round(0.123 * 256) / 256]
    assert FixedPoint().max_clients == 32767
    tight = FixedPoint(scale_bits=60, clip=3.0)  # 3 * 2^60 per client: 2 fit below 2^63
    assert tight.max_clients == 2
    keys, pubs = setup(3)
    with pytest.raises(ValueError, match="capacity"):
        mask(torch.zeros(3), keys[0], peers_of(0, pubs), 0, tight)
    with pytest.raises(ValueError, match="non-finite"):
        FP.encode(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="scale_bits"):
        FixedPoint(scale_bits=70)


def test_server_view_is_only_the_sum_under_secure_aggregation():
    u = torch.randn(5, 8)
    assert torch.equal(server_view(u, False), u)
    torch.testing.assert_close(server_view(u, True), u.sum(0, keepdim=True))
    assert server_view(u, True).shape == (1, 8)


# ---------------------------------------------------------------- secure aggregation in the round loop
# The Coordinator with privacy.secure_aggregation: after validation the rule, the aggregate
# and clients.csv see only the round's sum (divided into the mean); nothing per client.

from fedmedsec.config import ConfigError, load_config  # noqa: E402
from fedmedsec.experiment import build_setup  # noqa: E402
from fedmedsec.rounds import ClientReply  # noqa: E402
from fedmedsec.server import Coordinator  # noqa: E402

_SETUPS: dict = {}


def _setup_of(*overrides):
    key = tuple(overrides)
    if key not in _SETUPS:
        _SETUPS[key] = build_setup(load_config(raw={}, overrides=["experiment.mia=false", "data.num_hospitals=8",
                                                                  *overrides]))
    return _SETUPS[key]


def _replies(co, ids, seed, scale):
    g = torch.Generator().manual_seed(seed)
    d = co.global_vec.numel()
    return [ClientReply(pid, co.global_vec + scale * torch.randn(d, generator=g), int(5 + 7 * pid), {})
            for pid in ids]


def _record_rule(co):
    seen = []
    rule = co.rule

    def recorder(rows, ctx):
        seen.append((rows.clone(), ctx.weights, ctx.client_ids))
        return rule(rows, ctx)

    co.rule = recorder
    return seen


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 7), min_size=1, max_size=8), st.integers(0, 10_000),
       st.floats(1e-4, 10.0), st.booleans())
def test_the_round_loop_shows_the_rule_only_the_sum(ids, seed, scale, weighted):
    extra = ["defense.weighted=true"] if weighted else []
    co = Coordinator(_setup_of("privacy.secure_aggregation=true", *extra))
    seen = _record_rule(co)
    ids = co.sample(1, sorted(ids))
    g0 = co.global_vec.clone()
    replies = _replies(co, ids, seed, scale)
    co.aggregate(1, replies)
    # brute force, from the definition: sum_i x_i / n, or sum_i n_i x_i / sum_i n_i
    x = [r.vector.double() - g0.double() for r in replies]
    n_i = [float(r.num_examples) for r in replies]
    if weighted:
        expected = sum(ni * xi for ni, xi in zip(n_i, x)) / sum(n_i)
    else:
        expected = sum(x) / len(x)
    (rows, w, cids), = seen  # the rule ran once, on one row, with no per-client context
    assert rows.shape == (1, g0.numel()) and w is None and cids == ()
    torch.testing.assert_close(rows[0].double(), expected, rtol=1e-5, atol=1e-6 * scale)
    # g + u in float32: one rounding of the global model's entries (|g| < 2)
    torch.testing.assert_close((co.global_vec - g0).double(), expected, rtol=1e-5, atol=1e-6 * scale + 3e-7)
    rec = list(co._pending.values())
    assert len(rec) == len(ids) and all(np.isnan(r["update_norm"]) for r in rec)
    assert all(r["accepted"] == 1 for r in rec)
    # the same round without secure aggregation: the same global model (fedavg needs only the sum)
    plain = Coordinator(_setup_of(*extra))
    plain.sample(1, list(ids))
    plain.aggregate(1, replies)
    torch.testing.assert_close(plain.global_vec, co.global_vec, rtol=1e-5, atol=1e-6 * scale + 3e-7)
    assert all(np.isfinite(r["update_norm"]) for r in plain._pending.values())


def test_secure_aggregation_with_central_dp_clips_at_the_hospitals_and_noises_the_sum():
    central = ["privacy.mode='central'", "privacy.clip_norm=0.5", "privacy.noise_multiplier=0.7"]
    co = Coordinator(_setup_of("privacy.secure_aggregation=true", *central))
    seen = _record_rule(co)
    ids = co.sample(3, list(range(8)))
    g0 = co.global_vec.clone()
    replies = _replies(co, ids, 0, 1.0)  # norms ~ sqrt(d) >> 0.5: every row is clipped
    co.aggregate(3, replies)
    x = torch.stack([r.vector - g0 for r in replies]).double()
    clipped = x * (0.5 / x.norm(dim=1, keepdim=True)).clamp(max=1.0)
    (rows, _, _), = seen
    torch.testing.assert_close(rows[0].double(), clipped.mean(0), rtol=1e-5, atol=1e-7)
    plain = Coordinator(_setup_of(*central))
    plain.sample(3, list(range(8)))
    plain.aggregate(3, replies)  # DP-FedAvg at the server: the same clip, the same noise stream
    torch.testing.assert_close(plain.global_vec, co.global_vec, rtol=1e-5, atol=1e-6)
    noise = (co.global_vec - g0).double() - clipped.mean(0)
    assert noise.std().item() == pytest.approx(0.7 * 0.5 / len(ids), rel=0.05)


def test_secure_aggregation_end_to_end_records_no_update_norm(tmp_path):
    import csv

    from fedmedsec.engine import run_experiment

    cfg = load_config(raw={}, overrides=["experiment.rounds=2", "experiment.mia=false", "data.num_hospitals=4",
                                         "privacy.secure_aggregation=true", "simulation.backend=inprocess"])
    run_experiment(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "clients.csv")))
    assert len(rows) == 8 and all(r["update_norm"] == "" for r in rows)
    assert all(r["accepted"] == "1" for r in rows)


@pytest.mark.parametrize("overrides, key", [
    (["defense.name=median"], "defense.name"),
    (["defense.name=krum"], "defense.name"),
    (["detection.name=fldetector"], "detection.name"),
    (["defense.pre=['bucketing']"], "defense.pre"),
])
def test_components_that_need_individual_updates_are_refused(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(raw={}, overrides=["privacy.secure_aggregation=true", *overrides])
    assert e.value.key == key and key in str(e.value) and "\n" not in str(e.value)
    assert "sum" in str(e.value)


def test_every_rule_without_the_sum_only_capability_is_refused():
    from fedmedsec.aggregators import AGGREGATORS

    for entry in AGGREGATORS:
        over = ["privacy.secure_aggregation=true", f"defense.name={entry.name}"]
        if entry.meta.get("sum_only"):
            load_config(raw={}, overrides=over)
        else:
            with pytest.raises(ConfigError, match=f"defense.name = '{entry.name}' needs the individual"):
                load_config(raw={}, overrides=over)


def test_full_knowledge_collusion_is_refused_and_partial_allowed():
    base = ["privacy.secure_aggregation=true", "attack.name=alie", "attack.fraction=0.25"]
    with pytest.raises(ConfigError, match="attack.knowledge = 'full'") as e:
        Coordinator(_setup_of(*base))
    assert e.value.key == "attack.knowledge"
    co = Coordinator(_setup_of(*base, "attack.knowledge='partial'"))
    assert co.cfg.privacy.secure_aggregation
