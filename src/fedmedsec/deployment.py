"""A real federation's data model, without Flower: each hospital's node holds only its own
file; the server holds none (or a public test file, ``data.server_test``).

Before round 1 the server runs the ``data.local`` protocol over the network: every node
describes its file (``node_schema``), the server agrees on an encoding
(``agree_encoding``), every node returns the sufficient statistics of its training rows
(``node_statistics``), the server combines them (``data_spec``). The resulting spec (the
encoding, the preprocessing, the number and names of the hospitals, the class counts) goes
with every train and evaluate message, so a node builds the same model input without any
other hospital's records (``node_setup``), and the server builds a data-free view of the
federation (``server_setup``): the model's shape, the hospitals' names, no records.

What leaves a hospital: its schema (column names and kinds, categorical levels, target
values, record count), per-feature counts / sums / sums of squares / min / max of its
training rows, model updates, evaluation counts and membership-inference scores. Never a
record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .config import Config, ConfigError
from .data import DATASETS
from .data import local as localdata
from .data.base import DataError
from .data.pipeline import FederatedData, HospitalData, carve_root, positive_label, root_set_size
from .data.preprocess import Preprocessor, Stats
from .experiment import Setup, setup_from_data


def reads_files(cfg: Config) -> bool:
    """Does the dataset read a data file (then every node opens only its own)? Embedded or
    generated datasets (wdbc, ecg_synthetic) are built identically by every process."""
    return "path" in DATASETS.get(cfg.data.name).params.model_fields


def check_deployment(cfg: Config) -> None:
    """What a deployment cannot do, as one-line errors."""
    if cfg.data.num_hospitals is None:
        raise ConfigError("data.num_hospitals: a deployment needs the number of hospitals (one "
                          "SuperNode each, partition-id 0..n-1)", key="data.num_hospitals")


# --------------------------------------------------------------------------- node side

def node_schema(cfg: Config, data_path: str) -> dict[str, Any]:
    """Step 1 at a hospital: the schema of its own file (no record values)."""
    return localdata.describe(cfg, data_path)


def node_statistics(cfg: Config, data_path: str, encoding: dict, partition_id: int) -> dict[str, Any]:
    """Step 3 at a hospital: its local split's training statistics and what the server needs
    to build the model (shape, classes, the one-hot mask)."""
    h = localdata.open_hospital(cfg, data_path, encoding, partition_id)
    raw = h.raw
    return {"stats": h.stats.to_dict(), "modality": raw.modality, "input_shape": list(raw.input_shape),
            "num_classes": int(raw.num_classes), "class_names": raw.class_names,
            "feature_names": raw.feature_names,
            "categorical": None if raw.categorical is None else [bool(c) for c in raw.categorical],
            "class_counts": np.bincount(h.y_train, minlength=raw.num_classes).tolist(),
            "train_records": int(len(h.y_train)), "test_records": int(len(h.y_test))}


_NODES: dict[str, Setup] = {}


def node_setup(cfg: Config, spec: dict[str, Any], data_path: str, partition_id: int) -> Setup:
    """A hospital's Setup: its own records (encoded, split and preprocessed as agreed) at
    ``partition_id`` and empty stand-ins for the other hospitals. Cached per process."""
    key = hashlib.sha256(json.dumps([cfg.to_dict(), spec, data_path, partition_id], sort_keys=True,
                                    default=str).encode()).hexdigest()
    if key not in _NODES:
        if len(_NODES) >= 4:
            _NODES.pop(next(iter(_NODES)))
        h = localdata.open_hospital(cfg, data_path, spec["encoding"], partition_id)
        own = localdata.finish(h, spec["preprocessing"])
        data = _federation(cfg, spec, {partition_id: own})
        _NODES[key] = setup_from_data(cfg, data, collude_locally=True)
    return _NODES[key]


# --------------------------------------------------------------------------- server side

def agree_encoding(cfg: Config, schemas: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Step 2 at the server: one encoding from the nodes' schemas, in partition-id order."""
    return localdata.agree(cfg, [schemas[p] for p in sorted(schemas)])


