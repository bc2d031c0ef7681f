"""Krum, Multi-Krum (Blanchard et al., NeurIPS 2017) and Bulyan (El Mhamdi et al., ICML 2018).

All three compute the pairwise squared distances once (centered Gram matrix, float64 n x n);
Bulyan's repeated Krum selections reuse that one matrix. Selections are exact: a row is
chosen by its Gram-matrix score only when no other row's score lies within the float64
rounding bound of the Gram trick; rows in that band are rescored from distances computed
directly in float64 (``KrumRanker``). Exact ties go to the row with the smaller sum of
squared distances to all active rows, then to the lexicographically smaller row, so the
choice does not depend on the row order.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from pydantic import Field

from ..registry import NoParams, Params
from ._common import (
    client_weights,
    column_slices,
    combine,
    exact_sq_dists_to,
    gram_error_factor,
    guarded,
    map_chunks,
    robust_gram,
    sq_dists_from_gram,
)
from .base import AGGREGATORS, AggregationContext, AggregationResult


def krum_neighbours(s: int, f: int, at_least_one: bool = False) -> int:
    """Neighbours per score for s active rows: s - f - 2 (Blanchard et al. 2017, Sec. 4; ByzFL
    0.0.11 uses s - f - 1). at_least_one: min(max(1, s - f - 2), s - 1) instead of failing
    when s <= f + 2 (Bulyan's last selections when f <= 1)."""
    k = s - f - 2
    if at_least_one:
        k = min(max(1, k), s - 1)
    elif k < 1:
        raise ValueError(f"krum needs n > 2f + 2, got n={s}, f={f}")
    return k


def krum_scores(
    D: torch.Tensor, f: int, active: torch.Tensor | None = None, at_least_one: bool = False
) -> torch.Tensor:
    """Krum scores from squared distances ``D: Tensor[n, n]``.

    score(i) = sum over the s - f - 2 nearest neighbours j != i of ||x_i - x_j||^2, where s is
    the number of active rows (all by default; Bulyan passes its shrinking set as the boolean
    mask ``active``). Inactive rows score +inf. See ``krum_neighbours`` for at_least_one.
    """
    n = D.shape[0]
    if active is None:
        active = torch.ones(n, dtype=torch.bool)
    s = int(active.sum())
    k = krum_neighbours(s, f, at_least_one)
    if k == 0:  # one row left: it is the selection
        return torch.where(active, 0.0, float("inf")).double()
    M = D.clone()
    M.fill_diagonal_(float("inf"))
    M[:, ~active] = float("inf")
    scores = torch.topk(M, k, dim=1, largest=False).values.sum(1)
    scores[~active] = float("inf")
    return scores


def _lex_cmp(a: torch.Tensor, b: torch.Tensor) -> int:
    diff = torch.nonzero(a != b)
    if diff.numel() == 0:
        return 0
    j = int(diff[0, 0])
    return -1 if bool(a[j] < b[j]) else 1


class KrumRanker:
    """Exact Krum selections on ``updates: Tensor[n, d]``.

    Gram-trick distances D' carry a float64 rounding error |D'_ij - D_ij| <= gamma (G_ii + G_jj)
    (``gram_error_factor``), so a score's error is at most b_i = k gamma (3 G_ii + 2 D'_i(k))
    (G_jj <= 2 G_ii + 2 D_ij; D'_i(k) the k-th smallest distance of row i). A row whose score
    interval [s_i - b_i, s_i + b_i] separates it from the m-th smallest score is decided by D';
    the rows left in the band are rescored from ``exact_sq_dists_to`` (identical rows share one
    computation) and ordered by (score, sum of squared distances to the active rows,
    lexicographic row value): exact and independent of the row order.
    """

    def __init__(self, updates: torch.Tensor) -> None:
        self.X = updates
        d = updates.shape[1]
        self.G = robust_gram(updates)
        self.D = sq_dists_from_gram(self.G)
        self.g = self.G.diagonal().clamp(min=0.0)
        self.gamma = gram_error_factor(d) * (1.0 + 1e-6)
        self._exact: dict[int, torch.Tensor] = {}
        self._rep: dict[int, int] = {}

    def scores(self, f: int, active: torch.Tensor | None = None, at_least_one: bool = False):
        """(scores s: Tensor[n] float64 from D', error bounds b: Tensor[n], neighbours k)."""
        n = self.D.shape[0]
        active = torch.ones(n, dtype=torch.bool) if active is None else active
        k = krum_neighbours(int(active.sum()), f, at_least_one)
        if k == 0:
            z = torch.where(active, 0.0, float("inf")).double()
            return z, torch.zeros(n, dtype=torch.float64), 0
        M = self.D.clone()
        M.fill_diagonal_(float("inf"))
        M[:, ~active] = float("inf")
        vals = torch.topk(M, k, dim=1, largest=False).values
        s = vals.sum(1)
        b = k * self.gamma * (3.0 * self.g + 2.0 * vals[:, -1]) + 1e-300
        s[~active] = float("inf")
        b[~active] = 0.0
        return s, b, k

    def _representative(self, i: int, band: list[int]) -> int:
        """The first row of ``band`` equal to row i value for value (i itself if none before)."""
        if i in self._rep:
            return self._rep[i]
        for j in band:
            if j == i:
                break
            if self.D[i, j] <= self.gamma * (self.g[i] + self.g[j]) and torch.equal(
                self.X[i], self.X[j]
            ):
                self._rep[i] = self._rep.get(j, j)
                return self._rep[i]
        self._rep[i] = i
        return i

    def _exact_key(self, i: int, rep: int, active: torch.Tensor, k: int):
        if rep not in self._exact:
            self._exact[rep] = exact_sq_dists_to(self.X, rep)
        row = self._exact[rep]
        others = active.clone()
        others[i] = False
        vals = torch.sort(row[others]).values
        return float(vals[:k].sum()), float(vals.sum())

    def select(
        self, f: int, m: int, active: torch.Tensor | None = None, at_least_one: bool = False
    ) -> list[int]:
        """Indices of the m active rows with the lowest Krum scores (exact; see the class)."""
        n = self.D.shape[0]
        active = torch.ones(n, dtype=torch.bool) if active is None else active
        s, b, k = self.scores(f, active, at_least_one)
        idx = torch.nonzero(active).flatten()
        if m >= idx.numel():
            return idx.tolist()
        lo, hi = (s - b)[idx], (s + b)[idx]
        L = float(torch.kthvalue(lo, m).values)
        U = float(torch.kthvalue(hi, m).values)
        sure = active & (s + b < L)
        band = active & ~sure & (s - b <= U)
        chosen = torch.nonzero(sure).flatten().tolist()
        need = m - len(chosen)
        cand = torch.nonzero(band).flatten().tolist()
        if len(cand) == need:
            return sorted(chosen + cand)
        keyed = []
        for i in cand:
            rep = self._representative(i, cand)
            keyed.append((*self._exact_key(i, rep, active, k), i))

        def cmp(a, b) -> int:
            if a[:2] != b[:2]:
                return -1 if a[:2] < b[:2] else 1
            return _lex_cmp(self.X[a[2]], self.X[b[2]])

        keyed.sort(key=functools.cmp_to_key(cmp))
        return sorted(chosen + [t[2] for t in keyed[:need]])


def krum_requirement(n: int, f: int) -> str | None:
    return None if n > 2 * f + 2 else f"krum needs n > 2f + 2, got n={n}, f={f}"


def multi_krum_requirement(n: int, f: int) -> str | None:
    return None if n > 2 * f + 2 else f"multi_krum needs n > 2f + 2, got n={n}, f={f}"


def bulyan_requirement(n: int, f: int) -> str | None:
    return None if n >= 4 * f + 3 else f"bulyan needs n >= 4f + 3, got n={n}, f={f}"


@AGGREGATORS.register(
    "krum", NoParams, requirement=krum_requirement,
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_krum(params: NoParams):
    """Krum (Blanchard et al., NeurIPS 2017): output the update x_{i*}, i* = argmin_i score(i),
    score(i) = sum of squared distances to its n - f - 2 nearest other updates (not n - f - 1,
    as ByzFL 0.0.11 has it). Needs n > 2f + 2 (the paper's condition).
    weights: one-hot on the selected row (exact argmin, ties: see ``KrumRanker``)."""

    @guarded("krum", params)
    def krum(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = updates.shape[0]
        (i,) = KrumRanker(updates).select(ctx.f, 1)
        w = torch.zeros(n, dtype=updates.dtype)
        w[i] = 1.0
        return AggregationResult(updates[i].clone(), w)

    return krum


class MultiKrumParams(Params):
    """m: number of best-scored updates averaged; None (default) means m = n - f."""

    m: int | None = Field(default=None, ge=1)


def multi_krum_params_requirement(params: MultiKrumParams, n: int, f: int) -> str | None:
    if params.m is not None and params.m > n:
        return f"defense.m = {params.m}: multi_krum averages m <= n updates, got n={n}"
    return None


@AGGREGATORS.register(
    "multi_krum", MultiKrumParams, requirement=multi_krum_requirement,
    params_requirement=multi_krum_params_requirement,
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_multi_krum(params: MultiKrumParams):
    """Multi-Krum (Blanchard et al. 2017, Sec. 4): average the m updates with the lowest Krum
    scores (scores computed once on all n; ties at the m-th place as in ``KrumRanker``).
    Weighted by ctx.weights renormalised over the selected rows (equal by default). Needs
    n > 2f + 2 and m <= n. weights: each selected row's share, 0 for the others."""

    @guarded("multi_krum", params)
    def multi_krum(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = updates.shape[0]
        m = params.m if params.m is not None else n - ctx.f
        sel = torch.tensor(KrumRanker(updates).select(ctx.f, m), dtype=torch.long)
        w = torch.zeros(n, dtype=torch.float64)
        w[sel] = client_weights(ctx, n)[sel]
        w = w / w.sum()
        return AggregationResult(combine(w, updates), w.to(updates.dtype))

    return multi_krum


def bulyan_select(ranker: KrumRanker, f: int, theta: int) -> list[int]:
    """Indices (in selection order) of theta rows chosen by repeated Krum on the shrinking set
    (El Mhamdi et al. 2018, Alg. 1 with A = Krum), reusing the ranker's distances. The set
    shrinks to 2f + 1 rows; when s - f - 2 < 1 there (f <= 1) the scores use max(1, s - f - 2)
    neighbours (at most s - 1), which the paper leaves unspecified."""
    n = ranker.D.shape[0]
    active = torch.ones(n, dtype=torch.bool)
    chosen = []
    for _ in range(theta):
        (i,) = ranker.select(f, 1, active, at_least_one=True)
        chosen.append(i)
        active[i] = False
    return chosen


def _closest_block(B: np.ndarray, beta: int) -> np.ndarray:
    """B: [w, theta] (one column per row, a copy; sorted in place) -> [w] float64 sums of the
    beta values of each row closest to the row's median m.

    With r the beta-th smallest deviation |s - m|, the sorted row reads: values below m - r,
    low ties (= m - r), values within r of m, high ties (= m + r), values above. The beta
    closest are the window that takes every value within r and fills the rest from the low
    ties first, then the high ones: it starts at (#below) + (#low ties) - min(need, #low ties).
    Deviations in float64."""
    theta = B.shape[1]
    B.sort(axis=1)
    S = B.astype(np.float64)
    m = (S[:, (theta - 1) // 2] + S[:, theta // 2]) * 0.5
    D = np.abs(S - m[:, None])
    r = np.partition(D, beta - 1, axis=1)[:, beta - 1:beta]
    low = S < m[:, None]
    n_below = ((D > r) & low).sum(axis=1)
    n_low = ((D == r) & low).sum(axis=1)
    need = beta - (D < r).sum(axis=1)
    a = n_below + n_low - np.minimum(need, n_low)
    idx = a[:, None] + np.arange(beta)
    return np.take_along_axis(S, idx, axis=1).sum(axis=1)


def beta_closest_to_median(sel: np.ndarray, beta: int) -> np.ndarray:
    """sel: [theta, d] -> [d] (sel's dtype): per coordinate, the mean of the beta values
    closest to the coordinate's median (El Mhamdi et al. 2018, Bulyan step 2). Ties at the last
    distance are filled from the lower values first (a deterministic tie rule).

    Per column block, copied transposed into a contiguous [w, theta] block and sorted along its
    rows (as in ``coordinate.py``); the beta closest values form a window of the sorted values
    (``_closest_block``); sums in float64, rounded once (no overflow for float32 input).
    """
    theta, d = sel.shape
    if beta == theta:
        return sel.mean(axis=0, dtype=np.float64).astype(sel.dtype)
    out = np.empty(d, dtype=sel.dtype)
    big = float(np.finfo(sel.dtype).max)

    def work(sl: slice) -> None:
        B = np.array(sel[:, sl].T, order="C", copy=True)
        out[sl] = np.clip(_closest_block(B, beta) / beta, -big, big)

    map_chunks(work, list(column_slices(theta, d, 1 << 16)))
    return out


@AGGREGATORS.register(
    "bulyan", NoParams, requirement=bulyan_requirement,
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_bulyan(params: NoParams):
    """Bulyan (El Mhamdi et al., ICML 2018) over Krum. Needs n >= 4f + 3 (the paper's).

    1. Selection: theta = n - 2f updates, chosen one at a time by Krum on the remaining set
       (scores with s - f - 2 neighbours for a remaining set of size s).
    2. Aggregation: per coordinate, the mean of the beta = theta - 2f selected values closest to
       the coordinate-wise median of the selection.

    weights: 1/theta on the selection set, 0 elsewhere (the aggregate itself is per coordinate).
    """

    @guarded("bulyan", params)
    def bulyan(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n = updates.shape[0]
        f = ctx.f
        theta, beta = n - 2 * f, n - 4 * f
        chosen = bulyan_select(KrumRanker(updates), f, theta)
        sel = updates.index_select(0, torch.tensor(sorted(chosen), dtype=torch.long))
        agg = beta_closest_to_median(sel.detach().cpu().numpy(), beta)
        w = torch.zeros(n, dtype=updates.dtype)
        w[chosen] = 1.0 / theta
        return AggregationResult(torch.from_numpy(agg).to(updates.dtype), w)

    return bulyan
