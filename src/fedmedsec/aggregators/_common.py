"""Shared helpers for the aggregation rules: input checks, preconditions, client weights, and
norms, distances and Gram matrices that stay exact over the whole float32 range.

Squaring a float32 row at 1e30 overflows (1e60 > 3.4e38) and squaring one at 1e-25 underflows,
so every norm, dot product and Gram matrix here is accumulated in float64, column chunk by
column chunk (temporaries of n x ``CHUNK_ELEMS / n`` float64, no n x d copy). Pairwise
distances come from a centered Gram matrix, ``||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij`` with
``G = (X - c)(X - c)^T``; centering makes the trick accurate when updates are close to each
other. Outputs are returned in the input dtype and are finite for finite input.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from pydantic import BaseModel

from .base import AggregationContext, PreconditionError, rule_problem

#: float64 elements per temporary chunk (n rows x CHUNK_ELEMS // n columns; 4 MiB)
CHUNK_ELEMS = 1 << 19
#: the unit roundoff of float64
U64 = 2.0 ** -53


def check_updates(updates: torch.Tensor, rule: str) -> tuple[int, int]:
    """Validate ``updates: Tensor[n, d]`` (floating, 2-D, n >= 1); return (n, d).
    n = 0 raises PreconditionError (no row reached the rule)."""
    if not isinstance(updates, torch.Tensor) or updates.dim() != 2:
        raise ValueError(f"{rule}: updates must be a Tensor[n, d], got shape "
                         f"{tuple(getattr(updates, 'shape', ()))}")
    if not updates.is_floating_point():
        raise ValueError(f"{rule}: updates must be floating point, got {updates.dtype}")
    n, d = updates.shape
    if n < 1:
        raise PreconditionError(f"{rule} needs at least one update, got n=0")
    return n, d


def guarded(name: str, params: BaseModel | None = None):
    """Decorator for a rule's inner function ``fn(updates, ctx) -> AggregationResult``: check
    the updates and the registered preconditions of ``name`` (``requirement`` and
    ``params_requirement`` with these params) on the rows it receives, raising
    PreconditionError; the wrapper exposes ``.requirement`` ((n, f) -> str | None) and
    ``.rule_name`` so ``pipeline.aggregate`` can check before calling it."""

    def requirement(n: int, f: int) -> str | None:
        return rule_problem(name, n, f, params)

    def deco(fn):
        @functools.wraps(fn)
        def rule(updates: torch.Tensor, ctx: AggregationContext):
            n, _ = check_updates(updates, name)
            msg = requirement(n, ctx.f)
            if msg is not None:
                raise PreconditionError(msg)
            return fn(updates, ctx)

        rule.requirement = requirement
        rule.rule_name = name
        return rule

    return deco


def client_weights(ctx: AggregationContext, n: int) -> torch.Tensor:
    """Tensor[n] float64 client weights summing to 1 (ctx.weights normalised, else 1/n)."""
    if ctx.weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = torch.as_tensor(ctx.weights, dtype=torch.float64).reshape(-1)
    if w.numel() != n:
        raise ValueError(f"ctx.weights has {w.numel()} entries for n={n} updates")
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("ctx.weights must be finite, non-negative and not all zero")
    return w / w.sum()


def generator(ctx: AggregationContext) -> torch.Generator:
    """ctx.generator, or a fixed-seed generator (seed 0) so results stay reproducible."""
    if ctx.generator is not None:
        return ctx.generator
    return torch.Generator().manual_seed(0)


def column_slices(n: int, d: int, elems: int = CHUNK_ELEMS) -> Iterator[slice]:
    """Consecutive column slices of width ~ elems / n (a multiple of 64) covering range(d)."""
    w = max(64, (elems // max(n, 1)) // 64 * 64)
    for s in range(0, d, w):
        yield slice(s, min(s + w, d))


def threads() -> int:
    """Worker threads for chunked numpy work: torch's intra-op thread count (1 in the tests)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def map_chunks(fn: Callable[[slice], None], slices: list[slice]) -> None:
    """Run fn on every slice, on ``threads()`` threads (numpy's partition and reductions release
    the GIL); inline when there is one thread or one slice."""
    k = min(threads(), len(slices))
    if k <= 1:
        for sl in slices:
            fn(sl)
        return
    with ThreadPoolExecutor(k) as pool:
        list(pool.map(fn, slices))


