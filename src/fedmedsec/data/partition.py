"""Partitioners: split record indices across hospitals.

Each partitioner maps labels ``y: int[N]`` (and, for ``natural``, sites ``str[N]``) to a
list of ``num_hospitals`` index arrays. Written here rather than taken from flwr-datasets
because those operate on Hugging Face ``datasets.Dataset`` objects (a heavy dependency for
numpy arrays) and do not give the minimum-size guarantee with a clear error we need.
Every hospital gets at least ``min_records`` records or a ``PartitionError`` says why not.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..registry import Params, Registry

#: name -> partitioner(y, n, rng, *, min_records, sites=None, **own params) -> list of
#: index arrays. Each registers the parameter model of its own ``data.*`` keys.
PARTITIONERS: Registry = Registry("data.partition")


class DirichletParams(Params):
    alpha: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration (label skew)")


class QuantityParams(Params):
    quantity_sigma: float = Field(1.0, gt=0, le=100, description="log-normal sigma of sizes")


class PathologicalParams(Params):
    classes_per_hospital: int = Field(1, ge=1, le=100_000, description="classes each hospital holds")


class PartitionError(ValueError):
    """The data cannot be split as configured; one line for the user."""


def _check_sizes(parts: list[np.ndarray], min_records: int, what: str) -> list[np.ndarray]:
    small = [i for i, p in enumerate(parts) if len(p) < min_records]
    if small:
        raise PartitionError(
            f"{what} leaves hospital {small[0]} with {len(parts[small[0]])} records, fewer than "
            f"data.min_records = {min_records}; use fewer hospitals, a larger data.alpha, "
            f"or a smaller data.min_records"
        )
    return [np.sort(p) for p in parts]


@PARTITIONERS.register("iid")
def iid(y: np.ndarray, n: int, rng: np.random.Generator, *, min_records: int, **_) -> list[np.ndarray]:
    """Shuffle, then n near-equal shards."""
    if len(y) < n * min_records:
        raise PartitionError(
            f"data.num_hospitals = {n} needs at least {n * min_records} training records "
            f"({min_records} each, data.min_records); the data has {len(y)}"
        )
    return _check_sizes(np.array_split(rng.permutation(len(y)), n), min_records, "iid split")


@PARTITIONERS.register("dirichlet", DirichletParams)
def dirichlet(
    y: np.ndarray, n: int, rng: np.random.Generator, *, min_records: int, alpha: float, **_,
) -> list[np.ndarray]:
    """Label skew (Hsu et al. 2019): for each class c, proportions p_c ~ Dir(alpha * 1_n)
    split that class's records across hospitals.

    The minimum size is guaranteed by construction rather than by redrawing (which fails
    for many small hospitals): each hospital is first dealt ``min_records`` records at
    random, and the remaining records are split with the Dirichlet proportions. For
    N >> n * min_records this is the plain Dirichlet split."""
    iid(y, n, rng, min_records=min_records)  # feasibility check only
    perm = rng.permutation(len(y))
    floor, rest = perm[: n * min_records], perm[n * min_records :]
    parts: list[list[int]] = [floor[h * min_records : (h + 1) * min_records].tolist() for h in range(n)]
    for c in np.unique(y):
        idx = rest[y[rest] == c]
        p = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
        for h, chunk in enumerate(np.split(idx, cuts)):
            parts[h].extend(chunk.tolist())
    return _check_sizes([np.asarray(p, dtype=np.int64) for p in parts], min_records, "dirichlet split")


@PARTITIONERS.register("quantity", QuantityParams)
def quantity(
    y: np.ndarray, n: int, rng: np.random.Generator, *, min_records: int, quantity_sigma: float, **_
) -> list[np.ndarray]:
    """Size skew: hospital sizes proportional to log-normal(0, sigma) draws, on top of the
    ``min_records`` floor; records assigned at random (labels roughly iid)."""
    iid(y, n, rng, min_records=min_records)
    free = len(y) - n * min_records
    w = rng.lognormal(0.0, quantity_sigma, size=n)
    extra = np.floor(w / w.sum() * free).astype(int)
    extra[: free - extra.sum()] += 1  # hand out the rounding remainder
    sizes = extra + min_records
    perm = rng.permutation(len(y))
    return _check_sizes(np.split(perm, np.cumsum(sizes)[:-1]), min_records, "quantity split")


@PARTITIONERS.register("pathological", PathologicalParams)
def pathological(
    y: np.ndarray, n: int, rng: np.random.Generator, *, min_records: int,
    classes_per_hospital: int, **_,
) -> list[np.ndarray]:
    """Pathological non-IID (McMahan et al. 2017): each hospital holds records of
    ``k = classes_per_hospital`` classes only. Classes are dealt round-robin so every class
    is used; each class's records are split evenly among the hospitals that hold it."""
    classes = np.unique(y)
    k = classes_per_hospital
    if k > len(classes):
        raise PartitionError(
            f"data.classes_per_hospital = {k}: the data has only {len(classes)} classes"
        )
    start = rng.permutation(len(classes))
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for h in range(n):
        for j in range(k):
            owners[int(classes[start[(h * k + j) % len(classes)]])].append(h)
    parts: list[list[int]] = [[] for _ in range(n)]
    for c, hs in owners.items():
        if not hs:
            continue
        idx = rng.permutation(np.flatnonzero(y == c))
        for h, chunk in zip(hs, np.array_split(idx, len(hs))):
            parts[h].extend(chunk.tolist())
    return _check_sizes(
        [np.asarray(p, dtype=np.int64) for p in parts], min_records,
        f"pathological split ({k} classes per hospital)",
    )


@PARTITIONERS.register("natural")
def natural(
    y: np.ndarray, n: int | None, rng: np.random.Generator, *, min_records: int,
    sites: np.ndarray | None = None, **_,
) -> list[np.ndarray]:
    """The real cross-silo split: each distinct site (sorted by name) is one hospital;
    ``n`` None takes the number of sites, a given ``n`` must equal it."""
    if sites is None:
        raise PartitionError(
            "data.partition = 'natural' needs a dataset with sites (e.g. csv with data.site_column)"
        )
    names = sorted(set(sites.tolist()))
    if n is None:
        n = len(names)
    if len(names) != n:
        raise PartitionError(
            f"data.num_hospitals = {n}: the data has {len(names)} sites ({', '.join(names)}); "
            f"leave data.num_hospitals out (the natural split takes it from the data) or set it to {len(names)}"
        )
    return _check_sizes(
        [np.flatnonzero(sites == s) for s in names], min_records, "natural (per-site) split"
    )
