"""Reference check: every registered aggregation rule (and pre step) against independent
implementations.

1. A brute-force reference per rule, written from the paper's definition in plain float64
   Python/numpy loops (``REFERENCE``), on ordinary and adversarial inputs: ties and duplicate
   rows (small integers, so float64 sums are exact), rows at 1e30 and 3e38, the threshold n
   (n = 2f + 3 for Krum, 4f + 3 for Bulyan, 2f + 1 for the honest-majority rules), n = 1, and
   d larger than one column chunk. Order statistics (median of odd n, Krum's row) must match
   exactly, means within float32 rounding. The clustering rules call the same library
   clustering as the paper (HDBSCAN, MeanShift) or an independent one (scipy's average linkage
   for ClippedClustering); everything around it is re-implemented in loops.
2. ByzFL 0.0.11 and Flower 1.42 where they have the rule. ByzFL is loaded through
   ``benchmarks/aggregators.py:load_byzfl`` (its package ``__init__`` needs torchvision); its
   tests skip with the reason when it is not installed (``pip install --no-deps byzfl==0.0.11``).

Known, documented differences (each asserted below, so a change in an anchor shows up):
  - ByzFL's Krum/MultiKrum score with n - f - 1 neighbours, the paper with n - f - 2: ByzFL
    with f + 1 is the paper with f, exactly, and ByzFL with f differs on some inputs.
  - ByzFL's GeometricMedian runs T fixed iterations from 0 (default T = 3): it matches only when
    run to convergence. ByzFL computes in float32 throughout (no float32-range safety).
  - Flower's Message-API Bulyan (flwr.serverapp.strategy) selects theta rows at once by
    Multi-Krum; the paper and Flower's legacy ``aggregate_bulyan`` select them one at a time
    by Krum on the shrinking set. We follow the paper and match the legacy function.
  - Flower's trimmed mean cuts int(beta n) per side (float product: pass (b + 0.5) / n).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmedsec.aggregators import (
    AGGREGATORS,
    PRE_AGGREGATORS,
    AggregationContext,
    PreconditionError,
    precondition_problem,
)

ROOT = Path(__file__).resolve().parents[1]
EPS32 = float(np.finfo(np.float32).eps)


def rule(name: str, **params):
    e = AGGREGATORS.get(name)
    return e.obj(e.params(**params))


def pre_step(name: str, **params):
    e = PRE_AGGREGATORS.get(name)
    return e.obj(e.params(**params))


def _bench():
    spec = importlib.util.spec_from_file_location("fedmedsec_bench_aggregators",
                                                  ROOT / "benchmarks" / "aggregators.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def byzfl():
    """(aggregators, preaggregators) modules of ByzFL 0.0.11, or skip with the reason."""
    try:
        return _bench().load_byzfl()
    except ImportError as e:
        pytest.skip(f"ByzFL anchor not importable: {e}")


@pytest.fixture(scope="module")
def flower():
    return pytest.importorskip("flwr.server.strategy.aggregate")


# ====================================================================== brute-force references
# Each takes X: float64 ndarray [n, d], f, the rule's params (a dict) and a seed for the rule's
# generator, and returns (aggregate: float64 [d], weights: float64 [n] or None). Loops over
# rows, pairs and coordinates; numpy only for a dot product of two rows.
def norm(v) -> float:
    return float(np.sqrt(np.dot(v, v)))


def sqdist(a, b) -> float:
    z = a - b
    return float(np.dot(z, z))


def cosine(a, b) -> float:
    na, nb = norm(a), norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def median_of(values) -> float:
    s = sorted(values)
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


def mean_rows(X, idx, coef=None):
    idx = list(idx)
    coef = [1.0 / len(idx)] * len(idx) if coef is None else coef
    return sum(c * X[i] for c, i in zip(coef, idx))


def ref_fedavg(X, f, p, seed):
    n = len(X)
    return mean_rows(X, range(n)), np.full(n, 1.0 / n)


def ref_median(X, f, p, seed):
    return np.array([median_of(X[:, j]) for j in range(X.shape[1])]), None


def ref_trimmed_mean(X, f, p, seed):
    n = len(X)
    b = math.floor(p["beta"] * n) if p.get("beta") is not None else f
    return np.array([sum(sorted(X[:, j])[b:n - b]) / (n - 2 * b) for j in range(X.shape[1])]), None


def krum_key(X, i, rows, f, at_least_one=False):
    """(score, total, row) of row i among ``rows``: the documented order, ties included."""
    s = len(rows)
    k = s - f - 2
    if at_least_one:
        k = min(max(1, k), s - 1)
    ds = sorted(sqdist(X[i], X[j]) for j in rows if j != i)
    return (sum(ds[:k]), sum(ds), tuple(X[i]))


def ref_krum(X, f, p, seed):
    rows = list(range(len(X)))
    i = min(rows, key=lambda r: krum_key(X, r, rows, f))
    w = np.zeros(len(X))
    w[i] = 1.0
    return X[i].copy(), w


def ref_multi_krum(X, f, p, seed):
    n = len(X)
    m = p.get("m") or n - f
    rows = list(range(n))
    sel = sorted(rows, key=lambda r: krum_key(X, r, rows, f))[:m]
    w = np.zeros(n)
    w[sel] = 1.0 / m
    return mean_rows(X, sel), w


def ref_bulyan(X, f, p, seed):
    n, d = X.shape
    theta, beta = n - 2 * f, n - 4 * f
    remaining, chosen = list(range(n)), []
    for _ in range(theta):
        i = min(remaining, key=lambda r: krum_key(X, r, remaining, f, at_least_one=True))
        chosen.append(i)
        remaining.remove(i)
    out = np.empty(d)
    for j in range(d):
        col = [X[i, j] for i in chosen]
        m = median_of(col)
        closest = sorted(col, key=lambda v: (abs(v - m), v))[:beta]  # ties: the lower first
        out[j] = sum(closest) / beta
    w = np.zeros(n)
    w[chosen] = 1.0 / theta
    return out, w


def ref_geometric_median(X, f, p, seed):
    """Smoothed Weiszfeld (RFA) with direct distances, to float64 convergence."""
    nu = p.get("nu", 1e-6)
    v = X.mean(0)
    for _ in range(200000):
        dist = [max(nu, math.sqrt(sqdist(v, x))) for x in X]
        w = [1.0 / t for t in dist]
        new = sum(wi * x for wi, x in zip(w, X)) / sum(w)
        step = math.sqrt(sqdist(new, v))
        v = new
        if step <= 1e-15 * median_of(dist):
            break
    return v, None


def ref_centered_clipping(X, f, p, seed, v0=None):
    n, d = X.shape
    v = np.zeros(d) if v0 is None else v0.astype(np.float64).copy()
    for _ in range(p.get("iters", 1)):
        dists = [math.sqrt(sqdist(x, v)) for x in X]
        tau = p.get("tau") or median_of(dists)
        step = sum((x - v) * min(1.0, tau / t if t > 0 else 1.0) for x, t in zip(X, dists)) / n
        v = v + step
    return v, None


def ref_norm_bounding(X, f, p, seed):
    n = len(X)
    norms = [norm(x) for x in X]
    M = p.get("max_norm") or median_of(norms)
    coef = [min(1.0, M / t) if t > 0 else 1.0 for t in norms]
    agg = sum(c * x for c, x in zip(coef, X)) / n
    if p.get("noise_sigma", 0.0) > 0:
        g = torch.Generator().manual_seed(seed)
        agg = agg + p["noise_sigma"] * torch.randn(X.shape[1], generator=g).double().numpy()
    return agg, np.array(coef) / n


def ref_fltrust(X, f, p, seed, g0=None):
    n, d = X.shape
    g0 = X[f:].mean(0) if g0 is None else g0
    ts = [max(0.0, cosine(x, g0)) for x in X]
    if sum(ts) == 0:
        return np.zeros(d), np.zeros(n)
    g0n = norm(g0)
    agg = sum(t * g0n / norm(x) * x for t, x in zip(ts, X) if t > 0) / sum(ts)
    return agg, np.array(ts) / sum(ts)


def ref_foolsgold(X, f, p, seed):
    """Fung et al. 2020, Algorithm 1, first round (history = the updates), cs = cos - I as in
    the authors' code: v_i = max_j cs_ij includes the zero diagonal."""
    n = len(X)
    kappa = p.get("kappa", 1.0)
    if n == 1:
        return X[0].copy(), np.ones(1)
    cs = [[0.0 if i == j else cosine(X[i], X[j]) for j in range(n)] for i in range(n)]
    v = [max(row) for row in cs]
    for i in range(n):
        for j in range(n):
            if i != j and v[j] > v[i]:
                cs[i][j] *= v[i] / v[j]
    alpha = [min(1.0, max(0.0, 1.0 - max(row))) for row in cs]
    top = max(alpha)
    if top <= 0:
        alpha = [1.0] * n
    else:
        out = []
        for a in (a / top for a in alpha):
            if a >= 1.0:
                out.append(1.0)
            elif a <= 0.0:
                out.append(0.0)
            else:
                out.append(min(1.0, max(0.0, kappa * (math.log(a / (1 - a)) + 0.5))))
        alpha = out
    total = sum(alpha)
    return sum(a * x for a, x in zip(alpha, X)) / total, np.array(alpha) / total


