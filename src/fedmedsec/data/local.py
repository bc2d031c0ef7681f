"""Hospital-local data: each hospital holds one file of its own records, the server none.

The same protocol runs in a simulation with one file per hospital (FLamby-style per-centre
files, all in this process) and in a deployment (one file per SuperNode, the server never
opening a data file), so both give the same numbers:

1. each hospital describes its file (``describe``): a schema without record values, e.g.
   the CSV's feature columns, their kind and categorical levels, the target values, the
   record count; an image file's shape and labels;
2. the server checks that the schemas agree and fixes one encoding (``agree``): the same
   feature columns (one-line error naming the hospital and the column otherwise), the
   union of categorical levels and classes, so every hospital builds the same model input;
3. each hospital encodes its records, splits them into train and test with its own
   stream (``open_hospital``: ``local_test_fraction``, stratified; a file's official test
   split is that hospital's test set) and sends the sufficient statistics of its training
   rows (``preprocess.column_stats``: counts, sums, sums of squares, min, max);
4. the server combines them into one preprocessing (``preprocessing``; or each hospital
   its own, ``data.preprocess = "local"``), which every hospital applies (``finish``).

Hospitals are ordered by file name; a hospital's partition id is its index in that order
and its name is the file stem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..streams import Stream, rng
from . import preprocess
from .base import DATASETS, DataError, RawData

SUFFIXES = {"csv": (".csv",), "medmnist": (".npz",)}


def hospital_files(cfg) -> list[Path] | None:
    """The per-hospital files of ``data.path`` (a list, or a directory), sorted by name;
    None when the data is one pooled file (or no file)."""
    params = cfg.params("data")
    path = getattr(params, "path", None)
    if path is None:
        return None
    if isinstance(path, (list, tuple)):
        files = [Path(p).expanduser() for p in path]
        if not files:
            raise DataError("data.path = []: give one file per hospital")
    else:
        p = Path(path).expanduser()
        if not p.is_dir():
            return None
        suffixes = SUFFIXES.get(cfg.data.name, ())
        files = sorted(f for f in p.iterdir() if f.is_file() and (not suffixes or f.suffix in suffixes))
        if not files:
            raise DataError(f"data.path = {str(p)[:200]!r}: a directory without {'/'.join(suffixes) or 'data'} files")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"data.path: two hospital files are named {dup!r} (the file stem names the hospital)")
    return sorted(files, key=lambda f: f.stem)


def params_for(cfg, path: str | Path):
    """The dataset's parameters with ``path`` = one hospital's file."""
    return cfg.params("data").model_copy(update={"path": str(path)})


# --------------------------------------------------------------------------- 1. describe

def describe(cfg, path: str | Path) -> dict[str, Any]:
    """A hospital's schema of its file (no record values)."""
    entry = DATASETS.get(cfg.data.name)
    p = params_for(cfg, path)
    if "describe" in entry.meta:
        schema = entry.meta["describe"](p)
        records = schema["records"]
    else:
        raw = entry.obj(p, cfg.experiment.seed)
        labels = np.concatenate([raw.y] + ([raw.y_test] if raw.y_test is not None else []))
        schema = {"modality": raw.modality, "input_shape": list(raw.input_shape),
                  "num_classes": int(raw.num_classes), "labels": sorted(set(labels.tolist())),
                  "class_names": raw.class_names}
        records = int(len(raw.y))
    return {"name": Path(path).stem, "records": int(records), "schema": schema}


# --------------------------------------------------------------------------- 2. agree

def agree(cfg, described: list[dict[str, Any]]) -> dict[str, Any]:
    """The encoding every hospital uses (module docstring, step 2)."""
    entry = DATASETS.get(cfg.data.name)
    schemas = [(d["name"], d["schema"]) for d in described]
    if "agree" in entry.meta:
        loader = entry.meta["agree"](cfg.params("data"), schemas)
    else:
        first_name, first = schemas[0]
        for name, s in schemas[1:]:
            for key in ("modality", "input_shape"):
                if s[key] != first[key]:
                    raise DataError(f"hospital {name}: {key} {s[key]} differs from {first[key]} at {first_name}")
        num = max([s["num_classes"] for _, s in schemas] + [max(s["labels"], default=0) + 1 for _, s in schemas])
        loader = {"num_classes": int(num), "class_names": first.get("class_names")}
    return {"dataset": cfg.data.name, "loader": loader, "hospitals": [d["name"] for d in described],
            "records": [d["records"] for d in described]}


