"""Malicious-client detectors (fedmedsec.detectors): FLDetector's parts against brute-force
references, its behaviour on a synthetic linear-regression federation, FLAME's clustering
detector, composition with the rules, detection rates."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fedmedsec.aggregators import AGGREGATORS, AggregationContext
from fedmedsec.detectors import (
    DETECTORS,
    DetectionContext,
    DetectionCounts,
    aggregate_with_detection,
    gap_statistic_multiple,
    lbfgs_hvp,
    two_means_1d,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def detector(name: str, **params):
    e = DETECTORS.get(name)
    return e.obj(e.params(**params))


# --------------------------------------------------------------------------- L-BFGS


def bfgs_matrix(S: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The BFGS matrix by its textbook recursion (Nocedal and Wright eq. 6.19) from
    B_0 = sigma I, sigma = y_m.s_m / s_m.s_m, applying the pairs oldest first:
    B <- B - (B s s^T B) / (s^T B s) + (y y^T) / (y^T s)."""
    S, Y = S.double(), Y.double()
    d = S.shape[1]
    sigma = float(Y[-1] @ S[-1]) / float(S[-1] @ S[-1])
    B = sigma * torch.eye(d, dtype=torch.float64)
    for s, y in zip(S, Y):
        Bs = B @ s
        B = B - torch.outer(Bs, Bs) / float(s @ Bs) + torch.outer(y, y) / float(y @ s)
    return B