def ref_flame(X, f, p, seed):
    from sklearn.cluster import HDBSCAN

    n, d = X.shape
    if n < 3:
        admitted = list(range(n))
    else:
        dist = np.array([[0.0 if i == j else max(0.0, 1.0 - cosine(X[i], X[j])) for j in range(n)]
                         for i in range(n)])
        labels = HDBSCAN(metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1,
                         allow_single_cluster=True, copy=True).fit_predict(dist)
        valid = [lab for lab in labels if lab >= 0]
        if not valid:
            admitted = list(range(n))
        else:
            major = max(sorted(set(valid)), key=valid.count)
            admitted = [i for i in range(n) if labels[i] == major]
    norms = [norm(x) for x in X]
    S = median_of(norms)
    L = len(admitted)
    agg = sum(X[i] * min(1.0, S / norms[i] if norms[i] > 0 else 1.0) for i in admitted) / L
    lam = p.get("lam", 0.001)
    if lam > 0 and S > 0:
        g = torch.Generator().manual_seed(seed)
        agg = agg + lam * S * torch.randn(d, generator=g).double().numpy()
    w = np.zeros(n)
    w[admitted] = 1.0 / L
    return agg, w


def ref_dnc(X, f, p, seed):
    n, d = X.shape
    niters, b, c = p.get("niters", 1), p.get("b", 10_000), p.get("c", 1.0)
    g = torch.Generator().manual_seed(seed)
    n_drop = int(c * f)
    good = set(range(n))
    for _ in range(niters):
        cols = (list(range(d)) if b >= d
                else torch.randperm(d, generator=g)[:b].sort().values.tolist())
        Z = X[:, cols]
        mu = Z.mean(0)
        _, _, Vt = np.linalg.svd(Z - mu, full_matrices=False)
        v = Vt[0]
        scores = [float(np.dot(Z[i] - mu, v)) ** 2 for i in range(n)]
        keep = sorted(range(n), key=lambda i: (scores[i], i))[: n - n_drop]
        good &= set(keep)
    good = sorted(good)
    w = np.zeros(n)
    w[good] = 1.0 / len(good)
    return mean_rows(X, good), w