# ---------------------------------------------------------------- Gram matrices (float64)
def gram(
    updates: torch.Tensor,
    extra: torch.Tensor | None = None,
    center: torch.Tensor | str | None = "mean",
) -> torch.Tensor:
    """Gram matrix of the rows of ``updates`` (and the optional ``extra: Tensor[d]`` as a last
    row) after subtracting ``center``: "mean" (the per-coordinate mean of the rows, formed once
    in the input dtype: any center gives the same distances, it only has to be near the bulk),
    a Tensor[d], or None (no centering). Returns Tensor[m, m] float64; the centering and the
    products are done in float64 per column chunk."""
    n, d = updates.shape
    m = n + (extra is not None)
    if isinstance(center, str):
        mu = combine(torch.full((n,), 1.0 / n, dtype=torch.float64), updates)
        if extra is not None:
            mu = combine(torch.tensor([n / m, 1.0 / m], dtype=torch.float64),
                         torch.stack([mu, extra.to(updates.dtype)]))
        center = mu
    G = torch.zeros(m, m, dtype=torch.float64)
    slices = list(column_slices(m, d))
    buf = torch.empty(m, slices[0].stop - slices[0].start if slices else 0, dtype=torch.float64)
    for sl in slices:
        c = buf[:, : sl.stop - sl.start]  # one buffer for all chunks: no page faults per chunk
        c[:n].copy_(updates[:, sl])
        if extra is not None:
            c[n].copy_(extra[sl])
        if center is not None:
            c -= center[sl].to(torch.float64)
        G.addmm_(c, c.T)
    return G


def centered_gram(
    updates: torch.Tensor, extra: torch.Tensor | None = None, center: torch.Tensor | None = None
) -> torch.Tensor:
    """``gram`` around ``center`` (default: the per-coordinate mean of the rows)."""
    return gram(updates, extra, "mean" if center is None else center)


#: recenter when the largest squared norm around the mean exceeds this many typical squared
#: distances (the bulk's small distances would drown in the rounding of the huge products)
RECENTER_RATIO = 1e3


