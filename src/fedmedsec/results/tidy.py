"""Tidy tables of a sweep (or of any set of run directories), one observation per row.

- ``results``: one row per run: ``run``, ``status``, ``error``, ``dropped_keys`` (the grid
  keys that do not apply to this point and were left out of its config), one column per
  resolved config key in dotted form (``attack.name``, ``experiment.seed``, fixed keys
  included) and the run's summary metrics (``clean_accuracy``, ``mia_auc``,
  ``clinical_auroc``, ``cost_seconds_per_round``, ...). Summary keys that repeat a config key
  (``attack``, ``seed``, ``rounds``, ...) are left out; per-hospital values go to
  ``hospitals``.
- ``rounds``: every row of every run's rounds.csv with its ``run``;
  ``dropped_replies`` is the number of replies the server refused in that round.
- ``hospitals``: one row per (run, hospital): ``partition_id``, ``hospital`` (name),
  ``malicious``, ``accuracy``, the clinical metrics, the membership-inference AUC (and TPR at
  1% FPR) on that hospital's records and, with evasion, ``robust_accuracy_eps_<eps>``.
- ``clients``: every row of every run's clients.csv with its ``run``.

The long tables also carry the grid's axes (same names as in
``results``), so ``rounds.groupby(["defense.name", "round"]).clean_accuracy.mean()`` needs no
join. Column types are fixed per column (``COLUMN_KINDS``; otherwise inferred from the
values): booleans are booleans, counts are nullable integers, an all-null column is float,
text is text, so a table has the same schema whichever runs it holds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

#: summary.json keys left out of ``results``: they repeat a config key or go to ``hospitals``
SUMMARY_SKIP = {
    "experiment", "rounds", "seed", "mode", "dataset", "attack", "defense", "privacy_mode",
    "num_hospitals", "versions", "hospital_names", "per_hospital_accuracy", "honest_hospital_accuracy",
    "per_hospital_clinical", "per_hospital_robust_accuracy",
}
#: nested summary keys left out (class-name dependent, or repeated elsewhere)
NESTED_SKIP = {"clinical.per_class", "membership_inference.per_hospital_auc",
               "membership_inference.per_hospital_tpr_at_1pct_fpr", "clean_twin.attack_success_rate",
               "evasion.rows", "evasion.per_hospital"}
PREFIX = {"membership_inference": "mia", "threat_model": "threat"}
#: summary keys that hold a dict (or null when the run has no such section)
SECTIONS = {"detection", "membership_inference", "threat_model", "clinical", "clean_twin", "detector", "cost",
            "evasion", "robust_accuracy", "clean_accuracy_evasion_rows", "robust_sensitivity",
            "targeted_evasion_success_rate", "evasion_detection_rate", "backdoor_lifespan"}

#: column -> kind ("float", "int", "bool", "str"); columns that exist in every results table
CORE = {
    "run": "str", "status": "str", "error": "str", "dropped_keys": "str",
    "clean_accuracy": "float", "test_loss": "float", "worst_hospital_accuracy": "float",
    "worst_honest_hospital_accuracy": "float", "attack_success_rate": "float",
    "attack_success_rate_clean": "float", "attack_success_lift": "float", "triggered_miss_rate": "float",
    "clinical_balanced_accuracy": "float", "clinical_auroc": "float", "clinical_sensitivity": "float",
    "clinical_specificity": "float", "epsilon": "float", "delta": "float", "mia_auc": "float",
    "detection_tpr": "float", "detection_fpr": "float", "dropped_replies": "int", "wall_seconds": "float",
    "warnings": "str", "warning_count": "int",
}
COLUMN_KINDS = {
    **CORE,
    "evaluated_on": "str", "epsilon_note": "str", "notes": "str", "malicious_hospitals": "str",
    "malicious_count": "int", "threat_goal": "str", "threat_adversary": "str", "threat_knowledge": "str",
    "threat_targeted": "bool", "mia_attack": "str", "mia_n": "int", "clinical_n": "int",
    "clinical_positive_class": "str", "detector_name": "str", "cost_parameters": "int",
    "cost_bytes_to_clients": "int", "cost_bytes_from_clients": "int",
    "detection_excluded_malicious": "int", "detection_excluded_honest": "int",
    "detection_malicious_decisions": "int", "detection_honest_decisions": "int",
    # rounds.csv / clients.csv / hospitals
    "round": "int", "replies": "int", "accepted": "int", "partition_id": "int", "hospital": "str",
    "malicious": "bool", "attacking": "bool", "reported_attacking": "bool", "problem": "str",
    "num_examples": "int", "n": "int", "positive_class": "str", "round_problem": "str",
}
#: in clients.csv ``accepted`` is a decision (bool), in rounds.csv a count
CLIENT_KINDS = {"accepted": "bool", "status": "str"}
ROUND_RENAME = {"dropped": "dropped_replies"}


# --------------------------------------------------------------------------- flattening


def _text(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else str(v)


def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Resolved config -> {dotted key: value}; lists become JSON text (``[32, 16]``)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = _text(list(v))
        else:
            out[key] = v
    return out


def flatten_summary(summary: dict) -> dict[str, Any]:
    """One flat row of summary.json: nested dicts become ``section_key`` (``detection_tpr``,
    ``mia_auc``, ``clinical_auroc``); lists become JSON text; keys that repeat the config or
    hold per-hospital values are left out (``SUMMARY_SKIP``)."""
    out: dict[str, Any] = {}

    def put(path: str, prefix: str, v: Any) -> None:
        if path in NESTED_SKIP:
            return
        if isinstance(v, dict):
            for k, x in v.items():
                put(f"{path}.{k}", f"{prefix}_{k}", x)
        elif isinstance(v, (list, tuple)):
            out[prefix] = _text(list(v))
        else:
            out[prefix] = v

    for k, v in summary.items():
        if k in SUMMARY_SKIP or k in ("warnings", "notes"):
            continue
        if v is None and k in SECTIONS:
            continue  # a section this run does not have (no detection, no MIA, ...)
        put(k, PREFIX.get(k, k), v)
    if "warnings" in summary:
        w = [str(x) for x in summary.get("warnings") or []]
        out["warnings"], out["warning_count"] = " | ".join(w), len(w)
    if "notes" in summary:
        out["notes"] = " | ".join(str(x) for x in summary.get("notes") or [])
    if isinstance(summary.get("malicious_hospitals"), list):
        out["malicious_count"] = len(summary["malicious_hospitals"])
    return out


def hospital_rows(run: str, summary: dict) -> list[dict[str, Any]]:
    """The per-hospital values of one summary.json, one row per hospital."""
    names = summary.get("hospital_names") or {}
    acc = summary.get("per_hospital_accuracy") or {}
    clin = summary.get("per_hospital_clinical") or {}
    mia_all = summary.get("membership_inference") or {}
    mia = mia_all.get("per_hospital_auc") or {}
    mia_tpr = mia_all.get("per_hospital_tpr_at_1pct_fpr") or {}
    robust = summary.get("per_hospital_robust_accuracy") or {}
    mal = {str(h) for h in summary.get("malicious_hospitals") or []}
    ids = sorted({*names, *acc, *clin, *mia, *robust},
                 key=lambda h: (not str(h).isdigit(), int(h) if str(h).isdigit() else 0, str(h)))
    rows = []
    for h in ids:
        c = clin.get(h) or {}
        row = {"run": run, "partition_id": int(h) if str(h).isdigit() else None, "hospital": names.get(h, str(h)),
               "malicious": h in mal, "accuracy": acc.get(h)}
        for k in ("n", "balanced_accuracy", "auroc", "sensitivity", "specificity", "ppv", "npv", "positive_class"):
            row[k] = c.get(k)
        row["mia_auc"] = mia.get(h)
        if mia_tpr:
            row["mia_tpr_at_1pct_fpr"] = mia_tpr.get(h)
        for eps, v in sorted((robust.get(h) or {}).items()):  # evasion: worst-case robust accuracy per eps
            row[f"robust_accuracy_eps_{eps}"] = v
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- types


def _kind_of(values: pd.Series) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
            and v is not pd.NA]
    if not vals:
        return "float"
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "float"
    return "str"


def _is_null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _as(series: pd.Series, kind: str) -> pd.Series:
    if kind == "float":
        return pd.to_numeric(series.map(lambda v: None if _is_null(v) or isinstance(v, str) and not v else v),
                             errors="coerce").astype("float64")
    if kind == "int":
        num = pd.to_numeric(series.map(lambda v: None if _is_null(v) or v == "" else v), errors="coerce")
        if num.notna().any() and not (num.dropna() % 1 == 0).all():
            return num.astype("float64")  # not counts after all: keep the values
        return num.astype("Int64")
    if kind == "bool":
        def b(v):
            if _is_null(v) or v == "":
                return pd.NA
            if isinstance(v, str):
                return v.strip().lower() in ("1", "true", "yes")
            return bool(v)
        return series.map(b).astype("boolean")
    return series.map(lambda v: pd.NA if _is_null(v) else _text(v) if isinstance(v, (list, dict)) else str(v)
                      ).astype("string")


def typed(df: pd.DataFrame, kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """``df`` with one fixed type per column (``COLUMN_KINDS``, then ``kinds``, then the values)."""
    known = {**COLUMN_KINDS, **(kinds or {})}
    cols = {c: _as(df[c].astype(object), known.get(c) or _kind_of(df[c].astype(object))) for c in df.columns}
    return pd.DataFrame(cols, index=df.index)  # built at once: no fragmented frame


def results_frame(rows: list[dict[str, Any]], config_keys: list[str] | None = None) -> pd.DataFrame:
    """``results`` from one dict per run (run, status, error, dropped_keys, config keys,
    metrics): core columns always present, config keys in order, then metrics."""
    df = pd.DataFrame(rows)
    for c in CORE:
        if c not in df:
            df[c] = None
    cfg = config_keys if config_keys is not None else sorted({k for r in rows for k in r if "." in k})
    head = ["run", "status", "error", "dropped_keys"]
    rest = [c for c in df.columns if c not in head and c not in cfg]
    # kinds from the values as given (a DataFrame turns ints with gaps into floats)
    kinds = {c: _kind_of(pd.Series([r[c] for r in rows if c in r], dtype=object))
             for c in df.columns if c not in COLUMN_KINDS}
    return typed(df[head + [c for c in cfg if c in df] + rest], kinds)


def varying_keys(results: pd.DataFrame) -> list[str]:
    """Dotted config columns whose value differs between the runs (null counts as a value)."""
    out = []
    for c in results.columns:
        if "." not in c:
            continue
        vals = results[c].astype(object).map(lambda v: "\0null" if _is_null(v) else v)
        if vals.nunique() > 1:
            out.append(c)
    return out


def long_frame(parts: list[pd.DataFrame], results: pd.DataFrame, keys: list[str] | None = None,
               kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """Concatenate per-run frames (each with a ``run`` column) and add, by run, the config
    columns ``keys`` of ``results`` (default: every varying one)."""
    parts = [p for p in parts if p is not None and not p.empty]
    if not parts:
        return pd.DataFrame({"run": pd.Series(dtype="string")})
    # rename per part: runs written before a column was renamed (rounds.csv "dropped") mix with
    # newer ones ("dropped_replies"); renaming after the concat would duplicate the column
    df = pd.concat([p.astype(object).rename(columns=ROUND_RENAME) for p in parts], ignore_index=True)
    if keys is None:
        keys = varying_keys(results) if not results.empty else []
    keys = [k for k in keys if k in results and k not in df]
    if keys:
        df = df.merge(results[["run", *keys]].astype(object), on="run", how="left")
        df = df[["run", *keys, *[c for c in df.columns if c not in keys and c != "run"]]]
    else:
        df = df[["run", *[c for c in df.columns if c != "run"]]]
    return typed(df, {**{k: _kind_of(results[k].astype(object)) for k in keys}, **(kinds or {})})


def write_table(df: pd.DataFrame, out: Path, stem: str) -> None:
    """``out/stem.csv`` (atomic) and ``out/stem.parquet`` (when pyarrow is installed)."""
    tmp = out / f"{stem}.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(out / f"{stem}.csv")
    try:
        tmp = out / f"{stem}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        tmp.replace(out / f"{stem}.parquet")
    except ImportError:  # pyarrow missing: the CSV is the table
        pass


def read_run_csv(path: Path) -> pd.DataFrame | None:
    """A run's rounds.csv / clients.csv, or None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, UnicodeDecodeError):
        return None