def largest_cluster(labels, tiebreak):
    labels = list(labels)
    valid = [lab for lab in labels if lab >= 0]
    if not valid:
        return list(range(len(labels)))
    sizes = {lab: valid.count(lab) for lab in set(valid)}
    top = max(sizes.values())
    best = [lab for lab in sizes if sizes[lab] == top]
    pick = min(best, key=lambda lab: np.mean([tiebreak[i] for i in range(len(labels))
                                               if labels[i] == lab]))
    return [i for i in range(len(labels)) if labels[i] == pick]


def clip_mean(X, keep, bound):
    norms = [norm(x) for x in X]
    return (sum(X[i] * min(1.0, bound / norms[i] if norms[i] > 0 else 1.0) for i in keep)
            / len(keep))


def ref_signguard(X, f, p, seed):
    from sklearn.cluster import MeanShift, estimate_bandwidth

    n, d = X.shape
    L, R, frac = p.get("lower", 0.1), p.get("upper", 3.0), p.get("coord_fraction", 0.1)
    norms = [norm(x) for x in X]
    M = median_of(norms)
    s1 = {i for i in range(n) if L * M <= norms[i] <= R * M}
    k = min(d, max(1, math.ceil(frac * d)))
    g = torch.Generator().manual_seed(seed)
    coords = torch.randperm(d, generator=g)[:k].sort().values.tolist()
    feat = np.array([[sum(X[i, j] > 0 for j in coords) / k, sum(X[i, j] == 0 for j in coords) / k,
                      sum(X[i, j] < 0 for j in coords) / k] for i in range(n)])
    if n < 2 or all((feat[i] == feat[0]).all() for i in range(n)):
        s2 = set(range(n))
    else:
        bw = max(float(estimate_bandwidth(feat, quantile=0.3)), 0.5 / k)
        labels = MeanShift(bandwidth=bw).fit_predict(feat)
        s2 = set(largest_cluster(labels, feat @ np.array([1.0, 2.0, 3.0])))
    keep = sorted(s1 & s2) or sorted(s1)
    w = np.zeros(n)
    w[keep] = 1.0 / len(keep)
    return clip_mean(X, keep, M), w