def robust_gram(updates: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Like ``centered_gram`` but accurate when a few rows are huge (an attack).

    Centering at the mean puts the center far from the bulk if f rows are huge, and the bulk's
    small distances drown in the rounding of the huge products. Then the Gram matrix is
    recomputed around the row with the smallest median distance to the others (a medoid,
    inside the bulk when f < n/2). Distances do not depend on the center.
    """
    G = centered_gram(updates, extra)
    n = updates.shape[0]
    if n < 2:
        return G
    D = sq_dists_from_gram(G[:n, :n])
    typical = D.median(dim=1).values
    k = int(torch.argmin(typical))
    if float(G.diagonal().max()) > RECENTER_RATIO * max(float(typical[k]), 1e-300):
        G = centered_gram(updates, extra, center=updates[k])
    return G


def sq_dists_from_gram(G: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ``D_ij = G_ii + G_jj - 2 G_ij`` (clamped at 0, zero diagonal)."""
    g = G.diagonal()
    D = (g[:, None] + g[None, :] - 2.0 * G).clamp_(min=0.0)
    D.fill_diagonal_(0.0)
    return D


def gram_error_factor(d: int) -> float:
    """gamma such that |computed - exact| <= gamma (G_ii + G_jj) for the squared distances of
    ``sq_dists_from_gram(gram(...))`` (worst-case float64 rounding of the centering, the chunked
    dot products and the final sum; Higham, Accuracy and Stability, Sec. 3.1)."""
    return 4.0 * (d + 8) * U64


def pairwise_sq_dists(updates: torch.Tensor) -> torch.Tensor:
    """Tensor[n, n] float64 of squared Euclidean distances between the rows of updates."""
    return sq_dists_from_gram(robust_gram(updates))


def exact_sq_dists_to(updates: torch.Tensor, i: int) -> torch.Tensor:
    """Tensor[n] float64: ``sum_j (x_kj - x_ij)^2`` for every row k, computed directly in float64
    in a fixed column order (the same numbers whatever the row order: entry k of row i equals
    entry i of row k bit for bit)."""
    n = updates.shape[0]
    out = torch.zeros(n, dtype=torch.float64)
    for c, sl in float64_chunks(updates):
        c -= updates[i, sl].double()
        out += (c * c).sum(1)
    return out


def float64_chunks(updates: torch.Tensor, elems: int = CHUNK_ELEMS):
    """Yield (chunk, slice): ``updates[:, slice]`` copied into one reused float64 buffer (the
    chunk is overwritten by the next one; no page faults per chunk)."""
    n, d = updates.shape
    slices = list(column_slices(n, d, elems))
    if not slices:
        return
    buf = torch.empty(n, slices[0].stop - slices[0].start, dtype=torch.float64)
    for sl in slices:
        c = buf[:, : sl.stop - sl.start]
        c.copy_(updates[:, sl])
        yield c, sl


# ---------------------------------------------------------------- norms and dot products
#: float32 row norms outside [NORM_LO, NORM_HI] are recomputed in float64 (their squares
#: underflow or overflow in float32)
NORM_LO, NORM_HI = 1e-15, 1e15


def row_norms(updates: torch.Tensor) -> torch.Tensor:
    """Tensor[n] float64 Euclidean norms of the rows, correct to the input's rounding over the
    whole float range: a fast norm in the input dtype, rows whose squares may have overflowed or
    underflowed (norm outside [NORM_LO, NORM_HI], or non-finite) recomputed in float64."""
    norms = torch.linalg.vector_norm(updates, dim=1).double()
    if updates.dtype == torch.float64:
        bad = ~torch.isfinite(norms)
    else:
        bad = ~torch.isfinite(norms) | (norms > NORM_HI) | ((norms < NORM_LO) & (norms >= 0))
    for i in torch.nonzero(bad).flatten().tolist():
        x = updates[i]
        scale = float(x.abs().max().double())
        if scale == 0.0:
            norms[i] = 0.0
            continue
        norms[i] = scale * float(torch.linalg.vector_norm(x.double() / scale))
    return norms


def _sq_dists_part(X: np.ndarray, v: np.ndarray, cols: slice, w: int) -> np.ndarray:
    """float64 [n] partial sums of (x_ij - v_j)^2 over the columns ``cols``, in sub-chunks of w
    columns through one reused buffer (squares in the input dtype, pairwise row sums)."""
    n = X.shape[0]
    buf = np.empty((n, w), dtype=X.dtype)
    acc = np.zeros(n)
    with np.errstate(all="ignore"):  # overflow to inf marks a row for the float64 recomputation
        for s in range(cols.start, cols.stop, w):
            e = min(s + w, cols.stop)
            z = buf[:, : e - s]
            np.subtract(X[:, s:e], v[s:e], out=z)
            np.multiply(z, z, out=z)
            acc += z.sum(axis=1)
    return acc


def dists_to(updates: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Tensor[n] float64: ||x_i - v|| for v: Tensor[d] (one pass; never an n x d temporary).

    Fast path in the input dtype: the columns are split among ``threads()`` numpy workers
    (no per-operation thread barriers), each subtracting and squaring cache-sized sub-chunks in
    place and accumulating pairwise row sums in float64. Rows whose distance may have
    overflowed or underflowed there (outside [NORM_LO, NORM_HI], or non-finite, as in
    ``row_norms``) are recomputed in float64 with scaling."""
    n, d = updates.shape
    X = updates.detach().cpu().numpy()
    vn = v.detach().to(updates.dtype).cpu().numpy()
    w = max(256, (CHUNK_ELEMS // max(n, 1)) // 64 * 64)
    k = max(1, min(threads(), d // (4 * w)))
    bounds = [d * j // k for j in range(k + 1)]
    parts = [slice(bounds[j], bounds[j + 1]) for j in range(k)]
    if k == 1:
        sq = _sq_dists_part(X, vn, parts[0], w)
    else:
        with ThreadPoolExecutor(k) as pool:
            sq = sum(pool.map(lambda cols: _sq_dists_part(X, vn, cols, w), parts))
    dist = torch.from_numpy(np.sqrt(sq))
    if updates.dtype == torch.float64:
        bad = ~torch.isfinite(dist)
    else:
        bad = ~torch.isfinite(dist) | (dist > NORM_HI) | (dist < NORM_LO)
    if bool(bad.any()):
        v64 = v.double()
        for i in torch.nonzero(bad).flatten().tolist():
            z = updates[i].double() - v64
            scale = float(z.abs().max())
            dist[i] = 0.0 if scale == 0.0 else scale * float(torch.linalg.vector_norm(z / scale))
    return dist


def dots_with(updates: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Tensor[n] float64: <x_i, v> accumulated in float64 (no overflow for float32 rows)."""
    out = torch.zeros(updates.shape[0], dtype=torch.float64)
    for c, sl in float64_chunks(updates):
        out += c @ v[sl].double()
    return out


def rows_gram(rows: list[torch.Tensor]) -> torch.Tensor:
    """Uncentered float64 Gram matrix of the Tensor[d] ``rows`` without stacking them into an
    n x d copy (chunk by chunk)."""
    n, d = len(rows), int(rows[0].numel())
    G = torch.zeros(n, n, dtype=torch.float64)
    slices = list(column_slices(n, d))
    if not slices:
        return G
    buf = torch.empty(n, slices[0].stop - slices[0].start, dtype=torch.float64)
    for sl in slices:
        c = buf[:, : sl.stop - sl.start]
        for i, r in enumerate(rows):
            c[i].copy_(r[sl])
        G.addmm_(c, c.T)
    return G


def cosine_matrix(updates: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Tensor[n, n] float64 cosine similarities cos(x_i, x_j) (0 where a row is zero; 1 on the
    diagonal of non-zero rows), from a float64 Gram matrix. updates: Tensor[n, d] or a list
    of n Tensor[d] rows."""
    G = rows_gram(updates) if isinstance(updates, list) else gram(updates, center=None)
    norms = G.diagonal().clamp(min=0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, G / denom.clamp(min=1e-300), torch.zeros_like(G))
    return cos.clamp(-1.0, 1.0)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of t is finite: its float64 sum is (a finite float32 tensor cannot
    overflow a float64 sum; inf and nan propagate), one fast reduction instead of isfinite's
    boolean temporary."""
    return math.isfinite(float(t.sum(dtype=torch.float64)))


def combine(coef: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
    """``sum_i coef_i x_i`` as Tensor[d] in the dtype of updates (coef: Tensor[n]).

    Computed in the input dtype; if that overflows (float32 rows near the top of the range) or a
    coefficient would lose precision in it (|c| < 2^-100 scaling a huge row down), computed in
    float64 chunks instead. The result is clamped to the dtype's finite range (it can only
    leave it by rounding: the rules combine with coefficients whose output lies in the convex
    hull of the rows, or has a bounded norm)."""
    d = updates.shape[1]
    if updates.dtype == torch.float64:
        return coef.double() @ updates
    c = coef.abs()
    nz = c[c > 0]
    # coefficients outside float32's comfortable range (they scale a huge row down): float64
    safe = nz.numel() == 0 or (float(nz.min()) > 2.0 ** -100 and float(nz.max()) < 2.0 ** 100)
    if safe:
        out = coef.to(updates.dtype) @ updates
        if all_finite(out):
            return out
    c64 = coef.double()
    out = torch.empty(d, dtype=updates.dtype)
    big = torch.finfo(updates.dtype).max
    for c, sl in float64_chunks(updates):
        out[sl] = (c64 @ c).clamp(-big, big).to(updates.dtype)
    return out