def data_spec(cfg: Config, encoding: dict, replies: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Step 4 at the server: the spec every message carries (module docstring)."""
    first = replies[min(replies)]
    for pid, r in replies.items():
        for key in ("modality", "input_shape", "num_classes", "feature_names"):
            if r[key] != first[key]:
                raise DataError(f"hospital {pid}: {key} {r[key]!r} differs from hospital {min(replies)}'s")
    stats = [Stats.from_dict(replies[p]["stats"]) for p in sorted(replies)]
    cat = np.asarray(first["categorical"], bool) if first["categorical"] is not None else None
    prep = localdata.preprocessing(cfg, stats, first["modality"], cat)
    if cfg.data.preprocess == "local":  # a hospital's own preprocessor, indexed by partition id
        by_pid = dict(zip(sorted(replies), prep["per_hospital"]))
        prep["per_hospital"] = [by_pid.get(p) for p in range(max(replies) + 1)]
    return {
        "encoding": encoding, "preprocessing": prep,
        "hospitals": {str(p): s for p, s in zip(sorted(replies), encoding["hospitals"])},
        "modality": first["modality"], "input_shape": first["input_shape"],
        "num_classes": first["num_classes"], "class_names": first["class_names"],
        "feature_names": first["feature_names"],
        "class_counts": np.sum([replies[p]["class_counts"] for p in replies], axis=0).tolist(),
    }


def server_setup(cfg: Config, spec: dict[str, Any]) -> Setup:
    """The server's data-free Setup: no hospital records; a test set only when the
    coordinator holds public data (``data.server_test``)."""
    return setup_from_data(cfg, _federation(cfg, spec, {}), collude_locally=True)


def _federation(cfg: Config, spec: dict[str, Any], own: dict[int, HospitalData]) -> FederatedData:
    n = int(cfg.data.num_hospitals)
    shape = tuple(spec["input_shape"])
    empty_x = np.zeros((0,) + shape, np.float32)
    empty_y = np.zeros(0, np.int64)
    names = spec["hospitals"]
    hospitals = [own.get(p) or HospitalData(p, names.get(str(p), f"hospital-{p}"), empty_x, empty_y,
                                            empty_x, empty_y) for p in range(n)]
    combined = Preprocessor.from_dict(spec["preprocessing"]["combined"])
    x_test, y_test = empty_x, empty_y
    root_x = root_y = None
    if cfg.data.server_test is not None and not own:
        raw = localdata.encode(cfg, cfg.data.server_test, spec["encoding"])
        xs = [raw.x] + ([raw.x_test] if raw.x_test is not None else [])
        ys = [raw.y] + ([raw.y_test] if raw.y_test is not None else [])
        x_test, y_test = combined.apply(np.concatenate(xs))[0], np.concatenate(ys).astype(np.int64)
        root_size = root_set_size(cfg)
        if root_size:
            root_x, root_y, x_test, y_test = carve_root(cfg, x_test, y_test, root_size)

    class _Names:  # positive_label() reads class names and the number of classes
        class_names = spec["class_names"]
        num_classes = spec["num_classes"]

    return FederatedData(
        hospitals=hospitals, x_test=x_test, y_test=y_test, num_classes=int(spec["num_classes"]),
        root_x=root_x, root_y=root_y,
        modality=spec["modality"], input_shape=shape,
        feature_low=combined.low.astype(np.float32).reshape(shape),
        feature_high=combined.high.astype(np.float32).reshape(shape),
        class_names=spec["class_names"], feature_names=spec["feature_names"],
        class_counts=np.asarray(spec["class_counts"], np.int64),
        positive_label=positive_label(cfg.data.positive_class, _Names),
        encoding=spec["encoding"], preprocessing=spec["preprocessing"],
        notes=(f"hospital-local data: {n} hospitals, the server holds "
               f"{'data.server_test' if len(y_test) else 'no records'}",),
    )