def encode(cfg, path: str | Path, encoding: dict[str, Any]) -> RawData:
    """One hospital's records with the agreed encoding."""
    entry = DATASETS.get(cfg.data.name)
    p = params_for(cfg, path)
    if "encode" in entry.meta:
        return entry.meta["encode"](p, encoding["loader"])
    raw = entry.obj(p, cfg.experiment.seed)
    num = int(encoding["loader"]["num_classes"])
    top = max(int(raw.y.max(initial=0)), int(raw.y_test.max(initial=0)) if raw.y_test is not None else 0)
    if top >= num:
        raise DataError(f"{Path(path).name}: label {top} is not an agreed class (0..{num - 1})")
    raw.num_classes = num
    if encoding["loader"].get("class_names"):
        raw.class_names = list(encoding["loader"]["class_names"])
    return raw


# --------------------------------------------------------------------------- 3. open

@dataclass
class LocalHospital:
    """One hospital's encoded records split into train and test (not yet preprocessed)."""

    id: int
    name: str
    raw: RawData
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def stats(self) -> preprocess.Stats:
        return preprocess.column_stats(self.x_train)


def open_hospital(cfg, path: str | Path, encoding: dict[str, Any], partition_id: int) -> LocalHospital:
    """Encode the file and split it: the file's official test split when it has one, else
    ``data.local_test_fraction`` of each class held out with the hospital's own stream."""
    from .pipeline import _stratified_split

    raw = encode(cfg, path, encoding)
    if raw.x.ndim < 2 or len(raw.x) != len(raw.y):
        raise DataError(f"{Path(path).name}: loader returned x {raw.x.shape} and y {raw.y.shape}")
    y = raw.y.astype(np.int64)
    if raw.x_test is not None:
        x_tr, y_tr, x_te, y_te = raw.x, y, raw.x_test, raw.y_test.astype(np.int64)
    else:
        tr, te = _stratified_split(y, cfg.data.local_test_fraction,
                                   rng(cfg.experiment.seed, Stream.DATA_SPLIT, partition_id))
        x_tr, y_tr, x_te, y_te = raw.x[tr], y[tr], raw.x[te], y[te]
    if len(y_tr) < cfg.data.min_records:
        raise DataError(f"hospital {Path(path).stem}: {len(y_tr)} training records, fewer than "
                        f"data.min_records = {cfg.data.min_records}")
    return LocalHospital(partition_id, Path(path).stem, raw, x_tr, y_tr, x_te, y_te)


# --------------------------------------------------------------------------- 4. combine

def preprocessing(cfg, stats: list[preprocess.Stats], modality: str,
                  categorical: np.ndarray | None) -> dict[str, Any]:
    """The preprocessing the server sends back: one fitted on the combined statistics
    (``data.preprocess = "federated"``), or one per hospital on its own (``"local"``);
    the combined one always gives the federation's feature range (low / high)."""
    combined = preprocess.fit(preprocess.combine(stats), modality, categorical)
    out: dict[str, Any] = {"mode": cfg.data.preprocess, "combined": combined.to_dict()}
    if cfg.data.preprocess == "local":
        out["per_hospital"] = [preprocess.fit(s, modality, categorical).to_dict() for s in stats]
    return out


def preprocessor_for(prep: dict[str, Any], partition_id: int) -> preprocess.Preprocessor:
    if prep["mode"] == "local":
        return preprocess.Preprocessor.from_dict(prep["per_hospital"][partition_id])
    return preprocess.Preprocessor.from_dict(prep["combined"])


def finish(local: LocalHospital, prep: dict[str, Any]):
    """The hospital's HospitalData, preprocessed as agreed."""
    from .pipeline import HospitalData

    p = preprocessor_for(prep, local.id)
    x_tr, _ = p.apply(local.x_train)
    x_te, _ = p.apply(local.x_test) if len(local.x_test) else (local.x_test.astype(np.float32), 0)
    return HospitalData(id=local.id, name=local.name, x_train=x_tr, y_train=local.y_train,
                        x_test=x_te, y_test=local.y_test)


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (cache keys for encodings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