def ref_clipped_clustering(X, f, p, seed):
    """One round (fresh history): tau = min(max_tau, median norm); scipy average linkage of
    the cosine distances cut into 2 clusters (an implementation independent of sklearn's)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(X)
    tau = min(median_of([norm(x) for x in X]), p.get("max_tau", 1e5))
    if n < 3:
        keep = list(range(n))
    else:
        dist = np.array([[0.0 if i == j else max(0.0, 1.0 - cosine(X[i], X[j])) for j in range(n)]
                         for i in range(n)])
        labels = fcluster(linkage(squareform(dist, checks=False), method="average"), 2,
                          criterion="maxclust")
        keep = largest_cluster(labels, dist.mean(axis=1))
    w = np.zeros(n)
    w[keep] = 1.0 / len(keep)
    return clip_mean(X, keep, tau), w


REFERENCE = {
    "fedavg": ref_fedavg, "median": ref_median, "trimmed_mean": ref_trimmed_mean,
    "krum": ref_krum, "multi_krum": ref_multi_krum, "bulyan": ref_bulyan,
    "geometric_median": ref_geometric_median, "centered_clipping": ref_centered_clipping,
    "norm_bounding": ref_norm_bounding, "fltrust": ref_fltrust, "foolsgold": ref_foolsgold,
    "flame": ref_flame, "dnc": ref_dnc, "signguard": ref_signguard,
    "clipped_clustering": ref_clipped_clustering,
}


def test_every_registered_rule_has_a_reference():
    assert set(REFERENCE) == set(AGGREGATORS.names())


# ====================================================================== inputs
def gauss(n, d, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + torch.randn(d, generator=g)


def attacked(n, d, f, big, seed):
    X = gauss(n, d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    for i in range(f):
        sign = torch.sign(torch.randn(d, generator=g))
        X[i] = big * sign * (1 - 0.1 * torch.rand(d, generator=g))
    return X


def duplicates(n, d, seed, distinct=3):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(-4, 5, (distinct, d), generator=g).float()
    base[0] = base[0] + 1  # rows differ
    return base[torch.arange(n) % distinct]


#: f for a case of n rows: the largest f the rule accepts for "threshold", else a small one
def threshold_n(name: str, f: int) -> int:
    return {"krum": 2 * f + 3, "multi_krum": 2 * f + 3, "bulyan": 4 * f + 3}.get(name, 2 * f + 1)


CASES = ["gauss", "gauss_even", "huge_1e30", "huge_3e38", "duplicates", "threshold", "n1",
         "wide"]


def make_case(name: str, case: str):
    """(X float32 [n, d], f, params) for rule ``name`` and an input kind."""
    params = {"flame": {"lam": 0.0}}.get(name, {})
    if case == "gauss":
        return gauss(11, 6, 0), 2, params
    if case == "gauss_even":
        return gauss(12, 5, 1), 2, params
    if case == "huge_1e30":
        return attacked(11, 5, 2, 1e30, 2), 2, params
    if case == "huge_3e38":
        return attacked(11, 5, 2, 3e38, 3), 2, params
    if case == "duplicates":
        return duplicates(11, 4, 4), 2, params
    if case == "threshold":
        f = 2
        n = threshold_n(name, f)
        return gauss(n, 5, 5), f, params
    if case == "n1":
        return gauss(1, 4, 6), 0, params
    if case == "wide":  # more columns than one chunk of every chunked loop (2^19 / n)
        return gauss(7, 80_000, 7), 1, params
    raise ValueError(case)


#: inputs a rule's brute force cannot judge, with the reason
SKIP = {
    # exactly tied distances: the library clusterings may merge them in either order
    ("flame", "duplicates"): "HDBSCAN on exactly tied distances",
    ("clipped_clustering", "duplicates"): "sklearn vs scipy linkage on exactly tied distances",
    ("signguard", "duplicates"): "MeanShift on exactly tied features",
}


def ctx(X, f, seed=0):
    return AggregationContext(
        f=f, reference=X[f:].mean(0), generator=torch.Generator().manual_seed(seed),
        client_ids=tuple(range(X.shape[0])), state={},
    )


def assert_agg_close(name, got: torch.Tensor, want: np.ndarray, X64: np.ndarray):
    """Order statistics exactly; means within float32 rounding of their terms; iterative rules
    (geometric median) within 1e-5 of the honest spread."""
    got64 = got.double().numpy()
    if name in ("krum",) or (name == "median" and X64.shape[0] % 2 == 1):
        np.testing.assert_array_equal(got64, want.astype(np.float32).astype(np.float64))
        return
    honest = np.sort(np.abs(X64).max(axis=1))[: max(1, (X64.shape[0] + 1) // 2)].max()
    scale = max(float(np.abs(want).max()), float(honest), 1e-30)
    if name == "geometric_median":
        np.testing.assert_allclose(got64, want, rtol=0, atol=1e-5 * scale)
        return
    atol = 16 * X64.shape[0] * EPS32 * scale
    np.testing.assert_allclose(got64, want, rtol=4 * EPS32, atol=atol)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_rule_matches_brute_force(name, case):
    if (name, case) in SKIP:
        pytest.skip(SKIP[(name, case)])
    X, f, params = make_case(name, case)
    X64 = X.double().numpy()
    agg_fn = rule(name, **params)
    c = ctx(X, f)
    if precondition_problem(name, X.shape[0], f, params=AGGREGATORS.get(name).params(**params)):
        with pytest.raises(PreconditionError):
            agg_fn(X, c)
        return
    extra = {"g0": c.reference.double().numpy()} if name == "fltrust" else {}
    want, wref = REFERENCE[name](X64, f, params, 0, **extra)
    res = agg_fn(X, c)
    assert res.aggregate.dtype == X.dtype and torch.isfinite(res.aggregate).all()
    assert_agg_close(name, res.aggregate, want, X64)
    distinct = len(np.unique(X64, axis=0)) == len(X64)
    if wref is not None and res.weights is not None and distinct:
        np.testing.assert_array_equal(res.weights.numpy() == 0, wref == 0)
        np.testing.assert_allclose(res.weights.double().numpy(), wref, rtol=1e-5, atol=1e-7)


# ====================================================================== more adversarial cases
def test_krum_threshold_mutual_nearest_neighbours_tie():
    """n = 2f + 3: one neighbour per score; mutual nearest neighbours tie exactly. The tie goes
    to the smaller total squared distance, then the lexicographically smaller row."""
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [6.0, 0.0], [2.5, 9.0]])  # f = 1
    want, _ = ref_krum(X.double().numpy(), 1, {}, 0)
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        got = rule("krum")(X[perm], AggregationContext(f=1)).aggregate
        np.testing.assert_array_equal(got.numpy(), want)


def test_bulyan_at_threshold_with_duplicates():
    X = duplicates(7, 3, 9, distinct=2)  # n = 4f + 3 with f = 1, two distinct rows
    want, _ = ref_bulyan(X.double().numpy(), 1, {}, 0)
    res = rule("bulyan")(X, AggregationContext(f=1))
    np.testing.assert_allclose(res.aggregate.double().numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("n,b", [(100, 0), (100, 24), (101, 1), (64, 31)])
def test_coordinate_rules_exact_across_blocks(n, b):
    """Large enough to span several transposed blocks (65536 / n columns each): the median of
    odd n is exact; even-n medians and trimmed means are the float64 value rounded once."""
    X = gauss(n, 3000, n + b)
    X[: n // 10] = 3e38  # rows at the float32 maximum: the midpoints must not overflow
    X64 = X.double().numpy()
    srt = np.sort(X64, axis=0)
    if n % 2:
        want_med = srt[n // 2]
        np.testing.assert_array_equal(rule("median")(X, AggregationContext()).aggregate.numpy(),
                                      want_med.astype(np.float32))
    else:
        want_med = (srt[n // 2 - 1] + srt[n // 2]) / 2
        np.testing.assert_array_equal(rule("median")(X, AggregationContext()).aggregate.numpy(),
                                      want_med.astype(np.float32))
    want_tm = srt[b:n - b].sum(axis=0) / (n - 2 * b)
    got = rule("trimmed_mean")(X, AggregationContext(f=b)).aggregate.numpy().astype(np.float64)
    ulp = np.spacing(np.abs(want_tm).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want_tm) <= ulp).all()


@pytest.mark.parametrize("seed", range(3))
def test_centered_clipping_iterations_and_previous(seed):
    X = gauss(9, 7, seed) + 1.0
    X[0] += 50.0
    v0 = gauss(1, 7, seed + 10)[0]
    for tau, iters in ((0.5, 1), (2.0, 3), (None, 4)):
        p = {"tau": tau, "iters": iters}
        want, _ = ref_centered_clipping(X.double().numpy(), 0, p, 0, v0=v0.numpy())
        got = rule("centered_clipping", **p)(X, AggregationContext(previous=v0)).aggregate
        np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["gauss", "huge"])
def test_noise_of_norm_bounding_and_flame_is_the_seeded_draw(case):
    X = gauss(9, 5, 0) if case == "gauss" else attacked(9, 5, 2, 1e30, 0)
    for name, p in (("norm_bounding", {"noise_sigma": 0.3}), ("flame", {"lam": 0.01})):
        want, _ = REFERENCE[name](X.double().numpy(), 2, p, 5)
        got = rule(name, **p)(X, ctx(X, 2, seed=5)).aggregate
        np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_pre_steps_match_brute_force(seed):
    X = gauss(9, 4, seed)
    X[0] += 30
    f = 2
    # NNM: y_i = mean of the n - f rows nearest to x_i (x_i included)
    Y = pre_step("nnm")(X, AggregationContext(f=f))
    X64 = X.double().numpy()
    for i in range(9):
        near = sorted(range(9), key=lambda j: sqdist(X64[i], X64[j]))[: 9 - f]
        np.testing.assert_allclose(Y[i].double().numpy(), mean_rows(X64, near), rtol=1e-5,
                                   atol=1e-6)
    # bucketing: the rows of the generator's permutation, s at a time
    gen = torch.Generator().manual_seed(seed)
    Y = pre_step("bucketing", s=2)(X, AggregationContext(generator=gen))
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed)).tolist()
    for k in range(5):
        np.testing.assert_allclose(Y[k].double().numpy(), mean_rows(X64, perm[2 * k: 2 * k + 2]),
                                   rtol=1e-6, atol=1e-7)


def test_foolsgold_reference_with_anti_correlated_and_sybil_histories():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 6, generator=g, dtype=torch.float64)
    X[1] = -X[0] + 0.05 * torch.randn(6, generator=g, dtype=torch.float64)
    X[2:5] = X[5] + 0.01 * torch.randn(3, 6, generator=g, dtype=torch.float64)
    want, wref = ref_foolsgold(X.numpy(), 0, {}, 0)
    res = rule("foolsgold")(X, AggregationContext(state={}))
    np.testing.assert_allclose(res.weights.numpy(), wref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.aggregate.numpy(), want, rtol=1e-12, atol=1e-12)


# ====================================================================== ByzFL 0.0.11
def random_inputs(seeds=range(8), n=11, d=6):
    for s in seeds:
        yield s, gauss(n, d, 100 + s)


def test_byzfl_average_median_trmean(byzfl):
    aggs, _ = byzfl
    for _, X in random_inputs():
        for Xin in (X, X.numpy()):  # ByzFL computes in the input's library (float32)
            np.testing.assert_allclose(np.asarray(aggs.Average()(Xin)),
                                       rule("fedavg")(X, AggregationContext()).aggregate.numpy(),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(np.asarray(aggs.Median()(Xin)),
                                       rule("median")(X, AggregationContext()).aggregate.numpy(),
                                       rtol=0, atol=0)
            tm = rule("trimmed_mean")(X, AggregationContext(f=2)).aggregate.numpy()
            np.testing.assert_allclose(np.asarray(aggs.TrMean(f=2)(Xin)), tm,
                                       rtol=1e-6, atol=1e-6)
    X = gauss(10, 5, 0)  # even n: both take the mean of the middle two
    np.testing.assert_allclose(np.asarray(aggs.Median()(X.numpy())),
                               rule("median")(X, AggregationContext()).aggregate.numpy(), rtol=1e-7)


def test_byzfl_krum_uses_one_more_neighbour_than_the_paper(byzfl):
    """ByzFL's Krum(f) sums the n - f - 1 nearest distances (sort()[:, 1:n - f]); the paper's
    Krum(f) the n - f - 2 nearest. ByzFL's Krum(f + 1) is the paper's Krum(f) exactly, and
    ByzFL's Krum(f) differs from it on some inputs (so the offset is the whole difference)."""
    aggs, _ = byzfl
    differs = 0
    for _s, X in random_inputs(range(40), n=9, d=3):
        for f in (1, 2):
            ours = rule("krum")(X, AggregationContext(f=f)).aggregate
            assert torch.equal(aggs.Krum(f=f + 1)(X), ours)
            differs += not torch.equal(aggs.Krum(f=f)(X), ours)
            ours_mk = rule("multi_krum", m=9 - f - 1)(X, AggregationContext(f=f)).aggregate
            torch.testing.assert_close(aggs.MultiKrum(f=f + 1)(X), ours_mk, rtol=1e-6, atol=1e-6)
    assert differs > 0


