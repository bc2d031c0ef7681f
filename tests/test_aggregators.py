"""Unit tests: each vectorised rule against a naive loop reference, and each rule's defining
property (FLTrust trust, FoolsGold sybils, FLAME clustering, DnC filtering, SignGuard and
ClippedClustering filtering, pre-steps); the reviewer's bugs (FoolsGold pardoning, float32
range, geometric median stopping, Krum ties, preconditions on the rows a rule receives); the
registry's capability flags. The full reference check against brute-force loops, ByzFL and
Flower is tests/test_reference_aggregators.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmedsec.aggregators import (
    AGGREGATORS,
    CAPABILITIES,
    PRE_AGGREGATORS,
    AggregationContext,
    PreconditionError,
    aggregate,
    precondition_problem,
)
from fedmedsec.aggregators._common import pairwise_sq_dists
from fedmedsec.aggregators.krum import krum_scores


def rule(name, **params):
    e = AGGREGATORS.get(name)
    return e.obj(e.params(**params))


def data(n, d, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale


# ---------------------------------------------------------------- naive references (float64)
def ref_krum_scores(X, f, rows=None):
    rows = list(range(len(X))) if rows is None else rows
    k = len(rows) - f - 2
    out = {}
    for i in rows:
        ds = sorted(float(((X[i] - X[j]) ** 2).sum()) for j in rows if j != i)
        out[i] = sum(ds[: max(k, 1) if len(rows) > 1 else 0])
    return out


def ref_bulyan(X, f):
    X = X.double()
    n, d = X.shape
    theta, beta = n - 2 * f, n - 4 * f
    remaining, chosen = list(range(n)), []
    for _ in range(theta):
        sc = ref_krum_scores(X, f, remaining)
        best = min(sc.values())
        tied = [r for r in remaining if sc[r] <= best * (1 + 1e-6)]
        total = {r: sum(float(((X[r] - X[j]) ** 2).sum()) for j in remaining) for r in tied}
        i = min(tied, key=lambda r: (total[r], r))
        chosen.append(i)
        remaining.remove(i)
    S = X[sorted(chosen)]
    out = torch.empty(d, dtype=torch.float64)
    for j in range(d):
        col = sorted(S[:, j].tolist())
        m = (col[(theta - 1) // 2] + col[theta // 2]) / 2
        closest = sorted(col, key=lambda v: abs(v - m))[:beta]
        out[j] = sum(closest) / beta
    return out, sorted(chosen)


def ref_trimmed_mean(X, b):
    n, d = X.shape
    return torch.tensor([sum(sorted(X[:, j].tolist())[b : n - b]) / (n - 2 * b) for j in range(d)])


def ref_centered_clipping(X, v0, tau, iters):
    X, v = X.double(), v0.double().clone()
    n = len(X)
    for _ in range(iters):
        step = torch.zeros_like(v)
        for i in range(n):
            z = X[i] - v
            step += z * min(1.0, tau / float(z.norm())) / n
        v = v + step
    return v


def ref_weiszfeld(X, nu, iters):
    X = X.double()
    v = X.mean(0)
    for _ in range(iters):
        w = [1.0 / max(nu, float((v - x).norm())) for x in X]
        v = sum(wi * x for wi, x in zip(w, X)) / sum(w)
    return v


# ---------------------------------------------------------------- against the references
@pytest.mark.parametrize("n,f,seed", [(7, 1, 0), (12, 2, 1), (20, 4, 2), (9, 0, 3)])
def test_krum_scores_match_loop(n, f, seed):
    X = data(n, 30, seed)
    got = krum_scores(pairwise_sq_dists(X), f)
    want = ref_krum_scores(X.double(), f)
    torch.testing.assert_close(got, torch.tensor([want[i] for i in range(n)], dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)
    res = rule("krum")(X, AggregationContext(f=f))
    assert torch.equal(res.aggregate, X[min(want, key=want.get)])


@pytest.mark.parametrize("n,f,seed", [(7, 1, 0), (11, 2, 1), (19, 4, 2), (5, 0, 3), (8, 1, 4)])
def test_bulyan_matches_loop(n, f, seed):
    X = data(n, 25, seed)
    X[:f] += 5.0  # give the selection something to do
    res = rule("bulyan")(X, AggregationContext(f=f))
    want, chosen = ref_bulyan(X, f)
    torch.testing.assert_close(res.aggregate.double(), want, rtol=1e-5, atol=1e-5)
    assert sorted(torch.nonzero(res.weights).flatten().tolist()) == chosen


@pytest.mark.parametrize("n,b", [(5, 0), (5, 2), (10, 3), (11, 1)])
def test_trimmed_mean_matches_loop(n, b):
    X = data(n, 40, n + b)
    out = rule("trimmed_mean")(X, AggregationContext(f=b)).aggregate
    torch.testing.assert_close(out, ref_trimmed_mean(X, b).float(), rtol=1e-5, atol=1e-6)
    out = rule("trimmed_mean", beta=b / n + 1e-9)(X, AggregationContext(f=0)).aggregate
    torch.testing.assert_close(out, ref_trimmed_mean(X, b).float(), rtol=1e-5, atol=1e-6)


def test_median_even_and_odd():
    X = torch.tensor([[1.0, 5.0], [2.0, 7.0], [10.0, 6.0], [4.0, 0.0]])
    assert rule("median")(X, AggregationContext()).aggregate.tolist() == [3.0, 5.5]
    assert rule("median")(X[:3], AggregationContext()).aggregate.tolist() == [2.0, 6.0]


@pytest.mark.parametrize("tau,iters,seed", [(0.5, 1, 0), (2.0, 3, 1), (100.0, 2, 2), (0.1, 5, 3)])
def test_centered_clipping_matches_loop(tau, iters, seed):
    X = data(9, 20, seed) + 1.0
    X[0] += 50.0
    v0 = data(1, 20, seed + 10)[0]
    res = rule("centered_clipping", tau=tau, iters=iters)(X, AggregationContext(previous=v0))
    torch.testing.assert_close(res.aggregate.double(), ref_centered_clipping(X, v0, tau, iters),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_median_matches_weiszfeld_loop(seed):
    X = data(10, 15, seed)
    X[:3] += 30.0
    got = rule("geometric_median", max_iter=500, tol=0.0)(X, AggregationContext()).aggregate
    want = ref_weiszfeld(X, 1e-6, 500)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    # the first-order optimality condition of the geometric median: sum_i (v - x_i)/||v - x_i|| = 0
    g = sum((want - x) / (want - x).norm() for x in X.double())
    assert float(g.norm()) < 1e-3


def test_norm_bounding_clips_and_adds_seeded_noise():
    X = data(6, 10, 0) * 10
    out = rule("norm_bounding", max_norm=1.0)(X, AggregationContext()).aggregate
    want = sum(x / max(1.0, float(x.norm())) for x in X) / 6
    torch.testing.assert_close(out, want)
    noisy = rule("norm_bounding", max_norm=1.0, noise_sigma=0.5)
    a = noisy(X, AggregationContext(generator=torch.Generator().manual_seed(3))).aggregate
    b = noisy(X, AggregationContext(generator=torch.Generator().manual_seed(3))).aggregate
    assert torch.equal(a, b) and not torch.allclose(a, out)


# ---------------------------------------------------------------- requirements and errors
def test_requirement_messages():
    req = {n: AGGREGATORS.get(n).meta.get("requirement") for n in ("krum", "multi_krum", "bulyan")}
    assert req["krum"](4, 1) == "krum needs n > 2f + 2, got n=4, f=1"
    assert req["krum"](5, 1) is None
    assert req["multi_krum"](6, 2) == "multi_krum needs n > 2f + 2, got n=6, f=2"
    assert req["bulyan"](10, 3) == "bulyan needs n >= 4f + 3, got n=10, f=3"
    assert req["bulyan"](15, 3) is None
    with pytest.raises(ValueError, match=r"bulyan needs n >= 4f \+ 3, got n=10, f=3"):
        rule("bulyan")(data(10, 4), AggregationContext(f=3))
    with pytest.raises(ValueError, match="krum needs"):
        rule("krum")(data(4, 4), AggregationContext(f=1))
    for entry in AGGREGATORS:
        assert isinstance(entry.meta.get("filters"), bool), entry.name


def test_bad_params_are_refused():
    with pytest.raises(ValueError):
        AGGREGATORS.get("trimmed_mean").params(beta=0.5)
    with pytest.raises(ValueError):
        AGGREGATORS.get("krum").params(m=3)  # unknown key
    with pytest.raises(ValueError, match="defense.m = 9"):
        rule("multi_krum", m=9)(data(8, 3), AggregationContext(f=1))


# ---------------------------------------------------------------- FLTrust
def test_fltrust_trust_scores_and_norm_bound():
    g0 = torch.tensor([1.0, 0.0, 0.0])
    X = torch.tensor([[2.0, 1.0, 0.0], [-3.0, 0.0, 1.0], [0.5, -0.5, 0.0], [0.0, 0.0, 4.0]])
    res = rule("fltrust")(X, AggregationContext(reference=g0))
    assert res.weights[1] == 0 and res.weights[3] == 0  # negative and zero cosine
    cos = [2 / math.sqrt(5), 0.5 / math.sqrt(0.5)]
    want = (cos[0] * X[0] / X[0].norm() + cos[1] * X[2] / X[2].norm()) / sum(cos)
    torch.testing.assert_close(res.aggregate, want)
    assert float(res.aggregate.norm()) <= float(g0.norm()) + 1e-6
    big = data(8, 5, 1) * 1e4
    out = rule("fltrust")(big, AggregationContext(reference=torch.ones(5) * 0.1)).aggregate
    assert float(out.norm()) <= float((torch.ones(5) * 0.1).norm()) * (1 + 1e-5)


def test_fltrust_zero_when_no_trust_and_needs_reference():
    g0 = torch.tensor([1.0, 0.0])
    res = rule("fltrust")(-torch.ones(3, 2), AggregationContext(reference=g0))
    assert torch.equal(res.aggregate, torch.zeros(2)) and (res.weights == 0).all()
    with pytest.raises(ValueError, match="ctx.reference"):
        rule("fltrust")(torch.ones(3, 2), AggregationContext())


# ---------------------------------------------------------------- FoolsGold, FLAME, DnC
def test_foolsgold_downweights_sybils_across_rounds():
    """Three sybils push the same direction every round; seven honest clients are diverse."""
    agg, state = rule("foolsgold"), {}
    g = torch.Generator().manual_seed(0)
    target = torch.randn(50, generator=g)
    for rnd in range(3):
        honest = torch.randn(7, 50, generator=g)
        sybils = target + 0.01 * torch.randn(3, 50, generator=g)
        X = torch.cat([sybils, honest])
        ids = tuple(range(100, 110))
        res = agg(X, AggregationContext(client_ids=ids, state=state, round=rnd + 1))
    assert (res.weights[:3] == 0).all() and (res.weights[3:] > 0).all()
    assert set(state["history"]) == set(ids)


def test_flame_excludes_minority_direction_and_clips():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, generator=g)
    honest = base + 0.3 * torch.randn(8, 40, generator=g)
    backdoor = -base * 5 + 0.1 * torch.randn(3, 40, generator=g)
    X = torch.cat([backdoor, honest])
    res = rule("flame", lam=0.0)(X, AggregationContext())
    # the backdoor rows are dropped; HDBSCAN may also leave a few honest rows out as noise
    assert (res.weights[:3] == 0).all() and int((res.weights[3:] > 0).sum()) >= 5
    S = float(X.norm(dim=1).median())
    assert float(res.aggregate.norm()) <= S + 1e-4
    a = rule("flame")(X, AggregationContext(generator=torch.Generator().manual_seed(1))).aggregate
    noise = a - res.aggregate
    assert 0 < float(noise.std()) < 0.01 * S  # N(0, (0.001 S)^2)


def test_dnc_drops_the_projected_outliers():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(12, 300, generator=g) * 0.1
    X[:2] += torch.ones(300) * 0.5  # shifted along one direction
    ctx = AggregationContext(f=2, generator=torch.Generator().manual_seed(0))
    res = rule("dnc", b=100, niters=3)(X, ctx)
    assert (res.weights[:2] == 0).all() and (res.weights[2:] > 0).all()


# ---------------------------------------------------------------- pre-aggregation
def test_bucketing_partitions_rows():
    X = data(7, 6, 0)
    pre = PRE_AGGREGATORS.get("bucketing")
    Y = pre.obj(pre.params(s=3))(X, AggregationContext(generator=torch.Generator().manual_seed(0)))
    assert Y.shape == (3, 6)
    # bucket sizes 3, 3, 1: the size-weighted bucket means add up to the sum of all rows
    sizes = torch.tensor([3.0, 3.0, 1.0])
    torch.testing.assert_close(sizes @ Y, X.sum(0), rtol=1e-5, atol=1e-5)
    assert any(torch.allclose(Y[2], x) for x in X)


def test_nnm_matches_loop_and_pipeline():
    X = data(8, 5, 1)
    X[0] += 100
    f = 2
    pre = PRE_AGGREGATORS.get("nnm")
    Y = pre.obj(pre.params())(X, AggregationContext(f=f))
    for i in range(8):
        order = sorted(range(8), key=lambda j: float(((X[i] - X[j]) ** 2).sum()))
        torch.testing.assert_close(Y[i], X[order[: 8 - f]].mean(0), rtol=1e-5, atol=1e-5)
    res = aggregate(X, rule("median"), AggregationContext(f=f), pre=[pre.obj(pre.params())])
    assert res.weights is None
    plain = aggregate(X, rule("krum"), AggregationContext(f=f))
    assert plain.weights is not None


def test_bulyan_coordinate_step_ties():
    """Values tied in distance to the median: the lower one fills the last place."""
    import numpy as np

    from fedmedsec.aggregators.krum import beta_closest_to_median

    sel = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]], dtype=np.float32)  # median 2
    assert beta_closest_to_median(sel, 2).tolist() == [1.5]  # {2, 1}
    assert beta_closest_to_median(sel, 3).tolist() == [2.0]  # {1, 2, 3}
    assert beta_closest_to_median(sel, 4).tolist() == [1.5]  # {0, 1, 2, 3}


# ---------------------------------------------------------------- reviewer bug a: FoolsGold
def test_foolsgold_pardoning_keeps_v_nonnegative():
    """Client 2's history is anti-correlated with both others (max_{j != i} cs_2j < 0). With
    v_i = max_j cs_ij over all j, the zero diagonal included (the authors' code), v_2 = 0 and
    the two near-parallel clients 0 and 1 are the sybils: alpha = [0, 0, 1]. A max over j != i
    gave v_2 < 0, pardoning flipped signs and the weights came out [1, 1, 0.5]."""
    from fedmedsec.aggregators.foolsgold import foolsgold_weights

    H = torch.tensor([[1.0, 0, 0], [1, 0.02, 0], [-1, 0, 0.01]], dtype=torch.float64)
    assert foolsgold_weights(H, 1.0).tolist() == [0.0, 0.0, 1.0]
    res = rule("foolsgold")(H, AggregationContext(client_ids=(7, 8, 9), state={}))
    assert res.weights.tolist() == [0.0, 0.0, 1.0]
    assert torch.equal(res.aggregate, H[2])


def ref_foolsgold(H: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Fung et al. 2020, Algorithm 1, with the authors' cs = cos - I (loops, float64)."""
    n = len(H)
    nrm = [math.sqrt(sum(v * v for v in h)) for h in H]
    cs = [[0.0 if i == j else float(np.dot(H[i], H[j])) / (nrm[i] * nrm[j]) for j in range(n)]
          for i in range(n)]
    v = [max(row) for row in cs]
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                cs[i][j] *= v[i] / v[j]
    alpha = [min(1.0, max(0.0, 1.0 - max(row))) for row in cs]
    top = max(alpha)
    alpha = [a / top for a in alpha]
    out = []
    for a in alpha:
        if a >= 1.0:
            out.append(1.0)
        elif a <= 0.0:
            out.append(0.0)
        else:
            out.append(min(1.0, max(0.0, kappa * (math.log(a / (1 - a)) + 0.5))))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_foolsgold_weights_match_algorithm_1_loop(seed):
    from fedmedsec.aggregators.foolsgold import foolsgold_weights

    g = torch.Generator().manual_seed(seed)
    H = torch.randn(7, 5, generator=g, dtype=torch.float64)
    H[1] = -H[0] + 0.05 * torch.randn(5, generator=g, dtype=torch.float64)  # anti-correlated
    H[2:4] = H[4] + 0.01 * torch.randn(2, 5, generator=g, dtype=torch.float64)  # sybils
    np.testing.assert_allclose(foolsgold_weights(H, 1.0).numpy(), ref_foolsgold(H.numpy()),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- reviewer bug b: float32 range
ALL = AGGREGATORS.names()
NOISELESS = {"flame": {"lam": 0.0}, "norm_bounding": {"noise_sigma": 0.0}}


def huge_case(big: float, seed: int = 0, n: int = 11, d: int = 16, f: int = 2):
    """n float32 rows, the first f at +-big (finite), the rest honest N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    X[0] = big
    X[1] = -big * torch.sign(torch.randn(d, generator=g))
    return X, f


def ctx_all(X, f, ref=None):
    return AggregationContext(
        f=f, reference=X[f:].mean(0) if ref is None else ref,
        generator=torch.Generator().manual_seed(0), client_ids=tuple(range(len(X))), state={},
    )


@pytest.mark.parametrize("big", [1e30, 3e38])
@pytest.mark.parametrize("name", ALL)
def test_finite_output_for_rows_near_the_float32_max(name, big):
    """No rule returns a non-finite aggregate (or weights) for finite input, in the input dtype;
    robust rules that cover the f huge rows stay at the honest scale."""
    X, f = huge_case(big)
    res = rule(name, **NOISELESS.get(name, {}))(X, ctx_all(X, f))
    assert res.aggregate.dtype == torch.float32 and torch.isfinite(res.aggregate).all()
    if res.weights is not None:
        assert torch.isfinite(res.weights).all()
    robust = {"bulyan", "krum", "multi_krum", "median", "trimmed_mean", "geometric_median",
              "centered_clipping", "norm_bounding", "fltrust", "dnc", "signguard",
              "clipped_clustering", "flame"}
    if name in robust:
        assert float(res.aggregate.double().norm()) < 100.0, name


@pytest.mark.parametrize("big", [1e30, 3e38])
@pytest.mark.parametrize("seed", range(5))
def test_krum_family_never_picks_a_huge_row(big, seed):
    """Multi-Krum averaged the 1e30 row in 118 of 120 stacks where f covers it (float32 Gram
    overflow); Krum and Bulyan selected it too. The Gram matrix is float64 now."""
    X, f = huge_case(big, seed)
    for name in ("krum", "multi_krum", "bulyan"):
        res = rule(name)(X, ctx_all(X, f))
        assert (res.weights[:f] == 0).all(), name
        assert (res.weights[f:] > 0).any(), name


@pytest.mark.parametrize("big", [1e30, 3e38])
def test_clipping_rules_clip_huge_rows_not_drop_or_average_them(big):
    """Norm bounding used to drop the huge row (its float32 norm was inf, scale 0); centered
    clipping and the geometric median returned the plain mean. Compare with float64 loops."""
    X, f = huge_case(big, n=9, d=6)
    X64 = X.double()
    # norm bounding with M = 1: every row scaled to norm <= 1, the huge ones to norm exactly 1
    want = sum(x / max(1.0, float(x.norm())) for x in X64) / len(X64)
    got = rule("norm_bounding", max_norm=1.0)(X, AggregationContext()).aggregate
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # centered clipping around 0 with tau = 1
    got = rule("centered_clipping", tau=1.0)(X, AggregationContext(f=f)).aggregate
    want = sum(x * min(1.0, 1.0 / float(x.norm())) for x in X64) / len(X64)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # geometric median: near the honest rows, far from the mean
    got = rule("geometric_median")(X, AggregationContext(f=f)).aggregate.double()
    assert float((got - X64[f:].mean(0)).norm()) < 3.0


def test_row_norms_and_distances_over_the_float32_range():
    from fedmedsec.aggregators._common import dists_to, row_norms

    X = torch.tensor([[3e38, 3e38], [1e-30, -1e-30], [0.0, 0.0], [1e20, 0.0], [3.0, 4.0]])
    want = [math.hypot(float(a), float(b)) for a, b in X.double().tolist()]
    np.testing.assert_allclose(row_norms(X).numpy(), want, rtol=1e-7)
    v = torch.tensor([-3e38, 0.0])
    want = [math.hypot(float(a) + 3e38, float(b)) for a, b in X.double().tolist()]
    np.testing.assert_allclose(dists_to(X, v).numpy(), want, rtol=1e-7)


# ---------------------------------------------------------------- reviewer bug c: geometric median
def brute_weiszfeld(X: np.ndarray, nu: float = 1e-6) -> np.ndarray:
    """Smoothed Weiszfeld in float64 with direct distances, run until the step is below 1e-15
    of the median distance (or 100000 iterations): the geometric median to float64 precision."""
    v = X.mean(0)
    for _ in range(100000):
        dist = np.maximum(nu, np.sqrt(((X - v) ** 2).sum(1)))
        w = 1.0 / dist
        new = (w[:, None] * X).sum(0) / w.sum()
        if np.linalg.norm(new - v) <= 1e-15 * np.median(dist):
            return new
        v = new
    return v


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("far", [1e9, 1e30])
def test_geometric_median_with_one_far_row_matches_brute_force(seed, far):
    """One row at 1e9 against an honest spread of ~9: the objective's relative decrease fell
    below tol after a few iterations (error 1.8 and more); the step rule converges."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(10, 5, generator=g, dtype=torch.float64) * 3
    X[0] = far
    want = brute_weiszfeld(X.numpy())
    got = rule("geometric_median")(X, AggregationContext()).aggregate.numpy()
    spread = float(np.linalg.norm(X[1:].numpy() - X[1:].numpy().mean(0), axis=1).max())
    assert np.linalg.norm(got - want) < 1e-5 * spread


# ---------------------------------------------------------------- reviewer bug d: Krum ties
def test_krum_exact_ties_are_permutation_invariant():
    """Rows 1 and 3 tie in score (5) and in total squared distance (14); the lower index used
    to win, so the output depended on the row order. Now: the lexicographically smaller row."""
    X = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    krum = rule("krum")
    for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        assert krum(X[perm], AggregationContext(f=0)).aggregate.tolist() == [1.0]


def test_krum_strictly_smaller_score_wins_over_a_relative_tolerance():
    """Scores 4 - 8e-9 and 4 - 1e-8 differ by 5e-10 relative: the old TIE_RTOL = 1e-6 called
    them tied and picked the larger one by total distance."""
    X = torch.tensor([[-1.000000000148596], [0.9999999985751252], [-2.9999999981176617],
                      [-1.0000000005407734]], dtype=torch.float64)
    res = rule("krum")(X, AggregationContext(f=0))
    assert res.weights.tolist() == [0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------- reviewer bugs e, f: preconditions
def test_precondition_error_after_bucketing():
    pre = PRE_AGGREGATORS.get("bucketing")
    msg = r"^krum needs n > 2f \+ 2, got n=5, f=2 \(10 updates -> 5 rows"
    with pytest.raises(PreconditionError, match=msg):
        aggregate(torch.randn(10, 5), rule("krum"), AggregationContext(f=2),
                  pre=[pre.obj(pre.params())])
    assert precondition_problem("krum", 10, 2, ["bucketing"]) == (
        "krum needs n > 2f + 2, got n=5, f=2 (10 updates -> 5 rows after bucketing)")
    assert precondition_problem("krum", 12, 2, ["bucketing"]) is not None  # 6 rows
    assert precondition_problem("krum", 14, 2, ["bucketing"]) is None  # 7 rows
    assert precondition_problem("krum", 14, 2, [("bucketing", pre.params(s=3))]) is not None
    assert precondition_problem("median", 3, 2, ["nnm"]).startswith("median needs n > 2f")
    assert precondition_problem("median", 2, 2, ["nnm"]) == "nnm needs n > f, got n=2, f=2"
    assert precondition_problem("fedavg", 0, 0) == "fedavg needs at least one update, got n=0"
    mk = AGGREGATORS.get("multi_krum")
    msg = precondition_problem("multi_krum", 8, 1, params=mk.params(m=9))
    assert msg.startswith("defense.m = 9")
    for name in ALL:  # one line each
        msg = precondition_problem(name, 2, 1, ["bucketing"])
        assert msg is None or "\n" not in msg


def test_rules_raise_precondition_error_for_the_rows_they_receive():
    """Dropped replies: a Krum built for 10 clients called on 5 rows raises PreconditionError
    (a ValueError), and precondition_problem says so beforehand."""
    X = torch.randn(5, 4)
    for name in ("krum", "multi_krum", "bulyan", "median", "trimmed_mean", "geometric_median",
                 "centered_clipping", "dnc", "flame", "signguard", "clipped_clustering"):
        assert precondition_problem(name, 5, 3) is not None
        with pytest.raises(PreconditionError):
            rule(name)(X, ctx_all(X, 3))
    with pytest.raises(PreconditionError, match="needs at least one update"):
        rule("median")(torch.zeros(0, 4), AggregationContext())


HONEST_MAJORITY = ["median", "trimmed_mean", "geometric_median", "centered_clipping", "dnc",
                   "flame", "signguard", "clipped_clustering"]


@pytest.mark.parametrize("name", HONEST_MAJORITY)
def test_honest_majority_requirement(name):
    req = AGGREGATORS.get(name).meta["requirement"]
    assert req(4, 2) == f"{name} needs n > 2f (an honest majority), got n=4, f=2"
    assert req(5, 2) is None


def test_requirements_of_rules_without_a_majority_assumption():
    for name in ("fedavg", "fltrust", "foolsgold"):
        assert AGGREGATORS.get(name).meta["requirement"] is None, name
        assert precondition_problem(name, 4, 3) is None
    X = torch.randn(4, 3)
    rule("fltrust")(X, ctx_all(X, 3, ref=X[0]))  # runs with a Byzantine majority
    nb = AGGREGATORS.get("norm_bounding")
    assert precondition_problem("norm_bounding", 4, 2).startswith(
        "norm_bounding with defense.max_norm unset")
    assert precondition_problem("norm_bounding", 4, 2, params=nb.params(max_norm=1.0)) is None


# ---------------------------------------------------------------- capability flags
def test_capability_flags():
    for entry in AGGREGATORS:
        for cap in CAPABILITIES:
            assert isinstance(entry.meta.get(cap), bool), (entry.name, cap)
        assert "requirement" in entry.meta, entry.name
    caps = {cap: {e.name for e in AGGREGATORS if e.meta[cap]} for cap in CAPABILITIES}
    assert caps["needs_reference"] == {"fltrust"}
    assert caps["mean_sensitivity"] == {"fedavg"}
    assert caps["sum_only"] == {"fedavg"}
    assert caps["filters"] == {"krum", "multi_krum", "bulyan", "dnc", "flame", "fltrust",
                               "foolsgold", "signguard", "clipped_clustering"}


def test_mean_sensitivity_of_fedavg():
    """Updates clipped to S: replacing one of n rows moves FedAvg's output by at most 2S/n."""
    g = torch.Generator().manual_seed(0)
    S, n = 1.0, 8
    X = torch.randn(n, 20, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True).clamp(min=S) * S
    Y = X.clone()
    Y[3] = -X[3]
    a = rule("fedavg")(X, AggregationContext()).aggregate
    b = rule("fedavg")(Y, AggregationContext()).aggregate
    assert float((a - b).norm()) <= 2 * S / n + 1e-12
    # sum_only: the output is sum / n
    torch.testing.assert_close(a, X.sum(0) / n)


# ---------------------------------------------------------------- SignGuard, ClippedClustering
def test_signguard_filters_norm_outliers_and_sign_flippers():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(200, generator=g) + 0.2  # honest gradients mostly positive
    honest = base + 0.3 * torch.randn(8, 200, generator=g)
    flipped = -honest[:2]  # sign statistics inverted, same norms
    big = honest[2:3] * 10  # norm ratio 10 > R = 3
    X = torch.cat([flipped, big, honest])
    res = rule("signguard", coord_fraction=0.5)(X, AggregationContext(
        f=3, generator=torch.Generator().manual_seed(1)))
    assert (res.weights[:3] == 0).all() and (res.weights[3:] > 0).all()
    M = float(X.norm(dim=1).median())
    assert float(res.aggregate.norm()) <= M * (1 + 1e-5)


def test_clipped_clustering_keeps_the_larger_cosine_cluster_and_clips():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, generator=g)
    honest = base + 0.3 * torch.randn(7, 50, generator=g)
    mal = -3 * base + 0.1 * torch.randn(3, 50, generator=g)
    X = torch.cat([mal, honest])
    state = {}
    res = rule("clipped_clustering")(X, AggregationContext(f=3, state=state))
    assert (res.weights[:3] == 0).all() and (res.weights[3:] > 0).all()
    tau = float(np.median(X.double().norm(dim=1).numpy()))  # the mean of the middle two
    clipped = [x * min(1.0, tau / float(x.norm())) for x in X.double()[3:]]
    torch.testing.assert_close(res.aggregate.double(), sum(clipped) / 7, rtol=1e-5, atol=1e-6)
    assert len(state["norm_history"]) == 10
    # the history's median is the clipping threshold in the next round
    res2 = rule("clipped_clustering")(X * 0.5, AggregationContext(f=3, state=state))
    tau2 = float(np.median(np.concatenate([X.norm(dim=1).numpy(), 0.5 * X.norm(dim=1).numpy()])))
    clipped = [x * min(1.0, tau2 / float(x.norm())) for x in 0.5 * X.double()[3:]]
    torch.testing.assert_close(res2.aggregate.double(), sum(clipped) / 7, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_bulyan_coordinate_step_matches_sorting_by_distance_then_value(seed):
    """beta_closest_to_median against the definition: per coordinate, sort the values by
    (|v - median|, v) and average the first beta; small integers make ties common."""
    from fedmedsec.aggregators.krum import beta_closest_to_median

    rng = np.random.default_rng(seed)
    theta = int(rng.integers(3, 12))
    beta = int(rng.integers(1, theta + 1))
    sel = rng.integers(-3, 4, size=(theta, 50)).astype(np.float32)
    got = beta_closest_to_median(sel, beta)
    for j in range(50):
        col = sorted(float(v) for v in sel[:, j])
        m = (col[(theta - 1) // 2] + col[theta // 2]) / 2
        want = sum(sorted(col, key=lambda v: (abs(v - m), v))[:beta]) / beta
        assert got[j] == np.float32(want)
