"""EHR tables from a local CSV: numeric and one-hot categorical features, an optional
hospital (site) column for ``partition = "natural"``, and train-only imputation helpers.

Missing values stay NaN in ``RawData.x``; the pipeline imputes after the train/test split
with ``impute_fit`` on the training rows only and ``impute_apply`` on every split, so no
statistic of test data leaks into training (median for numeric columns, mode for one-hot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from ..registry import Params
from .base import DATASETS, DataError, RawData

#: more classes than a clinical table's label by far (a class index beyond is a typo)
MAX_CLASSES = 1000


class CSVParams(Params):
    path: str | list[str] = Field(
        description="a CSV file with a header row (never downloaded), or one file per hospital "
                    "(a list, or a directory of .csv files)")
    target: str = Field(description="the label column")
    site_column: str | None = Field(None, description="hospital of each row (natural split)")
    label_map: dict[str, int] | None = Field(
        None, description='raw target value -> class, e.g. {"0": 0, "1": 1, "2": 1}'
    )
    drop_columns: list[str] = Field(default_factory=list, description="columns to ignore")
    categorical_columns: list[str] | None = Field(
        None, description="one-hot encoded columns; default: the non-numeric columns"
    )
    missing_values: list[str] = Field(
        default_factory=lambda: ["", "?", "NA", "NaN", "nan"],
        description="cell strings that mean 'missing'",
    )


def _canon(value: str) -> str:
    """Target cell -> canonical string: "1.0" and "1" are the same class value."""
    v = value.strip()
    try:
        f = float(v)
    except ValueError:
        return v
    return str(int(f)) if np.isfinite(f) and f == int(f) else v


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    """Data row numbers (1 = first row after the header) of ``mask``, shortened."""
    idx = np.flatnonzero(mask) + 1
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} rows)" if len(idx) > limit else "")


@dataclass
class _Table:
    """A CSV read as strings, with the columns' roles resolved (one file)."""

    path: Path
    df: pd.DataFrame
    raw_target: np.ndarray  # canonical target strings [N]
    sites: np.ndarray | None
    kinds: dict[str, str]  # feature column -> "numeric" | "categorical"
    missing: dict[str, np.ndarray]  # feature column -> bool [N]


