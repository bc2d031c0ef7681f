"""Preprocessing fitted from per-hospital statistics: no record leaves a hospital.

Each hospital computes ``column_stats`` of its own training rows (per feature: observed
count, sum, sum of squares, min, max); the server adds them (``combine``) and fits one
``Preprocessor``; every hospital applies it to its records. For tabular data:

- imputation with the federated **mean** of the observed values (numeric columns) and, for
  one-hot columns, 1 where the observed share of ones exceeds 1/2 else 0 (the column's
  mode). The mean is exact from sums; a median would need a quantile protocol, so the
  pooled median imputation of earlier versions was replaced by the mean;
- standardisation of the numeric columns by the mean and population standard deviation of
  the imputed training column: mean = (sum + m * fill) / N and
  var = (sumsq + m * fill^2) / N - mean^2 with m = N - count missing cells, exactly what the
  pooled training rows would give.

Images and ECG are not transformed (images stay in [0, 1] so triggers keep their meaning;
ECG loaders standardise each record). ``low`` / ``high`` (per feature, after the transform)
are the federated min / max of the training data, which tabular triggers and evasion
bounds use. ``mode = "local"`` fits each hospital on its own statistics instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Sufficient statistics of training rows, per feature (flattened) F: float64 arrays."""

    rows: int
    count: np.ndarray  # observed (non-NaN) values
    total: np.ndarray  # sum of observed values
    total_sq: np.ndarray  # sum of squares of observed values
    low: np.ndarray  # min of observed values (+inf where none)
    high: np.ndarray  # max of observed values (-inf where none)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": int(self.rows), **{k: getattr(self, k).tolist() for k in
                                           ("count", "total", "total_sq", "low", "high")}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("count", "total", "total_sq", "low", "high")}
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError("statistics arrays must be 1-D and of one length")
        if int(d["rows"]) < 0 or (arrays["count"] < 0).any() or (arrays["count"] > int(d["rows"])).any():
            raise ValueError("statistics counts are out of range")
        return cls(int(d["rows"]), **arrays)


def column_stats(x: np.ndarray) -> Stats:
    """Stats of x [N, ...] (NaN = missing), features flattened."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    obs = ~np.isnan(flat)
    v = np.where(obs, flat, 0.0)
    with np.errstate(invalid="ignore"):
        low = np.where(obs.any(0), np.nanmin(np.where(obs, flat, np.inf), axis=0), np.inf)
        high = np.where(obs.any(0), np.nanmax(np.where(obs, flat, -np.inf), axis=0), -np.inf)
    return Stats(len(flat), obs.sum(0).astype(np.float64), v.sum(0), (v * v).sum(0), low, high)


def combine(stats: list[Stats]) -> Stats:
    """The stats of the union of the hospitals' rows."""
    if not stats:
        raise ValueError("combine needs the statistics of at least one hospital")
    shapes = {s.count.shape for s in stats}
    if len(shapes) != 1:
        raise ValueError(f"hospitals report statistics of different widths {sorted(shapes)}")
    return Stats(sum(s.rows for s in stats), sum(s.count for s in stats), sum(s.total for s in stats),
                 sum(s.total_sq for s in stats), np.minimum.reduce([s.low for s in stats]),
                 np.maximum.reduce([s.high for s in stats]))


@dataclass(frozen=True)
class Preprocessor:
    """x -> ((impute(x) - mu) / sd) per flattened feature; identity parts are None."""

    fill: np.ndarray | None
    mu: np.ndarray | None
    sd: np.ndarray | None
    low: np.ndarray  # per-feature min after the transform
    high: np.ndarray  # per-feature max after the transform

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(transformed float32 copy of x [N, ...], number of imputed cells)."""
        shape = x.shape
        flat = np.array(x, dtype=np.float32, copy=True).reshape(len(x), int(np.prod(shape[1:], dtype=np.int64)))
        missing = 0
        if self.fill is not None:
            nan = np.isnan(flat)
            missing = int(nan.sum())
            flat[nan] = np.broadcast_to(self.fill.astype(np.float32), flat.shape)[nan]
        if self.mu is not None:
            flat = (flat - self.mu.astype(np.float32)) / self.sd.astype(np.float32)
        return flat.astype(np.float32).reshape(shape), missing

    def to_dict(self) -> dict[str, Any]:
        def arr(a):
            return None if a is None else a.astype(np.float64).tolist()

        return {"fill": arr(self.fill), "mu": arr(self.mu), "sd": arr(self.sd),
                "low": arr(self.low), "high": arr(self.high)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        def arr(k):
            return None if d.get(k) is None else np.asarray(d[k], dtype=np.float64)

        return cls(arr("fill"), arr("mu"), arr("sd"), arr("low"), arr("high"))


def fit(stats: Stats, modality: str, categorical: np.ndarray | None = None) -> Preprocessor:
    """The preprocessor of the module docstring from (combined) training statistics."""
    F = stats.count.shape[0]
    cat = np.zeros(F, bool) if categorical is None else np.asarray(categorical, bool).reshape(-1)
    if modality != "tabular":
        return Preprocessor(None, None, None, _finite(stats.low, 0.0), _finite(stats.high, 0.0))
    n = max(stats.rows, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed_mean = np.where(stats.count > 0, stats.total / np.maximum(stats.count, 1), 0.0)
    fill = np.where(cat, (observed_mean > 0.5).astype(np.float64), observed_mean)
    m = stats.rows - stats.count
    mean = (stats.total + m * fill) / n
    var = np.maximum((stats.total_sq + m * fill * fill) / n - mean * mean, 0.0)
    sd = np.sqrt(var)
    # a constant column: its variance from sums is rounding noise of order eps * mean^2
    sd = np.where(var <= 1e-12 * np.maximum(1.0, mean * mean), 1.0, sd)
    mu = np.where(cat, 0.0, mean)
    sd = np.where(cat, 1.0, sd)
    # the transformed range of the training data: observed extremes, and the fill value
    lo = np.where(m > 0, np.minimum(stats.low, fill), stats.low)
    hi = np.where(m > 0, np.maximum(stats.high, fill), stats.high)
    lo, hi = _finite(lo, fill), _finite(hi, fill)
    return Preprocessor(fill, mu, sd, (lo - mu) / sd, (hi - mu) / sd)


def _finite(a: np.ndarray, default) -> np.ndarray:
    return np.where(np.isfinite(a), a, default).astype(np.float64)