def test_byzfl_centered_clipping_and_clipping(byzfl):
    aggs, pre = byzfl
    for _, X in random_inputs():
        for tau, L in ((0.5, 1), (2.0, 3)):
            want = aggs.CenteredClipping(L=L, tau=tau)(X)
            got = rule("centered_clipping", tau=tau, iters=L)(X, AggregationContext()).aggregate
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        want = aggs.Average()(pre.Clipping(c=1.5)(X.clone()))  # Clipping writes into its input
        got = rule("norm_bounding", max_norm=1.5)(X, AggregationContext()).aggregate
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_byzfl_geometric_median_when_run_to_convergence(byzfl):
    """ByzFL: T fixed iterations from z = 0 (default T = 3, far from converged); with T large
    both reach the geometric median."""
    aggs, _ = byzfl
    for _, X in random_inputs(range(4)):
        X = X.double()
        want = aggs.GeometricMedian(nu=1e-6, T=3000)(X.numpy())
        got = rule("geometric_median")(X, AggregationContext()).aggregate.numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        early = aggs.GeometricMedian()(X.numpy())  # its defaults
        assert np.linalg.norm(early - want) > 1e-3


def test_byzfl_nnm(byzfl):
    _, pre = byzfl
    for _, X in random_inputs(range(4)):
        got = pre_step("nnm")(X, AggregationContext(f=2))
        torch.testing.assert_close(got, pre.NNM(f=2)(X), rtol=1e-5, atol=1e-6)