def _read(params: CSVParams, site_column: bool = True) -> _Table:
    path = Path(params.path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file (data.path)")
    missing_tokens = set(params.missing_values)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # parser errors: one line for the user
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV file ({msg[:200]})") from None
    if len(df) == 0:
        raise DataError(f"{path}: no data rows")
    df.columns = [str(c).strip() for c in df.columns]
    cols = list(df.columns)
    site_col = params.site_column if site_column else None
    for key, name in (("data.target", params.target), ("data.site_column", site_col)):
        if name is not None and name not in cols:
            raise DataError(f"{path}: no column {name!r} ({key}); columns are {cols}")
    unknown = [c for c in params.drop_columns + (params.categorical_columns or []) if c not in cols]
    if unknown:
        raise DataError(f"{path}: columns {unknown} (data.drop_columns/categorical_columns) not in {cols}")

    def is_missing(s: pd.Series) -> np.ndarray:
        return s.str.strip().isin(missing_tokens).to_numpy()

    tgt = df[params.target].astype(str)
    tmiss = is_missing(tgt)
    if tmiss.any():
        raise DataError(f"{path}: column {params.target!r} (target) is missing in rows {_rows(tmiss)}")
    sites = None
    if site_col is not None:
        s = df[site_col].astype(str)
        smiss = is_missing(s)
        if smiss.any():
            raise DataError(f"{path}: column {site_col!r} (site) is empty in rows {_rows(smiss)}")
        sites = s.str.strip().to_numpy().astype(str)
    skip = {params.target, params.site_column, *params.drop_columns}
    feats = [c for c in cols if c not in skip]
    if not feats:
        raise DataError(f"{path}: no feature columns left after target/site/drop_columns")
    explicit = params.categorical_columns is not None
    cat_cols = set(params.categorical_columns or [])
    kinds: dict[str, str] = {}
    missing: dict[str, np.ndarray] = {}
    for c in feats:
        s = df[c].astype(str).str.strip()
        miss = is_missing(s)
        num = pd.to_numeric(s.where(~miss), errors="coerce").to_numpy(dtype=np.float64)
        garbage = ~miss & np.isnan(num)
        if c not in cat_cols and garbage.any():
            # A numeric column with a few stray strings is an error, not a category.
            if explicit or garbage.sum() <= 0.5 * (~miss).sum():
                first = s[garbage].iloc[0]
                raise DataError(
                    f"{path}: column {c!r} has non-numeric value {first[:40]!r} in rows "
                    f"{_rows(garbage)}; add it to data.missing_values or data.categorical_columns"
                )
            cat_cols.add(c)
        kinds[c] = "categorical" if c in cat_cols else "numeric"
        missing[c] = miss
    return _Table(path, df, tgt.map(_canon).to_numpy(), sites, kinds, missing)


def _levels(t: _Table, c: str) -> list[str]:
    s = t.df[c].astype(str).str.strip().map(_canon)
    return _sorted_values(set(s[~t.missing[c]]))


def _sorted_values(values) -> list[str]:
    return sorted(values, key=lambda v: (0, float(v), v) if _isnum(v) else (1, 0.0, v))


def describe_csv(params: CSVParams, seed: int = 0) -> dict:
    """One hospital's schema (no record values): feature columns with their kind and, for
    categorical ones, the levels present; the target values present; the record count."""
    t = _read(params, site_column=False)
    return {"records": int(len(t.df)),
            "features": [{"name": c, "kind": k, "levels": _levels(t, c) if k == "categorical" else []}
                         for c, k in t.kinds.items()],
            "targets": _sorted_values(set(t.raw_target.tolist()))}


def agree_csv(params: CSVParams, schemas: list[tuple[str, dict]]) -> dict:
    """The encoding every hospital uses, from their schemas: the same feature columns
    (a hospital with a different column set is refused, naming it and the column), a
    column categorical at one hospital is categorical everywhere, categorical levels are
    the union over hospitals (a level present at only some hospitals still gets its
    one-hot column everywhere), classes from ``label_map`` or the union of target values.
    A column numeric at one hospital and categorical at another is refused (name it in
    ``data.categorical_columns``): numeric values are never sent to the server."""
    first_name, first = schemas[0]
    cols = [f["name"] for f in first["features"]]
    kinds = {f["name"]: f["kind"] for f in first["features"]}
    levels: dict[str, set] = {f["name"]: set(f["levels"]) for f in first["features"]}
    targets: set = set(first["targets"])
    for name, sch in schemas[1:]:
        theirs = [f["name"] for f in sch["features"]]
        extra = [c for c in theirs if c not in kinds]
        lacking = [c for c in cols if c not in theirs]
        if extra or lacking:
            what = f"has column {extra[0]!r} that {first_name} lacks" if extra else f"lacks column {lacking[0]!r}"
            raise DataError(f"hospital {name}: {what}; every hospital's file needs the same feature columns")
        for f in sch["features"]:
            if f["kind"] != kinds[f["name"]]:
                raise DataError(
                    f"hospital {name}: column {f['name']!r} is {f['kind']} there but {kinds[f['name']]} at "
                    f"{first_name}; list it in data.categorical_columns (or fix its values)")
            levels[f["name"]].update(f["levels"])
        targets.update(sch["targets"])
    if params.label_map is not None:
        lmap = {_canon(k): v for k, v in params.label_map.items()}
        for name, sch in schemas:
            bad = sorted(set(sch["targets"]) - set(lmap))
            if bad:
                raise DataError(f"{name}: target {params.target!r} values {bad} are not in data.label_map "
                                f"(keys {sorted(lmap)})")
        classes = {k: int(v) for k, v in lmap.items()}
    else:
        classes = {v: i for i, v in enumerate(_sorted_values(targets))}
    return {"features": [{"name": c, "kind": kinds[c], "levels": _sorted_values(levels[c])} for c in cols],
            "classes": classes}


def encode_csv(params: CSVParams, encoding: dict, site_column: bool = False) -> RawData:
    """One hospital's file as x float32 [N, F] (NaN where missing), y int64 [N] with the
    agreed ``encoding`` (its site column, if any, is ignored: the file is the hospital)."""
    return _encode(_read(params, site_column=site_column), params, encoding)


def _encode(t: _Table, params: CSVParams, encoding: dict) -> RawData:
    path = t.path
    classes = encoding["classes"]
    bad = sorted(set(t.raw_target.tolist()) - set(classes))
    if bad:
        raise DataError(f"{path}: target {params.target!r} values {bad} are not agreed classes {sorted(classes)}")
    y = np.array([classes[v] for v in t.raw_target], dtype=np.int64)
    if min(classes.values()) < 0:
        raise DataError(f"data.label_map: class indices must be >= 0, got {min(classes.values())}")
    num_classes = max(classes.values()) + 1
    if num_classes > MAX_CLASSES:
        raise DataError(f"data.label_map: class index {num_classes - 1} makes {num_classes} classes "
                        f"(at most {MAX_CLASSES})")
    names: list[str | None] = [None] * num_classes
    for k, v in classes.items():
        names[v] = k if names[v] is None else f"{names[v]}|{k}"
    class_names = [n if n is not None else str(i) for i, n in enumerate(names)]
    if num_classes < 2:
        raise DataError(f"{path}: target {params.target!r} has a single class {class_names}")
    blocks: list[np.ndarray] = []
    names_out: list[str] = []
    cat_mask: list[bool] = []
    n_missing = miss_cols = 0
    for f in encoding["features"]:
        c = f["name"]
        if c not in t.kinds:
            raise DataError(f"{path}: lacks column {c!r}; every hospital's file needs the same feature columns")
        s = t.df[c].astype(str).str.strip()
        miss = t.missing[c]
        n_missing += int(miss.sum())
        miss_cols += int(miss.any())
        if f["kind"] == "categorical":
            s = s.map(_canon)  # "1" and "1.0" are one category
            pos = {v: j for j, v in enumerate(f["levels"])}
            onehot = np.zeros((len(s), len(pos)), dtype=np.float32)
            for i, v in enumerate(s):
                if miss[i]:
                    onehot[i] = np.nan
                elif v in pos:
                    onehot[i, pos[v]] = 1.0
            blocks.append(onehot)
            names_out += [f"{c}={v}" for v in f["levels"]]
            cat_mask += [True] * len(pos)
        else:
            num = pd.to_numeric(s.where(~miss), errors="coerce").to_numpy(dtype=np.float64)
            blocks.append(num.astype(np.float32)[:, None])
            names_out.append(c)
            cat_mask.append(False)
    x = np.concatenate(blocks, axis=1).astype(np.float32)
    if not np.isfinite(x[~np.isnan(x)]).all():
        raise DataError(f"{path}: infinite or too large (beyond float32) values in the feature columns")
    notes = [f"{path.name}: {len(x)} rows, {x.shape[1]} features ({sum(cat_mask)} one-hot), "
             f"{num_classes} classes"]
    if n_missing:
        notes.append(
            f"{n_missing} missing values in {miss_cols} columns, left as NaN; imputed after the "
            "split from the hospitals' training statistics (federated mean; mode for one-hot)"
        )
    return RawData(x=x, y=y, modality="tabular", num_classes=num_classes, class_names=class_names,
                   feature_names=names_out, sites=t.sites, categorical=np.array(cat_mask, dtype=bool),
                   notes=tuple(notes))


@DATASETS.register("csv", CSVParams, modality="tabular", describe=describe_csv, agree=agree_csv,
                   encode=encode_csv)
def load_csv(params: CSVParams, seed: int) -> RawData:
    """One CSV file: x float32 [N, F] (NaN where missing), y int64 [N], sites str [N] or
    None, categorical bool [F] (the one-hot columns). Deterministic (``seed`` unused)."""
    t = _read(params)
    sch = {"records": len(t.df), "targets": _sorted_values(set(t.raw_target.tolist())),
           "features": [{"name": c, "kind": k, "levels": _levels(t, c) if k == "categorical" else []}
                        for c, k in t.kinds.items()]}
    return _encode(t, params, agree_csv(params, [(str(t.path), sch)]))


def _isnum(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ImputeStats:
    """fill: float32 [F], the value that replaces NaN in each column."""

    fill: np.ndarray


def impute_fit(x_train: np.ndarray, categorical: np.ndarray | None = None) -> ImputeStats:
    """Fill values from TRAINING rows only. x_train: [N, F] with NaN = missing;
    categorical: bool [F] (one-hot columns) or None = all numeric.

    fill_j = median of the observed x_train[:, j] (numeric) or their most frequent value
    (one-hot; ties -> the smaller, so usually 0). A column with no observed value -> 0."""
    x = np.asarray(x_train, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"impute_fit: x_train must be [N, F], got shape {x.shape}")
    cat = np.zeros(x.shape[1], bool) if categorical is None else np.asarray(categorical, bool)
    if cat.shape != (x.shape[1],):
        raise ValueError(f"impute_fit: categorical has shape {cat.shape}, expected ({x.shape[1]},)")
    fill = np.zeros(x.shape[1], dtype=np.float64)
    for j in range(x.shape[1]):
        col = x[:, j][~np.isnan(x[:, j])]
        if col.size == 0:
            continue
        if cat[j]:
            vals, counts = np.unique(col, return_counts=True)
            fill[j] = vals[np.argmax(counts)]  # np.unique sorts: ties -> smaller value
        else:
            fill[j] = np.median(col)
    return ImputeStats(fill=fill.astype(np.float32))


def impute_apply(x: np.ndarray, stats: ImputeStats) -> tuple[np.ndarray, int]:
    """x: [N, F] -> (copy with each NaN in column j replaced by stats.fill[j], number of
    cells replaced; a missing categorical value counts once per one-hot column)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != stats.fill.shape[0]:
        raise ValueError(f"impute_apply: x has shape {x.shape}, stats are for {stats.fill.shape[0]} columns")
    out = np.array(x, dtype=np.float32, copy=True)
    nan = np.isnan(out)
    out[nan] = np.broadcast_to(stats.fill, out.shape)[nan]
    return out, int(nan.sum())