@SETTINGS
@given(st.integers(1, 6), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_lbfgs_hvp_equals_bfgs_recursion(m, d, seed):
    """The compact representation (FLDetector Algorithm 2) equals the explicit BFGS
    recursion's matrix times v, on pairs from a positive definite quadratic (y = H s); and
    it satisfies the latest secant equation B s_m = y_m."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(d, d, generator=g, dtype=torch.float64)
    H = Q @ Q.T + 0.5 * torch.eye(d, dtype=torch.float64)
    S = torch.randn(m, d, generator=g, dtype=torch.float64)
    Y = S @ H
    v = torch.randn(d, generator=g, dtype=torch.float64)
    want = bfgs_matrix(S, Y) @ v
    got = lbfgs_hvp(S, Y, v)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    torch.testing.assert_close(lbfgs_hvp(S, Y, S[-1]), Y[-1], rtol=1e-6, atol=1e-6 * float(Y[-1].abs().max()))


def test_lbfgs_is_exact_on_the_span_of_a_quadratic_with_d_pairs():
    """Diagonal H and axis-aligned steps (H-conjugate pairs): after d pairs the BFGS matrix
    is H itself, so B v = H v for every v (the Hessian FLDetector estimates)."""
    H = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    S = torch.eye(4, dtype=torch.float64)
    Y = S @ H
    for k in range(4):
        v = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(lbfgs_hvp(S, Y, v), H @ v)


# --------------------------------------------------------------------------- gap statistic


def brute_two_means(x: list[float]) -> float:
    """Minimal within-cluster sum of squares over every split of x into two non-empty sets."""
    n = len(x)
    best = math.inf
    for mask in range(1, 2 ** n - 1):
        a = [x[i] for i in range(n) if mask >> i & 1]
        b = [x[i] for i in range(n) if not mask >> i & 1]
        ss = sum((v - sum(a) / len(a)) ** 2 for v in a) + sum((v - sum(b) / len(b)) ** 2 for v in b)
        best = min(best, ss)
    return best


@SETTINGS
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=9))
def test_two_means_is_the_global_optimum(xs):
    """The split scan attains the minimum over all 2^n partitions; the upper cluster holds
    the larger values."""
    x = torch.tensor(xs, dtype=torch.float64)
    W2, upper = two_means_1d(x)
    if len(set(xs)) == 1:
        assert W2 == 0.0 and not upper.any()
        return
    assert W2 == pytest.approx(brute_two_means(xs), rel=1e-9, abs=1e-9)
    assert upper.any() and (~upper).any()
    assert float(x[upper].min()) > float(x[~upper].max())


def brute_gap_multiple(x: list[float], B: int, seed: int) -> bool:
    """The gap statistic decision written from Tibshirani et al. (2001) with brute-force
    clustering, on the same reference draws (torch.rand(B, n) with the same seed)."""
    n = len(x)
    lo, hi = min(x), max(x)
    ref = (lo + (hi - lo) * torch.rand(B, n, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64)).tolist()
    W1 = lambda v: sum((a - sum(v) / len(v)) ** 2 for a in v)
    l1 = [math.log(W1(r)) for r in ref]
    l2 = [math.log(brute_two_means(r)) for r in ref]
    gap1 = sum(l1) / B - math.log(W1(x))
    gap2 = sum(l2) / B - math.log(brute_two_means(x))
    m2 = sum(l2) / B
    s2 = math.sqrt(sum((v - m2) ** 2 for v in l2) / B) * math.sqrt(1 + 1 / B)
    return not gap1 >= gap2 - s2


@SETTINGS
@given(st.integers(3, 8), st.integers(0, 2**31 - 1), st.floats(0.0, 8.0))
def test_gap_statistic_matches_brute_force(n, seed, shift):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    x[: n // 3] += shift
    B = 5
    got = gap_statistic_multiple(x, B, torch.Generator().manual_seed(seed))
    assert got == brute_gap_multiple(x.tolist(), B, seed)


def test_gap_statistic_rates():
    """One cluster for unimodal scores (n = 30 Gaussian: at most 2 of 60 draws say more),
    two for a minority of 20 % far away (all draws), none for equal scores."""
    g = torch.Generator().manual_seed(0)
    false = sum(gap_statistic_multiple(torch.randn(30, generator=g, dtype=torch.float64), 20, g)
                for _ in range(60))
    assert false <= 2
    hits = 0
    for _ in range(20):
        x = torch.randn(30, generator=g, dtype=torch.float64)
        x[:6] += 10.0
        hits += gap_statistic_multiple(x, 20, g)
    assert hits == 20
    assert not gap_statistic_multiple(torch.ones(10, dtype=torch.float64), 20, g)


# --------------------------------------------------------------------------- federation


def federation(n=30, attackers=(), rounds=20, seed=0, d=8, m=200, eta=0.1, sample=None,
               perm_seed=None, params=None):
    """Synthetic linear regression: hospital i holds X_i [m, d] and targets X_i c_i, loss
    (1/2m)||X_i w - y_i||^2, exact Hessian A_i = X_i^T X_i / m; its update is one full-batch
    gradient step x_i = -eta A_i (w - c_i). Attackers send the sign flip -x_i every round.
    The server drops the flagged rows and averages the rest. ``sample``: clients per round
    (seeded); ``perm_seed``: rows presented in a random order each round (ids permuted along).
    Returns a list per round of {client id: (flagged, score)} and the attacker set."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, m, d, generator=g, dtype=torch.float64)
    A = X.transpose(1, 2) @ X / m
    c = torch.randn(d, generator=g, dtype=torch.float64) * 3 + torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.zeros(d, dtype=torch.float64)
    det = detector("fldetector", **(params or {}))
    state: dict = {}
    prev = None
    out = []
    sg = torch.Generator().manual_seed(seed + 1)
    pg = torch.Generator().manual_seed(perm_seed if perm_seed is not None else 0)
    for t in range(1, rounds + 1):
        ids = list(range(n)) if sample is None else sorted(torch.randperm(n, generator=sg)[:sample].tolist())
        if perm_seed is not None:
            ids = [ids[i] for i in torch.randperm(len(ids), generator=pg).tolist()]
        idx = torch.tensor(ids)
        U = -eta * torch.einsum("nij,nj->ni", A[idx], w - c[idx])
        mal = torch.tensor([i in attackers for i in ids])
        U[mal] = -U[mal]
        U = U.float()
        before = U.clone()
        gu = None if prev is None else prev.clone()
        res = det(U, DetectionContext(client_ids=tuple(ids), round=t, global_update=gu, state=state,
                                      generator=torch.Generator().manual_seed(1000 + t)))
        assert torch.equal(U, before) and (gu is None or torch.equal(gu, prev))  # inputs untouched
        keep = ~res.flagged
        a = U[keep].double().mean(0)
        w = w + a
        prev = a.float()
        out.append({cid: (bool(res.flagged[i]), float(res.scores[i])) for i, cid in enumerate(ids)})
    return out, set(attackers)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fldetector_flags_sign_flippers_without_false_positives(seed):
    """30 hospitals, 6 consistent sign-flip attackers: from the start round (window + 1 = 11)
    on, exactly the attackers are flagged every round; no one is flagged before."""
    rounds, attackers = federation(attackers=(2, 9, 15, 21, 27, 28), seed=seed)
    for t, r in enumerate(rounds, start=1):
        flagged = {cid for cid, (f, _) in r.items() if f}
        assert flagged == (attackers if t >= 11 else set()), (t, flagged)
        if t >= 3:
            assert all(not math.isnan(s) for _, s in r.values())  # every client scored
    last = rounds[-1]
    assert min(last[c][1] for c in attackers) > max(s for c, (_, s) in last.items() if c not in attackers)


def test_fldetector_single_attacker_in_ten():
    rounds, _ = federation(n=10, attackers=(3,), seed=4)
    assert all({c for c, (f, _) in r.items() if f} == {3} for r in rounds[10:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fldetector_flags_no_one_without_attackers(seed):
    """All 30 hospitals honest (heterogeneous Hessians, so the scores differ): the gap
    statistic finds one cluster in every round."""
    rounds, _ = federation(seed=seed)
    assert not any(f for r in rounds for f, _ in r.values())
    assert len({round(s, 6) for _, s in rounds[-1].values()}) > 1  # the scores do differ


def test_fldetector_no_flags_on_identical_updates():
    """Identical honest updates (every round the same row for everyone): no flags."""
    det = detector("fldetector", window=3)
    state: dict = {}
    prev = None
    g = torch.Generator().manual_seed(0)
    for t in range(1, 12):
        row = torch.randn(6, generator=g)
        U = row.expand(8, -1).clone()
        res = det(U, DetectionContext(client_ids=tuple(range(8)), round=t, global_update=prev, state=state))
        assert not res.flagged.any()
        prev = row


def test_fldetector_permutation_invariance():
    """Presenting the rows in a random order each round (ids permuted along) gives the same
    flags and scores per client id."""
    kw = {"attackers": (1, 4, 8), "n": 15, "seed": 3, "rounds": 16}
    a, _ = federation(**kw)
    b, _ = federation(**kw, perm_seed=7)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for cid in ra:
            assert ra[cid][0] == rb[cid][0]
            sa, sb = ra[cid][1], rb[cid][1]
            assert (math.isnan(sa) and math.isnan(sb)) or sa == pytest.approx(sb, rel=1e-9, abs=1e-12)


def test_fldetector_partial_participation():
    """20 of 30 hospitals per round with pairs = "clients": a client's first appearance has
    no score (NaN, never flagged); later its prediction uses its last update and the model
    offset since then. Pooled over seeds 0-4 the attackers are found (TPR >= 0.85, measured
    0.91) with few false positives (FPR <= 0.02, measured 0.004); with pairs = "global"
    (the paper's global update differences) the change of the sampled set swamps the
    curvature and detection fails (measured TPR <= 0.24)."""
    attackers = (2, 9, 15, 21, 27, 28)
    counts = {"clients": DetectionCounts(), "global": DetectionCounts()}
    for mode, seed in itertools.product(counts, range(5)):
        rounds, att = federation(attackers=attackers, sample=20, rounds=24, seed=seed, params={"pairs": mode})
        seen: set = set()
        for t, r in enumerate(rounds, start=1):
            for cid, (f, s) in r.items():
                if cid not in seen:
                    assert math.isnan(s) and not f
            seen |= set(r)
            if t >= 11:
                ids = list(r)
                counts[mode] += DetectionCounts.of([r[c][0] for c in ids], [c in att for c in ids])
    assert counts["clients"].tpr >= 0.85 and counts["clients"].fpr <= 0.02
    assert counts["global"].tpr < 0.5


def test_fldetector_max_staleness_and_state_keys():
    """With max_staleness = 1 a client that skipped the previous round is not scored; the
    state is keyed by partition id."""
    det = detector("fldetector", max_staleness=1, start_round=1)
    state: dict = {}
    g = torch.Generator().manual_seed(0)
    prev = None
    plan = [(10, 11, 12, 13), (10, 11, 12, 13), (10, 11, 12, 13), (10, 11, 13), (10, 11, 12, 13)]
    for t, ids in enumerate(plan, start=1):
        U = torch.randn(len(ids), 5, generator=g)
        res = det(U, DetectionContext(client_ids=ids, round=t, global_update=prev, state=state))
        prev = U.mean(0)
        if t == 5:
            assert math.isnan(float(res.scores[ids.index(12)]))
            assert not math.isnan(float(res.scores[ids.index(10)]))
    assert set(state["last"]) == {10, 11, 12, 13} and set(state["windows"]) <= {10, 11, 12, 13}


def test_fldetector_rejects_bad_input():
    det = detector("fldetector")
    with pytest.raises(ValueError, match="client_ids"):
        det(torch.zeros(3, 2), DetectionContext(client_ids=(1, 2)))
    with pytest.raises(ValueError, match="global_update"):
        det(torch.zeros(3, 2), DetectionContext(global_update=torch.zeros(5), state={"calls": 1}))


# --------------------------------------------------------------------------- FLAME clustering


@st.composite
def clustered(draw):
    """(X, far): h honest rows near a common direction, k < h far rows in the opposite one."""
    h = draw(st.integers(4, 12))
    k = draw(st.integers(1, h - 1))
    d = draw(st.integers(3, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g)
    H = base + 0.05 * torch.randn(h, d, generator=g) * base.norm()
    M = -base + 0.05 * torch.randn(k, d, generator=g) * base.norm()
    X = torch.cat([H, M])
    far = torch.cat([torch.zeros(h, dtype=torch.bool), torch.ones(k, dtype=torch.bool)])
    return X, far


@SETTINGS
@given(clustered(), st.randoms(use_true_random=False))
def test_flame_cluster_flags_far_minority_and_is_permutation_invariant(problem, rnd):
    """Every far row is flagged and the kept rows are a majority (HDBSCAN may also drop a
    stray honest row: FLAME keeps only the densest majority cluster); relabelling the rows
    permutes the flags."""
    X, far = problem
    n = X.shape[0]
    det = detector("flame_cluster")
    res = det(X, DetectionContext())
    assert bool(res.flagged[far].all())
    assert int((~res.flagged).sum()) >= n // 2 + 1
    perm = list(range(X.shape[0]))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    res_p = det(X[p], DetectionContext(client_ids=tuple(perm)))
    assert torch.equal(res_p.flagged, res.flagged[p])


@pytest.mark.parametrize("name", ["flame_cluster", "none", "fldetector"])
def test_no_flags_on_identical_rows(name):
    X = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))[0].expand(7, -1).clone()
    res = detector(name)(X, DetectionContext(client_ids=tuple(range(7)), round=20, state={}))
    assert not res.flagged.any() and res.flagged.shape == (7,) and res.flagged.dtype == torch.bool


def test_flame_cluster_reuses_the_flame_rule():
    """The detector flags exactly the rows the FLAME rule gives weight 0."""
    g = torch.Generator().manual_seed(2)
    X = torch.cat([torch.randn(6, 4, generator=g) * 0.1 + 1, torch.randn(3, 4, generator=g) * 0.1 - 1])
    flame = AGGREGATORS.get("flame")
    res = flame.obj(flame.params(lam=0.0))(X, AggregationContext())
    assert torch.equal(detector("flame_cluster")(X, DetectionContext()).flagged, res.weights == 0)


# --------------------------------------------------------------------------- composition, rates


def _rule(name, **p):
    e = AGGREGATORS.get(name)
    return e.obj(e.params(**p))


class _Fixed:
    """A detector that flags a fixed mask (to test the composition alone)."""

    def __init__(self, mask):
        self.mask = torch.tensor(mask)

    def __call__(self, updates, ctx):
        from fedmedsec.detectors import DetectionResult

        return DetectionResult(self.mask.clone(), None)


@pytest.mark.parametrize("rule", ["fedavg", "median", "krum", "foolsgold"])
def test_aggregate_with_detection_drops_flagged_rows_before_the_rule(rule):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 4, generator=g)
    mask = [False, True, False, False, True, False, False]
    keep = torch.tensor([not m for m in mask])
    ids = tuple(range(10, 17))
    w = torch.arange(1.0, 8.0)
    w = w / w.sum()
    actx = AggregationContext(f=1, client_ids=ids, weights=w, state={})
    _, res = aggregate_with_detection(X, _Fixed(mask), DetectionContext(client_ids=ids), _rule(rule), actx)
    sub = AggregationContext(f=1, client_ids=tuple(i for i, k in zip(ids, keep) if k),
                             weights=w[keep] / w[keep].sum(), state={})
    want = _rule(rule)(X[keep], sub)
    torch.testing.assert_close(res.aggregate, want.aggregate)
    if want.weights is None:
        assert res.weights is None
    else:
        assert res.weights.shape == (7,) and torch.all(res.weights[~keep] == 0)
        torch.testing.assert_close(res.weights[keep], want.weights)


def test_aggregate_with_detection_all_or_nothing():
    X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    actx = AggregationContext()
    _, res = aggregate_with_detection(X, _Fixed([True] * 4), DetectionContext(), _rule("fedavg"), actx)
    assert torch.equal(res.aggregate, torch.zeros(3)) and torch.equal(res.weights, torch.zeros(4))
    _, res = aggregate_with_detection(X, _Fixed([False] * 4), DetectionContext(), _rule("fedavg"), actx)
    torch.testing.assert_close(res.aggregate, X.mean(0))


@SETTINGS
@given(st.lists(st.tuples(st.lists(st.booleans(), min_size=1, max_size=8), st.randoms(use_true_random=False)),
                min_size=1, max_size=5))
def test_detection_counts_match_brute_force(rounds):
    """Per round and summed over rounds, TPR = flagged attackers / attackers and FPR =
    flagged honest / honest, counted one decision at a time."""
    total = DetectionCounts()
    decisions = []
    for attacking, rnd in rounds:
        flagged = [rnd.random() < 0.5 for _ in attacking]
        total = total + DetectionCounts.of(flagged, attacking)
        decisions += list(zip(flagged, attacking))
    pos = [f for f, a in decisions if a]
    neg = [f for f, a in decisions if not a]
    assert total.tpr == (sum(pos) / len(pos) if pos else None)
    assert total.fpr == (sum(neg) / len(neg) if neg else None)
    assert total.to_dict()["tp"] == sum(pos)


def test_registry_names_and_params():
    assert {"fldetector", "flame_cluster", "none"} <= set(DETECTORS.names())
    with pytest.raises(ValidationError, match="windw"):
        DETECTORS.get("fldetector").params(windw=3)
    p = DETECTORS.get("fldetector").params()
    assert p.window == 10 and p.references == 20
