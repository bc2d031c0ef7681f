"""Every model attack against an independent brute-force implementation written from its
paper's definition (plain float64 Python loops over rows and coordinates, closed forms where
the paper's search has one), on adversarial inputs: ties, duplicate rows, rows far from the
origin, a single reference row. Where ByzFL 0.0.11 has the attack, against it too.

Known differences from ByzFL (documented, asserted below):
- ALIE: ByzFL sends mean + tau * std with a fixed tau = 1.5; the paper (and we) send
  mean - z * std with z = Phi^{-1}((n - s) / n), s = floor(n/2 + 1) - m. Ours with z = -tau
  equals ByzFL's.
- SignFlipping: ByzFL sends the negated mean of the honest vectors (an omniscient attacker);
  our sign_flip negates the attacker's own update (identical on one row).
- IPM: the same formula, -tau * mean (ByzFL's default tau = 2.0, ours epsilon = 0.1).
- Gaussian: both N(mu, sigma^2 I), from different generators: compared in distribution.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch

from fedmedsec.attacks import AttackContext, make_attack
from fedmedsec.attacks.data import neurotoxin_mask
from fedmedsec.attacks.model import (
    alie_update,
    fang_krum,
    fang_trimmed_mean,
    gaussian_update,
    ipm_update,
    min_max_update,
    min_sum_update,
    scale_update,
    sign_flip_update,
)
from fedmedsec.attacks.model.alie import alie_z
from fedmedsec.attacks.model.fang import fang_trimmed_mean_partial

# ---------------------------------------------------------------- adversarial inputs


def case_rows():
    """label -> Tensor[n, d] float64."""
    g = torch.Generator().manual_seed(0)
    rnd = torch.randn(7, 5, generator=g, dtype=torch.float64) + 0.5
    ties = torch.tensor([[1, 0, -1, 1, 0], [1, 0, 1, -1, 0], [0, 0, -1, 1, 1], [1, 1, -1, 0, 0],
                         [0, 1, 1, 1, 0], [-1, 0, 0, 1, 1]], dtype=torch.float64)
    dup = torch.cat([rnd[:1].repeat(3, 1), rnd[3:6]])
    far = 1e4 + 1e-2 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    single = rnd[:1].clone()
    two = rnd[:2].clone()
    return {"random": rnd, "ties": ties, "duplicates": dup, "far": far, "single": single, "two": two}


CASES = case_rows()
LABELS = list(CASES)


def rows(t):
    return [[float(v) for v in r] for r in t]


# ---------------------------------------------------------------- brute-force references


def ref_mean(xs):
    n, d = len(xs), len(xs[0])
    return [sum(xs[i][j] for i in range(n)) / n for j in range(d)]


def ref_std(xs):
    """Sample std (correction 1); one row: |x| (the project's documented fallback)."""
    n, d = len(xs), len(xs[0])
    if n == 1:
        return [abs(v) for v in xs[0]]
    mu = ref_mean(xs)
    return [math.sqrt(sum((xs[i][j] - mu[j]) ** 2 for i in range(n)) / (n - 1)) for j in range(d)]


def ref_dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def ref_direction(xs, kind):
    mu = ref_mean(xs)
    if kind == "std":
        return [-s for s in ref_std(xs)]
    if kind == "unit_vec":
        nm = math.sqrt(sum(v * v for v in mu))
        return [-v / nm for v in mu] if nm > 0 else [0.0] * len(mu)
    return [-(1.0 if v > 0 else -1.0 if v < 0 else 0.0) for v in mu]


def ref_alie(xs, n, m, z=None):
    s = max(1, math.floor(n / 2 + 1) - m)
    z = NormalDist().inv_cdf((n - s) / n) if z is None else z
    return [mu - z * sd for mu, sd in zip(ref_mean(xs), ref_std(xs))]


def ref_min_max_gamma(xs, kind):
    """Closed form: ||mu + g p - x_i||^2 = a_i + 2 g b_i + g^2 c <= T^2 for every i, so
    g* = min_i (-b_i + sqrt(b_i^2 - c (a_i - T^2))) / c; T the largest pairwise distance
    (one row: sqrt(2) ||sigma||)."""
    n = len(xs)
    mu, p = ref_mean(xs), ref_direction(xs, kind)
    if n == 1:
        t = math.sqrt(2) * math.sqrt(sum(s * s for s in ref_std(xs)))
    else:
        t = max(ref_dist(xs[i], xs[k]) for i in range(n) for k in range(n))
    c = sum(v * v for v in p)
    if c == 0:
        return 0.0
    best = math.inf
    for x in xs:
        diff = [m_ - v for m_, v in zip(mu, x)]
        a = sum(v * v for v in diff)
        b = sum(u * v for u, v in zip(diff, p))
        best = min(best, (-b + math.sqrt(max(b * b - c * (a - t * t), 0.0))) / c)
    return max(best, 0.0)


def ref_min_sum_gamma(xs, kind):
    """Closed form: sum_i ||mu + g p - x_i||^2 = S0 + n g^2 ||p||^2 (the cross term vanishes
    at the mean) <= T = max_i sum_k ||x_i - x_k||^2 (one row: 2 ||sigma||^2)."""
    n = len(xs)
    mu, p = ref_mean(xs), ref_direction(xs, kind)
    if n == 1:
        t = 2 * sum(s * s for s in ref_std(xs))
    else:
        t = max(sum(ref_dist(xs[i], xs[k]) ** 2 for k in range(n)) for i in range(n))
    s0 = sum(ref_dist(mu, x) ** 2 for x in xs)
    c = sum(v * v for v in p)
    return 0.0 if c == 0 else math.sqrt(max(t - s0, 0.0) / (n * c))


def ref_krum_scores(xs, f):
    """Blanchard et al.: score(i) = sum of the n - f - 2 smallest squared distances to the
    other rows (at least 1 neighbour, at most n - 1, as the attacks' local Krum)."""
    n = len(xs)
    k = min(n - 1, max(1, n - f - 2))
    return [sum(sorted(ref_dist(xs[i], xs[j]) ** 2 for j in range(n) if j != i)[:k]) for i in range(n)]


def ref_argmin(values):
    best = 0
    for i, v in enumerate(values):
        if v < values[best]:
            best = i
    return best


def ref_sign(v):
    return -1.0 if v < 0 else 1.0


# ---------------------------------------------------------------- own-update attacks


@pytest.mark.parametrize("label", LABELS)
def test_sign_flip_scaling_reference(label):
    for x in rows(CASES[label]):
        t = torch.tensor(x, dtype=torch.float64)
        assert sign_flip_update(t, 2.5).tolist() == [-2.5 * v for v in x]
        assert scale_update(t, 7.0).tolist() == [7.0 * v for v in x]


def test_gaussian_reference():
    """N(0, sigma^2 I) drawn from the given generator, independent of the update."""
    x = torch.full((4000,), 1e4, dtype=torch.float64)
    got = gaussian_update(x, 0.3, torch.Generator().manual_seed(11))
    ref = 0.3 * torch.randn(4000, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    assert torch.equal(got, ref)
    vals = got.tolist()
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    assert abs(mean) < 0.03 and abs(sd - 0.3) < 0.02


# ---------------------------------------------------------------- ALIE, IPM


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("m", [1, 3])
def test_alie_reference(label, m):
    h = CASES[label]
    n = h.shape[0] + m
    ref = ref_alie(rows(h), n, m)
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(1,), n_clients=n)
    out = make_attack("alie", {}, ctx).collude(h, torch.zeros(m, h.shape[1], dtype=h.dtype),
                                               torch.Generator(), ctx)
    assert np.allclose(out.numpy(), np.array([ref] * m), rtol=1e-12, atol=1e-9)
    assert alie_z(n, m) == pytest.approx(NormalDist().inv_cdf((n - max(1, math.floor(n / 2 + 1) - m)) / n), abs=1e-12)


@pytest.mark.parametrize("label", LABELS)
def test_ipm_reference(label):
    h = CASES[label]
    ref = [-0.3 * v for v in ref_mean(rows(h))]
    assert np.allclose(ipm_update(h, 0.3).numpy(), ref, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- min-max, min-sum


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("kind", ["std", "unit_vec", "sign"])
def test_min_max_min_sum_reference(label, kind):
    h = CASES[label]
    xs = rows(h)
    for fn, ref_gamma in ((min_max_update, ref_min_max_gamma), (min_sum_update, ref_min_sum_gamma)):
        mal, gamma = fn(h, kind)
        g_ref = ref_gamma(xs, kind)
        assert gamma == pytest.approx(g_ref, rel=3e-5, abs=1e-12), (fn.__name__, label, kind)
        mu, p = ref_mean(xs), ref_direction(xs, kind)
        assert np.allclose(mal.numpy(), [a + gamma * b for a, b in zip(mu, p)], rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- Fang


@pytest.mark.parametrize("label", LABELS)
def test_fang_trimmed_mean_reference(label):
    """Fang et al. Sec. 4.2 (full knowledge, b = 2): per attacker and coordinate, a uniform draw
    (the same generator stream) in the interval beyond the honest range against s_j."""
    h = CASES[label]
    xs, m, d = rows(h), 3, h.shape[1]
    out = fang_trimmed_mean(h, m, torch.Generator().manual_seed(4)).tolist()
    u = torch.rand((m, d), generator=torch.Generator().manual_seed(4), dtype=torch.float64).tolist()
    mu = ref_mean(xs)
    for a in range(m):
        for j in range(d):
            col = [x[j] for x in xs]
            hi_, lo_ = max(col), min(col)
            if ref_sign(mu[j]) < 0:  # push up, from w_max outwards
                lo, hi = hi_, (2 * hi_ if hi_ > 0 else hi_ / 2)
            else:  # push down, from w_min outwards
                lo, hi = (lo_ / 2 if lo_ > 0 else 2 * lo_), lo_
            assert out[a][j] == pytest.approx(lo + u[a][j] * (hi - lo), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("label", LABELS)
def test_fang_partial_reference(label):
    """Partial knowledge: uniform in [mu + 3 sigma, mu + 4 sigma] (s = -1) or
    [mu - 4 sigma, mu - 3 sigma] (s = +1), mu, sigma of the attackers' own rows."""
    h = CASES[label]
    xs, m, d = rows(h), 2, h.shape[1]
    out = fang_trimmed_mean_partial(h, m, torch.Generator().manual_seed(2)).tolist()
    u = torch.rand((m, d), generator=torch.Generator().manual_seed(2), dtype=torch.float64).tolist()
    mu, sd = ref_mean(xs), ref_std(xs)
    for a in range(m):
        for j in range(d):
            lo = mu[j] + 3 * sd[j] if ref_sign(mu[j]) < 0 else mu[j] - 4 * sd[j]
            assert out[a][j] == pytest.approx(lo + u[a][j] * sd[j], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("label", ["random", "far", "ties"])
@pytest.mark.parametrize("m", [1, 2])
def test_fang_krum_reference(label, m):
    """Fang et al. Sec. 4.1: lambda_0 from the paper's bound, halved until Krum (loops, f = m)
    over [honest; m copies of -lambda s] selects a copy."""
    h = CASES[label]
    xs = rows(h)
    n_h, d = len(xs), len(xs[0])
    n = n_h + m
    k = min(n_h - 1, max(0, n - m - 2))
    near = min(sum(sorted(ref_dist(xs[i], xs[j]) for j in range(n_h) if j != i)[:k]) for i in range(n_h))
    lam = near / (max(1, n - 2 * m - 1) * math.sqrt(d)) + max(ref_dist(x, [0.0] * d) for x in xs) / math.sqrt(d)
    s = [ref_sign(v) if v != 0 else 1.0 for v in ref_mean(xs)]
    while True:
        mal = [-lam * v for v in s]
        if ref_argmin(ref_krum_scores(xs + [mal] * m, m)) >= n_h or lam < 1e-5:
            break
        lam /= 2
    got, got_lam = fang_krum(h, m, f=m)
    assert got_lam == pytest.approx(lam, rel=1e-12)
    assert np.allclose(got.numpy(), [-lam * v for v in s], rtol=1e-12)


# ---------------------------------------------------------------- AGR-tailored


def ref_multi_krum_selected(xs, f, n_h):
    """All crafted rows (index >= n_h) among the n - f lowest Krum scores (stable order)."""
    n = len(xs)
    scores = ref_krum_scores_exact(xs, f)
    order = sorted(range(n), key=lambda i: (scores[i], i))[: n - f]
    return all(i in order for i in range(n_h, n))


def ref_krum_scores_exact(xs, f, active=None):
    """The paper's Krum: s - f - 2 neighbours among the active rows (Bulyan's last passes:
    at least 1, at most s - 1)."""
    idx = list(range(len(xs))) if active is None else active
    s = len(idx)
    k = min(max(1, s - f - 2), s - 1)
    out = {}
    for i in idx:
        out[i] = sum(sorted(ref_dist(xs[i], xs[j]) ** 2 for j in idx if j != i)[:k]) if k > 0 else 0.0
    return [out.get(i, math.inf) for i in range(len(xs))]


def ref_krum_selected(xs, f, n_h):
    scores = ref_krum_scores_exact(xs, f)
    best = min(scores)
    return any(scores[i] <= best * (1 + 1e-9) for i in range(n_h, len(xs))) and all(
        scores[i] > best * (1 + 1e-9) for i in range(n_h)
    )


def ref_bulyan_selected(xs, f, n_h):
    """El Mhamdi et al.: theta = n - 2f rows by repeated Krum on the shrinking set; all
    crafted rows in the selection."""
    n = len(xs)
    active, chosen = list(range(n)), []
    for _ in range(n - 2 * f):
        scores = ref_krum_scores_exact(xs, f, active)
        i = ref_krum_pick(xs, scores, active)
        chosen.append(i)
        active.remove(i)
    return all(i in chosen for i in range(n_h, n))


def ref_krum_pick(xs, scores, active):
    """The lowest score; the paper leaves ties open, the project breaks them (scores within
    1e-6 relative, e.g. two mutual nearest neighbours when one neighbour counts) by the
    smaller sum of squared distances to the active rows, then the lower index: so do we."""
    best = min(scores)
    tied = [i for i in active if scores[i] <= best + 1e-6 * abs(best)]
    return min(tied, key=lambda i: (sum(ref_dist(xs[i], xs[j]) ** 2 for j in active), i))


def ref_median(xs):
    out = []
    for j in range(len(xs[0])):
        col = sorted(x[j] for x in xs)
        n = len(col)
        out.append(col[n // 2] if n % 2 else 0.5 * (col[n // 2 - 1] + col[n // 2]))
    return out


def ref_trimmed_mean(xs, b):
    out = []
    for j in range(len(xs[0])):
        col = sorted(x[j] for x in xs)[b:len(xs) - b]
        out.append(sum(col) / len(col))
    return out


def tailored(h, m, f, rule):
    ctx = AttackContext(modality="tabular", num_classes=2, input_shape=(1,), f=f,
                        n_clients=h.shape[0] + m, defense_rule=rule)
    atk = make_attack("agr_tailored", {}, ctx)
    atk.collude(h, torch.zeros(m, h.shape[1], dtype=h.dtype), torch.Generator(), ctx)
    return atk.last


def spread_rows(n, d, seed, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return offset + torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5


@pytest.mark.parametrize("rule, ref_sel, n_h, m, f", [
    ("krum", ref_krum_selected, 7, 2, 2),
    ("multi_krum", ref_multi_krum_selected, 7, 2, 2),
    ("bulyan", ref_bulyan_selected, 9, 2, 2),
])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_agr_tailored_selecting_reference(rule, ref_sel, n_h, m, f, offset):
    """The returned gamma is selected by the brute-force rule, gamma * 1.003 is not (the
    attack steps back 1e-3 from the boundary), and no gamma on a grid above it up to
    20 gamma is (the largest accepted gamma)."""
    for seed in range(3):
        h = spread_rows(n_h, 5, seed, offset)
        res = tailored(h, m, f, rule)
        xs = rows(h)
        mu, p = ref_mean(xs), ref_direction(xs, "std")

        def sel(g, mu=mu, p=p, xs=xs):
            mal = [a + g * b for a, b in zip(mu, p)]
            return ref_sel(xs + [mal] * m, f, n_h)

        assert res.selected and res.gamma > 0 and sel(res.gamma)
        for g in [res.gamma * 1.003] + list(np.linspace(res.gamma * 1.004, 20 * res.gamma, 40)):
            assert not sel(float(g)), (rule, seed, g)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
@pytest.mark.parametrize("label", ["random", "ties", "far", "duplicates"])
def test_agr_tailored_coordinate_reference(rule, label):
    """||f_agr(benign + m mal) - mu|| with the brute-force rule: the returned gamma's value
    is the rule's and at least the maximum over a fine grid of gammas."""
    h, m, f = CASES[label], 2, 2
    xs = rows(h)
    agg = ref_median if rule == "median" else (lambda v: ref_trimmed_mean(v, f))
    mu, p = ref_mean(xs), ref_direction(xs, "std")

    def shift(g):
        mal = [a + g * b for a, b in zip(mu, p)]
        return ref_dist(agg(xs + [mal] * m), mu)

    res = tailored(h, m, f, rule)
    assert res.objective == pytest.approx(shift(res.gamma), rel=1e-9, abs=1e-12)
    grid = list(np.linspace(0, 8, 801)) + list(np.geomspace(1e-3, 1e4, 120))
    assert res.objective >= max(shift(float(g)) for g in grid) * (1 - 1e-6) - 1e-12


# ---------------------------------------------------------------- Neurotoxin mask


@pytest.mark.parametrize("label", LABELS)
def test_neurotoxin_mask_reference(label):
    """Zhang et al.: drop the top-k share of |benign direction| (ties: lower index first)."""
    for row in rows(CASES[label]):
        for ratio in (0.0, 0.2, 0.5, 0.9):
            k = min(len(row), max(0, int(round(ratio * len(row)))))
            dropped = sorted(range(len(row)), key=lambda j: (-abs(row[j]), j))[:k]
            ref = [j not in dropped for j in range(len(row))]
            assert neurotoxin_mask(torch.tensor(row), ratio).tolist() == ref


# ---------------------------------------------------------------- ByzFL 0.0.11


@pytest.fixture(scope="module")
def byzfl():
    """ByzFL's attack module without its top-level import (which needs torchvision), through
    the same loader as the aggregator anchors (``benchmarks/aggregators.py:load_byzfl``: a
    bare package object stands in for ``byzfl``)."""
    spec = importlib.util.spec_from_file_location(
        "fms_bench_aggregators", Path(__file__).resolve().parents[1] / "benchmarks" / "aggregators.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        bench.load_byzfl()
        return importlib.import_module("byzfl.attacks.attacks")
    except Exception as exc:  # noqa: BLE001  (skip with the reason, whatever broke)
        pytest.skip(f"byzfl.attacks could not be imported: {exc!r}")


@pytest.mark.parametrize("label", [lb for lb in LABELS if lb != "single"])
def test_alie_against_byzfl(byzfl, label):
    """ByzFL: mean + tau * std (ddof 1), tau = 1.5 fixed. Ours: mean - z * std, z from the
    normal quantile; with z = -tau the two agree."""
    h = CASES[label]
    theirs = byzfl.ALittleIsEnough(tau=1.5)(h.numpy())
    assert np.allclose(alie_update(h, -1.5).numpy(), theirs, rtol=1e-12, atol=1e-9)
    # the paper's z is not 1.5 in general (e.g. n = 10, m = 2 gives z = 0.25)
    assert alie_z(10, 2) == pytest.approx(NormalDist().inv_cdf(0.6), abs=1e-12)


@pytest.mark.parametrize("label", LABELS)
def test_ipm_and_sign_flip_against_byzfl(byzfl, label):
    h = CASES[label]
    theirs = byzfl.InnerProductManipulation(tau=2.0)(h.numpy())
    assert np.allclose(ipm_update(h, 2.0).numpy(), theirs, rtol=1e-12, atol=1e-9)
    # ByzFL's sign flipping negates the honest mean; ours the attacker's own update
    x = h[:1]
    assert np.allclose(sign_flip_update(x[0]).numpy(), byzfl.SignFlipping()(x.numpy()))


def test_gaussian_against_byzfl_in_distribution(byzfl):
    from scipy.stats import ks_2samp

    h = np.zeros((3, 5000))
    theirs = np.asarray(byzfl.Gaussian(mu=0.0, sigma=0.7)(h))
    ours = gaussian_update(torch.zeros(5000, dtype=torch.float64), 0.7,
                           torch.Generator().manual_seed(3)).numpy()
    assert ks_2samp(theirs, ours).pvalue > 1e-3
