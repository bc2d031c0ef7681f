"""FLDetector (Zhang, Cao, Jia and Gong, "FLDetector: Defending Federated Learning Against
Model Poisoning Attacks via Detecting Malicious Clients", KDD 2022).

A benign client's update is consistent across rounds: with H the Hessian of its loss,
g_i^t ~ g_i^{t-1} + H (w^t - w^{t-1}). FLDetector estimates H v with the L-BFGS compact
representation built from the last N global model differences and global update differences
(Algorithm 2), predicts every client's update, scores each client by the average over the
last N rounds of its normalised prediction error, decides with the gap statistic whether the
scores form more than one cluster, and if so flags the k-means (k = 2) cluster with the
larger mean score (Algorithm 1).

Sign convention: the paper's g are gradients with w^{t+1} = w^t - alpha g^t; our updates are
deltas x = w_i - w, i.e. x = -alpha g up to the local optimiser, so we use g = -x throughout.
A common scale alpha cancels: the L-BFGS pairs and the predictions are in the same units,
and the distances are normalised per round.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from ..registry import Params
from .base import DETECTORS, DetectionContext, DetectionResult, row_ids


class FLDetectorParams(Params):
    """window: N, the number of past rounds in the L-BFGS buffers and in each client's score
    window (paper: 10). start_round: the first round that may flag clients (None: window + 1,
    the paper's t > N; scores are computed, and reported, from the third call on).
    references: B, uniform reference sets of the gap statistic (drawn from ctx.generator).
    max_staleness: a client's previous update may come from at most this many detector calls
    ago (None: any; 1: consecutive rounds only, as in the paper where all clients take part).
    min_clients: fewer scored clients than this in a round: no one is flagged.
    pairs: where the L-BFGS update differences come from. "global" (the paper): differences
    of consecutive global updates, y = g^{t-1} - g^{t-2}; they follow the Hessian only when
    the same clients take part every round (with client sampling the change of the sampled
    set dominates y). "clients": after each round's decision, y = minus the mean change
    x_i^t - x_i^{t-1} over the unflagged clients seen in both rounds, paired with
    s = w^t - w^{t-1}; the same Hessian information, unaffected by who was sampled. Use it
    when experiment.fraction_train < 1."""

    window: int = Field(default=10, ge=1, le=1000)
    start_round: int | None = Field(default=None, ge=1)
    references: int = Field(default=20, ge=1, le=10_000)
    max_staleness: int | None = Field(default=None, ge=1)
    min_clients: int = Field(default=3, ge=2)
    pairs: Literal["global", "clients"] = "global"


def lbfgs_hvp(S: torch.Tensor, Y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """L-BFGS approximation B v of the Hessian-vector product H v (FLDetector Algorithm 2;
    the compact representation of Byrd, Nocedal and Schnabel 1994).

    S: Tensor[m, d], the model differences s_j = w_j - w_{j-1}, oldest first (Delta W^T).
    Y: Tensor[m, d], the update differences y_j = g_j - g_{j-1} (Delta G^T). v: Tensor[d].

        A = S Y^T (A_ij = s_i . y_j), D = diag(A), L = strict lower triangle of A,
        sigma = (y_m . s_m) / (s_m . s_m) with m the latest pair,
        p = [[-D, L^T], [L, sigma S S^T]]^{-1} [Y v ; sigma S v],
        B v = sigma v - Y^T p[:m] - sigma S^T p[m:].

    B is the BFGS matrix obtained from B_0 = sigma I by the updates with the m pairs in order;
    it satisfies the latest secant equation B s_m = y_m. Computed in float64; the 2m x 2m
    system is solved with a pseudo-inverse (duplicate pairs make it singular). Returns
    Tensor[d] float64.
    """
    S = S.double()
    Y = Y.double()
    v = v.double()
    m = S.shape[0]
    A = S @ Y.T
    D = torch.diag(A.diagonal())
    L = torch.tril(A, diagonal=-1)
    sm, ym = S[-1], Y[-1]
    sigma = float(ym @ sm) / max(float(sm @ sm), 1e-300)
    M = torch.cat([torch.cat([-D, L.T], 1), torch.cat([L, sigma * (S @ S.T)], 1)], 0)
    q = torch.cat([Y @ v, sigma * (S @ v)])
    p = torch.linalg.pinv(M, hermitian=True, rtol=1e-12) @ q
    return sigma * v - Y.T @ p[:m] - sigma * (S.T @ p[m:])


def _within_ss(x: torch.Tensor) -> float:
    """Sum of squared deviations from the mean of a 1-D float64 tensor."""
    return float(((x - x.mean()) ** 2).sum()) if x.numel() else 0.0


def two_means_1d(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Exact k-means with k = 2 on scalars x: Tensor[n] (n >= 2).

    The optimal 2-means partition of points on a line is a split of the sorted values, so
    scanning the n - 1 splits gives the global optimum (scikit-learn's KMeans is a
    randomised heuristic; this is exact and does not depend on the row order). Splits are
    only placed between distinct values, so equal scores share a cluster.
    Returns (W_2, upper: Tensor[n] bool, the cluster with the larger mean); W_2 = 0 and
    no upper cluster (all False) when x has one distinct value.
    """
    x = x.double()
    n = x.numel()
    xs, order = torch.sort(x)
    c = xs - xs.mean()
    cs = torch.cumsum(c, 0)
    cs2 = torch.cumsum(c * c, 0)
    k = torch.arange(1, n, dtype=torch.float64)  # left sizes 1..n-1
    left = cs2[:-1] - cs[:-1] ** 2 / k
    right = (cs2[-1] - cs2[:-1]) - (cs[-1] - cs[:-1]) ** 2 / (n - k)
    ss = (left + right).clamp(min=0.0)
    valid = xs[1:] > xs[:-1]
    if not bool(valid.any()):
        return 0.0, torch.zeros(n, dtype=torch.bool)
    ss = torch.where(valid, ss, torch.full_like(ss, math.inf))
    j = int(torch.argmin(ss)) + 1  # first index of the upper cluster in sorted order
    upper = torch.zeros(n, dtype=torch.bool)
    upper[order[j:]] = True
    W2 = _within_ss(x[upper]) + _within_ss(x[~upper])
    return W2, upper


def gap_statistic_multiple(x: torch.Tensor, references: int, generator: torch.Generator) -> bool:
    """Whether the gap statistic (Tibshirani, Walther and Hastie, JRSS-B 2001) picks more
    than one cluster for the scalars x: Tensor[n].

    W_k: the within-cluster sum of squares of the optimal k-means clustering (W_1 around the
    mean, W_2 from ``two_means_1d``). Gap(k) = E*[log W*_k] - log W_k, the expectation over
    B reference sets of n points uniform on [min x, max x]; s_k = sd(log W*_k) sqrt(1 + 1/B)
    (sd with 1/B). The estimate is the smallest k with Gap(k) >= Gap(k+1) - s_{k+1}, so it is
    larger than 1 exactly when Gap(1) < Gap(2) - s_2: only k = 1, 2 are ever needed.
    Scores with a single distinct value: one cluster.
    """
    x = x.double()
    n = x.numel()
    lo, hi = float(x.min()), float(x.max())
    if n < 2 or not hi > lo:
        return False
    W1 = _within_ss(x)
    W2, _ = two_means_1d(x)
    ref = lo + (hi - lo) * torch.rand(references, n, generator=generator, dtype=torch.float64)
    logs1, logs2 = [], []
    for b in range(references):
        r = ref[b]
        logs1.append(math.log(max(_within_ss(r), 1e-300)))
        logs2.append(math.log(max(two_means_1d(r)[0], 1e-300)))
    l1 = torch.tensor(logs1)
    l2 = torch.tensor(logs2)
    gap1 = float(l1.mean()) - math.log(W1)
    if W2 <= 0.0:  # two distinct values: a perfect two-cluster fit
        return True
    gap2 = float(l2.mean()) - math.log(W2)
    s2 = float(l2.std(unbiased=False)) * math.sqrt(1.0 + 1.0 / references)
    return gap1 < gap2 - s2


@DETECTORS.register("fldetector", FLDetectorParams)
def make_fldetector(params: FLDetectorParams):
    """FLDetector as a detector. Per call (one round) with updates x_i (rows, ids from
    ctx.client_ids) and a = ctx.global_update (w now - w at the previous call):

    1. buffers (pairs = "global", the paper): with the previous call's a' the pair
       (s, y) = (a', -(a - a')) enters the L-BFGS window (s = w^{t-1} - w^{t-2},
       y = g^{t-1} - g^{t-2} with g = -a), oldest dropped beyond N; pairs with s = 0 (the
       model did not move) are skipped. (pairs = "clients": after step 5, the pair
       (a, -mean_i (x_i^t - x_i^{t-1})) over the unflagged clients seen in both rounds.)
    2. prediction: a client last seen at call r with update x_i^r is predicted as
       x_i^r - B (w^t - w^r) (g = -x); its distance d_i = ||predicted - x_i||. Clients never
       seen, or seen more than ``max_staleness`` calls ago, get no distance (and no score):
       they are never flagged this round. (The paper samples all clients every round; the
       model offset w^t - w^r generalises its w^t - w^{t-1} to clients that skipped rounds.)
    3. normalisation: d_i / mean_j d_j over the clients with a distance this round (the
       paper's d / ||d||_1 times their number, so that rounds with different numbers of
       scored clients share a scale); all zero if every distance is zero.
    4. score s_i: the mean of client i's last N normalised distances (its own window, keyed
       by partition id, across the rounds it took part in).
    5. from ``start_round``: if the gap statistic finds more than one cluster among the
       scores, the 2-means cluster with the larger mean is flagged.

    State (ctx.state): ``pairs`` list of (s, y), ``prev_global``, ``offset`` (w^t - w^1),
    ``offsets`` {call: offset}, ``last`` {client id: (call, update)}, ``windows`` {client id:
    [distances]}, ``calls``. A call with global_update None after the first resets the
    model tracking (pairs, previous updates); score windows are kept.
    scores: Tensor[n] float64 (NaN = no score this round).
    """
    start = params.start_round if params.start_round is not None else params.window + 1

    def fldetector(updates: torch.Tensor, ctx: DetectionContext) -> DetectionResult:
        if updates.dim() != 2 or not updates.is_floating_point():
            raise ValueError(f"fldetector: updates must be a floating Tensor[n, d], got {tuple(updates.shape)}")
        n, d = updates.shape
        ids = row_ids(ctx, n, "fldetector")
        st: dict[str, Any] = ctx.state
        call = st.get("calls", 0) + 1
        st["calls"] = call
        pairs: list = st.setdefault("pairs", [])
        last: dict = st.setdefault("last", {})
        windows: dict = st.setdefault("windows", {})
        offsets: dict = st.setdefault("offsets", {})
        a = ctx.global_update
        if a is None:
            pairs.clear()
            last.clear()
            offsets.clear()
            st["prev_global"] = None
            st["offset"] = torch.zeros(d, dtype=torch.float64)
        else:
            a = a.detach().reshape(-1).double()
            if a.numel() != d:
                raise ValueError(f"fldetector: ctx.global_update has {a.numel()} entries for d={d}")
            st["offset"] = st.get("offset", torch.zeros(d, dtype=torch.float64)) + a
            prev = st.get("prev_global")
            if params.pairs == "global" and prev is not None and float(prev.norm()) > 0:
                pairs.append((prev.to(updates.dtype), (prev - a).to(updates.dtype)))
                del pairs[:-params.window]
            st["prev_global"] = a
        offset = st["offset"]
        offsets[call] = offset

        dist = torch.full((n,), math.nan, dtype=torch.float64)
        if pairs:
            S = torch.stack([p[0] for p in pairs])
            Y = torch.stack([p[1] for p in pairs])
            hv: dict[int, torch.Tensor] = {}  # B (w^t - w^r) per previous call r
            for i, cid in enumerate(ids):
                seen = last.get(cid)
                if seen is None:
                    continue
                r, x_prev = seen
                if params.max_staleness is not None and call - r > params.max_staleness:
                    continue
                if r not in hv:
                    hv[r] = lbfgs_hvp(S, Y, offset - offsets[r])
                pred = x_prev.double() - hv[r]
                dist[i] = float(torch.linalg.vector_norm(pred - updates[i].double()))
        have = ~torch.isnan(dist)
        if bool(have.any()):
            mean = float(dist[have].mean())
            norm = dist[have] / mean if mean > 0 else torch.zeros(int(have.sum()), dtype=torch.float64)
            for j, i in enumerate(have.nonzero().reshape(-1).tolist()):
                w = windows.setdefault(ids[i], [])
                w.append(float(norm[j]))
                del w[:-params.window]
        scores = torch.full((n,), math.nan, dtype=torch.float64)
        for i in have.nonzero().reshape(-1).tolist():
            scores[i] = sum(windows[ids[i]]) / len(windows[ids[i]])

        flagged = torch.zeros(n, dtype=torch.bool)
        k = int(have.sum())
        if ctx.round >= start and k >= params.min_clients:
            s = scores[have]
            gen = ctx.generator if ctx.generator is not None else torch.Generator().manual_seed(0)
            if gap_statistic_multiple(s, params.references, gen):
                _, upper = two_means_1d(s)
                flagged[have.nonzero().reshape(-1)[upper]] = True

        if params.pairs == "clients" and a is not None and float(a.norm()) > 0:
            both = [i for i, cid in enumerate(ids)
                    if not bool(flagged[i]) and cid in last and last[cid][0] == call - 1]
            if both:
                change = torch.stack([updates[i].double() - last[ids[i]][1].double() for i in both]).mean(0)
                pairs.append((a.to(updates.dtype), (-change).to(updates.dtype)))
                del pairs[:-params.window]
        for i, cid in enumerate(ids):
            last[cid] = (call, updates[i].detach().clone())
        used = {r for r, _ in last.values()} | {call}
        for r in [r for r in offsets if r not in used]:
            del offsets[r]

        return DetectionResult(flagged, scores)

    return fldetector