# ====================================================================== Flower 1.42
def as_results(X: torch.Tensor):
    return [([x], 1) for x in X.numpy()]


def test_flower_mean_median_trimmed_mean(flower):
    for _, X in random_inputs():
        np.testing.assert_allclose(flower.aggregate(as_results(X))[0],
                                   rule("fedavg")(X, AggregationContext()).aggregate.numpy(),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(flower.aggregate_median(as_results(X))[0],
                                      rule("median")(X, AggregationContext()).aggregate.numpy())
        b, n = 2, X.shape[0]
        tm = rule("trimmed_mean")(X, AggregationContext(f=b)).aggregate.numpy()
        np.testing.assert_allclose(flower.aggregate_trimmed_avg(as_results(X), (b + 0.5) / n)[0],
                                   tm, rtol=1e-6, atol=1e-6)


def test_flower_krum_multikrum_bulyan(flower):
    """Flower's legacy functions use the paper's n - f - 2 neighbours and repeated Krum in
    Bulyan: they agree with ours exactly on inputs without ties (Flower's argsort/argmin break
    ties by position). Bulyan with f = 3: its last selections use f - 1 = 2 neighbours; with
    f = 2 they use 1, and the closest remaining pair then ties exactly every time."""
    for _, X in random_inputs(n=11, d=5):
        f = 2
        np.testing.assert_array_equal(flower.aggregate_krum(as_results(X), f, 0)[0],
                                      rule("krum")(X, AggregationContext(f=f)).aggregate.numpy())
        np.testing.assert_allclose(flower.aggregate_krum(as_results(X), f, 11 - f)[0],
                                   rule("multi_krum")(X, AggregationContext(f=f)).aggregate.numpy(),
                                   rtol=1e-6, atol=1e-6)
    for _, X in random_inputs(n=15, d=5):
        f = 3
        want = flower.aggregate_bulyan(as_results(X), f, flower.aggregate_krum, to_keep=0)[0]
        got = rule("bulyan")(X, AggregationContext(f=f)).aggregate.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_flower_bulyan_f2_differs_only_by_the_tie_rule(flower):
    """f = 2: Flower's repeated selection picks the first of the two tied rows of the last step,
    ours the one with the smaller total distance; both are Krum minimisers of that step."""
    from fedmedsec.aggregators.krum import KrumRanker, bulyan_select

    for _, X in random_inputs(n=11, d=5):
        f, X64 = 2, X.double().numpy()
        results, flw = as_results(X), []
        remaining = list(range(11))
        for _ in range(11 - 2 * f):
            best = flower.aggregate_krum(results, f, 0)
            idx = next(i for i, (w, _) in enumerate(results) if np.array_equal(w[0], best[0]))
            row = remaining[idx]
            keys = {r: krum_key(X64, r, remaining, f, at_least_one=True)[0] for r in remaining}
            assert keys[row] == min(keys.values())  # a Krum minimiser of its step
            flw.append(row)
            results.pop(idx)
            remaining.pop(idx)
        ours = bulyan_select(KrumRanker(X), f, 11 - 2 * f)
        assert ours[:-1] == flw[:-1]


def test_flower_message_api_bulyan_selects_at_once():
    """Flower 1.42's Message-API Bulyan (flwr.serverapp.strategy.Bulyan) picks its theta rows
    with one Multi-Krum pass over all n; the paper (and Flower's legacy ``aggregate_bulyan``,
    and ours) re-score the shrinking set after each pick. Its output is our coordinate step on
    the one-shot selection; on random inputs the two selections differ most of the time."""
    bul = pytest.importorskip("flwr.serverapp.strategy.bulyan")
    mk = pytest.importorskip("flwr.serverapp.strategy.multikrum")
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from fedmedsec.aggregators.krum import KrumRanker, beta_closest_to_median

    differ = 0
    for _, X in random_inputs(range(6), n=11, d=4):
        f, theta, beta = 2, 7, 3
        contents = [RecordDict({"arrays": ArrayRecord([x]),
                                "metrics": MetricRecord({"num-examples": 1})}) for x in X.numpy()]
        sel = mk.select_multikrum(contents, f, theta)  # the body of Bulyan.aggregate_train
        arrs = [c["arrays"].to_numpy_ndarrays(keep_input=False) for c in sel]
        med = [np.median(a, axis=0) for a in zip(*arrs, strict=True)]
        flw = bul.aggregate_n_closest_weights(med, arrs, beta)[0]
        one_shot = KrumRanker(X).select(f, theta)
        np.testing.assert_allclose(flw, beta_closest_to_median(X.numpy()[one_shot], beta),
                                   rtol=1e-6, atol=1e-6)
        ours = rule("bulyan")(X, AggregationContext(f=f)).aggregate.numpy()
        differ += not np.allclose(ours, flw, rtol=1e-6, atol=1e-6)
    assert differ > 0
