"""Local PhysioNet ECG datasets read with wfdb: PTB-XL (records) and MIT-BIH (beats).

ptbxl (Wagner et al., Scientific Data 2020): ``ptbxl_database.csv`` (ecg_id, scp_codes as a
dict string, strat_fold, filename_lr/filename_hr) and ``scp_statements.csv`` (index = SCP code,
columns diagnostic, diagnostic_class). The label is the diagnostic superclass NORM, MI, STTC,
CD, HYP of the record's SCP codes (the aggregation of the PTB-XL example code). Policy
``single`` keeps records with exactly one superclass; ``max_likelihood`` takes the superclass
of the code with the highest likelihood. ``strat_fold == test_fold`` (10, the recommended split)
is the official test set.

mitbih (Moody & Mark 2001): records from ``records`` or the ``RECORDS`` file; one example per
annotated beat, a window of ``beat_window`` samples around the annotation sample, labelled
with the AAMI EC57 class of its symbol (as in de Chazal et al., IEEE TBME 2004):
N = {N, L, R, e, j}, S = {A, a, J, S}, V = {V, E}, F = {F}, Q = {/, f, Q}; other annotations
(rhythm, noise, non-beat) are skipped. ``test_records`` go to the official test split
(e.g. de Chazal's DS2 for the inter-patient protocol). ``sites`` = record (one patient each).

x: float32 [N, leads, T]; ``normalize = "record"`` standardises each example and lead to
mean 0, std 1 (the ECG trigger amplitude is in these units), ``"none"`` keeps physical units.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..registry import Params
from .base import DATASETS, DataError, RawData

PTBXL_CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
AAMI_CLASSES = ["N", "S", "V", "F", "Q"]
AAMI = {
    **dict.fromkeys(["N", "L", "R", "e", "j"], 0),
    **dict.fromkeys(["A", "a", "J", "S"], 1),
    **dict.fromkeys(["V", "E"], 2),
    "F": 3,
    **dict.fromkeys(["/", "f", "Q"], 4),
}
_PTBXL_ONLY = ("label_policy", "min_likelihood", "sampling", "test_fold", "site_column", "max_records")
_MITBIH_ONLY = ("records", "test_records", "beat_window", "beat_before", "annotation")


class ECGWFDBParams(Params):
    path: str = Field(description="dataset folder (never downloaded)")
    format: Literal["ptbxl", "mitbih"]
    leads: list[str] | None = Field(None, min_length=1, description="lead names; None = all")
    normalize: Literal["record", "none"] = "record"
    # ptbxl
    label_policy: Literal["single", "max_likelihood"] = "single"
    min_likelihood: float = Field(0.0, ge=0.0, le=100.0, description="ignore SCP codes below")
    sampling: Literal["lr", "hr"] = Field("lr", description="lr = 100 Hz, hr = 500 Hz files")
    test_fold: int | None = Field(10, ge=1, le=10, description="strat_fold used as test set")
    site_column: str | None = Field(None, description='e.g. "site" for natural partitions')
    max_records: int | None = Field(None, ge=1, description="first N usable records by ecg_id")
    # mitbih
    records: list[str] | None = Field(None, min_length=1, description="None = RECORDS file")
    test_records: list[str] | None = Field(None, description="records of the official test split")
    beat_window: int = Field(256, ge=8, description="samples per beat example")
    beat_before: int | None = Field(None, ge=0, description="samples before the beat; None = half")
    annotation: str = Field("atr", min_length=1, description="annotation file extension")

    @model_validator(mode="after")
    def _format_keys(self) -> ECGWFDBParams:
        other = _MITBIH_ONLY if self.format == "ptbxl" else _PTBXL_ONLY
        wrong = sorted(set(other) & self.model_fields_set)
        if wrong:
            raise ValueError(
                f"data.{wrong[0]}: not a key of data.format = {self.format!r}"
            )
        if self.beat_before is not None and self.beat_before >= self.beat_window:
            raise ValueError(
                f"data.beat_before = {self.beat_before}: must be < data.beat_window = {self.beat_window}"
            )
        return self


def _rdsamp(rec: Path) -> tuple[np.ndarray, dict]:
    import wfdb  # imported only for this loader

    if not rec.with_suffix(".hea").is_file():
        raise DataError(f"{rec}.hea: no such WFDB record header")
    try:
        sig, fields = wfdb.rdsamp(str(rec))
    except Exception as exc:
        raise DataError(f"{rec}: unreadable WFDB record ({type(exc).__name__}: {exc})") from None
    return np.asarray(sig, dtype=np.float64), fields


def _lead_index(names: list[str], wanted: list[str] | None, rec: Path) -> list[int]:
    if wanted is None:
        return list(range(len(names)))
    low = [n.lower() for n in names]
    missing = [w for w in wanted if w.lower() not in low]
    if missing:
        raise DataError(f"{rec}: no leads {missing} (data.leads); the record has {names}")
    return [low.index(w.lower()) for w in wanted]


def _normalize(x: np.ndarray, how: str) -> tuple[np.ndarray, int]:
    """x [N, leads, T] -> (float32, number of NaN samples set to 0)."""
    nan = np.isnan(x)
    n_nan = int(nan.sum())
    if n_nan:
        x = np.where(nan, np.nanmean(x, axis=-1, keepdims=True), x)
        x = np.nan_to_num(x)
    if how == "record":
        x = (x - x.mean(-1, keepdims=True)) / np.maximum(x.std(-1, keepdims=True), 1e-8)
    return x.astype(np.float32), n_nan


def _canon(v) -> str:
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if np.isfinite(f) and f == int(f) else s


def _load_ptbxl(p: ECGWFDBParams, root: Path) -> RawData:
    import pandas as pd

    db_path, st_path = root / "ptbxl_database.csv", root / "scp_statements.csv"
    for f in (db_path, st_path):
        if not f.is_file():
            raise DataError(f"{f}: missing (data.format = 'ptbxl' needs it in data.path)")
    db = pd.read_csv(db_path)
    st = pd.read_csv(st_path, index_col=0)
    fname = "filename_lr" if p.sampling == "lr" else "filename_hr"
    need = ["ecg_id", "scp_codes", "strat_fold", fname] + ([p.site_column] if p.site_column else [])
    missing = [c for c in need if c not in db.columns]
    if missing:
        raise DataError(f"{db_path}: missing columns {missing}")
    if "diagnostic_class" not in st.columns:
        raise DataError(f"{st_path}: missing column 'diagnostic_class'")
    diag = st["diagnostic"] == 1 if "diagnostic" in st.columns else st["diagnostic_class"].notna()
    code_class = {str(k): str(v) for k, v in st.loc[diag, "diagnostic_class"].items() if str(v) in PTBXL_CLASSES}
    db = db.sort_values("ecg_id")
    labels, keep, dropped = [], [], 0
    for i, (eid, codes) in enumerate(zip(db["ecg_id"], db["scp_codes"])):
        try:
            d = ast.literal_eval(str(codes))
            if not isinstance(d, dict):
                raise ValueError
        except (ValueError, SyntaxError):
            raise DataError(f"{db_path}: ecg_id {eid}: scp_codes {codes!r} is not a dict") from None
        cand = [(float(lik), code_class[c]) for c, lik in d.items()
                if c in code_class and float(lik) >= p.min_likelihood]
        classes = {c for _, c in cand}
        if p.label_policy == "single":
            ok = len(classes) == 1
            lab = classes.pop() if ok else None
        else:
            ok = bool(cand)
            lab = min(cand, key=lambda t: (-t[0], PTBXL_CLASSES.index(t[1])))[1] if ok else None
        if not ok:
            dropped += 1
            continue
        labels.append(PTBXL_CLASSES.index(lab))
        keep.append(i)
        if p.max_records is not None and len(keep) >= p.max_records:
            break
    if not keep:
        raise DataError(f"{db_path}: no record has a usable diagnostic superclass label")
    sub = db.iloc[keep]
    xs, names, fs0, t0 = [], p.leads, None, None
    for fn in sub[fname]:
        rec = root / str(fn)
        sig, fields = _rdsamp(rec)
        if names is None:
            names = list(fields["sig_name"])
        if fs0 is None:
            fs0, t0 = fields["fs"], sig.shape[0]
        if sig.shape[0] != t0 or fields["fs"] != fs0:
            raise DataError(
                f"{rec}: {sig.shape[0]} samples at {fields['fs']} Hz; the first record has {t0} at {fs0} Hz"
            )
        idx = _lead_index(list(fields["sig_name"]), names, rec)
        if not xs:
            lead_names = [str(fields["sig_name"][j]) for j in idx]
        xs.append(sig[:, idx].T)
    x, n_nan = _normalize(np.stack(xs), p.normalize)
    y = np.array(labels, dtype=np.int64)
    folds = sub["strat_fold"].to_numpy()
    sites = None
    if p.site_column:
        sv = sub[p.site_column]
        empty = sv.isna().to_numpy() | (sv.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            bad = sub["ecg_id"].to_numpy()[empty][:5].tolist()
            raise DataError(f"{db_path}: column {p.site_column!r} is empty for ecg_id {bad}")
        sites = np.array([_canon(v) for v in sv], dtype=str)
    test = folds == p.test_fold if p.test_fold is not None else np.zeros(len(y), bool)
    if p.test_fold is not None and test.all():
        raise DataError(f"{db_path}: every usable record is in strat_fold {p.test_fold} (data.test_fold)")
    notes = [f"PTB-XL: {len(y)} records ({int(test.sum())} in test fold), {x.shape[1]} leads, "
             f"{x.shape[2]} samples at {fs0} Hz; {dropped} records dropped by label_policy = "
             f"{p.label_policy!r}"]
    if n_nan:
        notes.append(f"{n_nan} invalid (NaN) samples replaced by the lead mean")
    return RawData(
        x=x[~test], y=y[~test], modality="ecg", num_classes=len(PTBXL_CLASSES),
        class_names=list(PTBXL_CLASSES), feature_names=lead_names,
        x_test=x[test] if test.any() else None, y_test=y[test] if test.any() else None,
        sites=None if sites is None else sites[~test],
        test_sites=None if sites is None or not test.any() else sites[test],
        notes=tuple(notes),
    )


def _load_mitbih(p: ECGWFDBParams, root: Path) -> RawData:
    import wfdb

    if p.records is not None:
        records = list(p.records)
    else:
        rf = root / "RECORDS"
        if not rf.is_file():
            raise DataError(f"{rf}: missing; list the records in data.records or add a RECORDS file")
        records = [r.strip() for r in rf.read_text().split() if r.strip()]
    test_set = set(p.test_records or [])
    unknown = sorted(test_set - set(records))
    if unknown:
        raise DataError(f"data.test_records {unknown} are not among the records {records}")
    w = p.beat_window
    before = w // 2 if p.beat_before is None else p.beat_before
    xs, ys, rs, names, fs0 = [], [], [], p.leads, None
    skipped = 0
    for r in records:
        rec = root / r
        sig, fields = _rdsamp(rec)
        if names is None:
            names = list(fields["sig_name"])
        if fs0 is None:
            fs0 = fields["fs"]
        elif fields["fs"] != fs0:
            raise DataError(f"{rec}: sampled at {fields['fs']} Hz; the first record at {fs0} Hz")
        idx = _lead_index(list(fields["sig_name"]), names, rec)
        if not xs:
            lead_names = [str(fields["sig_name"][j]) for j in idx]
        sig = sig[:, idx]
        if not rec.with_suffix(f".{p.annotation}").is_file():
            raise DataError(f"{rec}.{p.annotation}: no such annotation file (data.annotation)")
        try:
            ann = wfdb.rdann(str(rec), p.annotation)
        except Exception as exc:
            raise DataError(f"{rec}.{p.annotation}: unreadable ({type(exc).__name__}: {exc})") from None
        n = 0
        for s, sym in zip(ann.sample, ann.symbol):
            if sym not in AAMI:
                continue
            lo = int(s) - before
            if lo < 0 or lo + w > sig.shape[0]:
                skipped += 1
                continue
            xs.append(sig[lo:lo + w].T)
            ys.append(AAMI[sym])
            rs.append(r)
            n += 1
        if n == 0:
            raise DataError(f"{rec}.{p.annotation}: no beat annotations with an AAMI class")
    x, n_nan = _normalize(np.stack(xs), p.normalize)
    y = np.array(ys, dtype=np.int64)
    sites = np.array(rs, dtype=str)
    test = np.isin(sites, list(test_set))
    if test.all():
        raise DataError("data.test_records: every record is a test record; none left to train on")
    counts = np.bincount(y, minlength=len(AAMI_CLASSES))
    notes = [f"MIT-BIH: {len(y)} beats from {len(records)} records ({int(test.sum())} test), "
             f"{w} samples at {fs0} Hz, AAMI counts " +
             ", ".join(f"{c}={k}" for c, k in zip(AAMI_CLASSES, counts))]
    if skipped:
        notes.append(f"{skipped} beats too close to a record's edge skipped")
    if n_nan:
        notes.append(f"{n_nan} invalid (NaN) samples replaced by the lead mean")
    return RawData(
        x=x[~test], y=y[~test], modality="ecg", num_classes=len(AAMI_CLASSES),
        class_names=list(AAMI_CLASSES), feature_names=lead_names,
        x_test=x[test] if test.any() else None, y_test=y[test] if test.any() else None,
        sites=sites[~test], test_sites=sites[test] if test.any() else None,
        notes=tuple(notes),
    )


@DATASETS.register("ecg_wfdb", ECGWFDBParams, modality="ecg")
def load_ecg_wfdb(params: ECGWFDBParams, seed: int) -> RawData:
    """PTB-XL records or MIT-BIH beats as x float32 [N, leads, T], y int64 [N].
    Deterministic (``seed`` unused)."""
    root = Path(params.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder (data.path)")
    if params.format == "ptbxl":
        return _load_ptbxl(params, root)
    return _load_mitbih(params, root)
