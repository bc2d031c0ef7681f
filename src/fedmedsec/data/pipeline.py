"""From a config to federated data: load, hold out, partition, split, preprocess.

Order matters for honest numbers: (1) the server's held-out test set is split off first
(or the dataset's official test split is used); (2) the rest is partitioned across
hospitals; (3) each hospital splits its records into local train and test; (4)
preprocessing (imputation, standardisation) is fitted on the union of the hospitals'
training splits only, then applied to everything. In a real federation step (4) is a
federated mean/variance (e.g. by secure aggregation); pooling gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..streams import Stream, seed_sequence
from .base import DATASETS, DataError, RawData
from .partition import PARTITIONERS, PartitionError


@dataclass
class HospitalData:
    """One hospital's records. x_*: float32 [N, *input_shape]; y_*: int64 [N]."""

    id: int
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class FederatedData:
    hospitals: list[HospitalData]
    x_test: np.ndarray  # the server's held-out test set
    y_test: np.ndarray
    num_classes: int
    modality: str
    input_shape: tuple[int, ...]
    feature_low: np.ndarray  # per-feature min / max of the preprocessed training data
    feature_high: np.ndarray
    root_x: np.ndarray | None = None  # FLTrust's clean root set (server side)
    root_y: np.ndarray | None = None
    class_names: list[str] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    positive_label: int | None = None  # the class of interest for sensitivity, or None
    class_counts: np.ndarray | None = None  # training records per class, all hospitals
    feature_names: list[str] | None = None

    @property
    def pooled_train(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([h.x_train for h in self.hospitals]),
            np.concatenate([h.y_train for h in self.hospitals]),
        )


def _stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator, min_test: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with about ``fraction`` of each class held out."""
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        if len(idx) > 1:
            k = min(max(k, 0), len(idx) - 1)
        else:
            k = 0
        held.append(idx[:k])
    out = np.concatenate(held) if held else np.empty(0, dtype=np.int64)
    if len(out) < min_test and len(y) > min_test:
        rest = np.setdiff1d(np.arange(len(y)), out)
        out = np.concatenate([out, rng.choice(rest, min_test - len(out), replace=False)])
    keep = np.setdiff1d(np.arange(len(y)), out)
    return np.sort(keep), np.sort(out).astype(np.int64)


def _fit_preprocessor(raw: RawData, x_train: np.ndarray):
    """Returns transform(x) -> x fitted on training rows only (tabular: imputation with the
    training medians / modes, then standardisation of non-categorical columns; image/ECG:
    identity: images stay in [0, 1] so triggers keep their meaning, ECG records are
    standardised per record by their loaders)."""
    if raw.modality != "tabular":
        return lambda x: x, ()
    from .csv_table import impute_apply, impute_fit

    x2 = x_train.reshape(len(x_train), -1)
    stats = impute_fit(x2, raw.categorical)
    filled, n_missing = impute_apply(x2, stats)
    mu = filled.mean(axis=0)
    sd = filled.std(axis=0)
    sd = np.where(sd < 1e-8, 1.0, sd)
    if raw.categorical is not None:
        cat = np.asarray(raw.categorical, dtype=bool)
        mu = np.where(cat, 0.0, mu)
        sd = np.where(cat, 1.0, sd)
    mu, sd = mu.astype(np.float32), sd.astype(np.float32)

    def transform(x: np.ndarray) -> np.ndarray:
        flat, _ = impute_apply(x.reshape(len(x), -1), stats)
        return ((flat - mu) / sd).astype(np.float32).reshape(x.shape)

    notes = (f"imputed {n_missing} missing training values (medians / modes of the training data)",) if n_missing else ()
    return transform, notes


def _config_key(data_cfg: dict, seed: int, root_size: int) -> str:
    blob = json.dumps({"data": data_cfg, "seed": seed, "root": root_size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


_CACHE: dict[str, FederatedData] = {}

#: hospitals when ``data.num_hospitals`` is not given (and the split does not define it)
DEFAULT_HOSPITALS = 10


def build_federated_data(cfg) -> FederatedData:
    """Federated data for ``cfg`` (a ``Config``); cached per process (Ray actors are reused
    across rounds) by the data section, the seed and the FLTrust root-set size."""
    from ..aggregators import AGGREGATORS

    needs_root = AGGREGATORS.get(cfg.defense.name).meta.get("needs_reference", False)
    root = cfg.defense.root_size if needs_root else 0
    key = _config_key(cfg.to_dict()["data"], cfg.experiment.seed, root)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(cfg, root)
    return _CACHE[key]


def _build(cfg, root_size: int) -> FederatedData:
    d = cfg.data
    seed = cfg.experiment.seed
    ss = seed_sequence(seed, Stream.DATA_SPLIT)
    rng_test, rng_part, rng_local, rng_root = (np.random.default_rng(s) for s in ss.spawn(4))
    entry = DATASETS.get(d.name)
    raw: RawData = entry.obj(cfg.params("data"), seed)
    if raw.x.ndim < 2 or len(raw.x) != len(raw.y):
        raise DataError(f"data.name = {d.name!r}: loader returned x {raw.x.shape} and y {raw.y.shape}")
    x, y, sites = raw.x, raw.y.astype(np.int64), raw.sites
    if raw.x_test is not None:
        x_test, y_test = raw.x_test, raw.y_test.astype(np.int64)
    else:
        keep, held = _stratified_split(y, d.test_fraction, rng_test)
        x_test, y_test = x[held], y[held]
        x, y = x[keep], y[keep]
        sites = sites[keep] if sites is not None else None
    root_x = root_y = None
    if root_size:
        if root_size >= len(y):
            raise PartitionError(f"defense.root_size = {root_size}: the data has {len(y)} training records")
        perm = rng_root.permutation(len(y))
        r, rest = perm[:root_size], np.sort(perm[root_size:])
        root_x, root_y = x[r], y[r]
        x, y = x[rest], y[rest]
        sites = sites[rest] if sites is not None else None
    # Hospitals split their records into train and test after partitioning, so the
    # partitioner must leave room for at least one local test record each.
    min_total = d.min_records + max(1, int(np.ceil(d.local_test_fraction * d.min_records)))
    part = PARTITIONERS.get(d.partition).obj
    n_hospitals = d.num_hospitals
    if n_hospitals is None and d.partition != "natural":
        n_hospitals = DEFAULT_HOSPITALS
    parts = part(y, n_hospitals, rng_part, min_records=min_total, sites=sites,
                 **cfg.params("partition").model_dump())
    site_names = sorted(set(sites.tolist())) if (d.partition == "natural" and sites is not None) else None
    hosp_idx: list[tuple[np.ndarray, np.ndarray]] = []
    for idx in parts:
        tr, te = _stratified_split(y[idx], d.local_test_fraction, rng_local)
        hosp_idx.append((idx[tr], idx[te]))
    train_rows = np.concatenate([tr for tr, _ in hosp_idx])
    transform, notes = _fit_preprocessor(raw, x[train_rows])
    xt = transform(x)
    hospitals = [
        HospitalData(
            id=h,
            name=site_names[h] if site_names else f"hospital-{h}",
            x_train=xt[tr], y_train=y[tr], x_test=xt[te], y_test=y[te],
        )
        for h, (tr, te) in enumerate(hosp_idx)
    ]
    train_x = xt[train_rows]
    return FederatedData(
        hospitals=hospitals,
        x_test=transform(x_test),
        y_test=y_test,
        num_classes=raw.num_classes,
        modality=raw.modality,
        input_shape=raw.input_shape,
        feature_low=train_x.min(axis=0),
        feature_high=train_x.max(axis=0),
        root_x=transform(root_x) if root_x is not None else None,
        root_y=root_y,
        class_names=raw.class_names,
        feature_names=raw.feature_names,
        notes=tuple(raw.notes) + tuple(notes),
        class_counts=np.bincount(y[train_rows], minlength=raw.num_classes),
        positive_label=positive_label(d.positive_class if d.positive_class is not None
                                      else raw.positive_class, raw),
    )


def positive_label(value: int | str | None, raw: RawData) -> int | None:
    """``data.positive_class`` (or the dataset's default) as a class index."""
    if value is None:
        return None
    names = list(raw.class_names or [])
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        if value.isdigit() and int(value) < raw.num_classes:
            return int(value)
        raise DataError(f"data.positive_class = {value!r}: the classes are {', '.join(names) or 'unnamed'}")
    if not 0 <= value < raw.num_classes:
        raise DataError(f"data.positive_class = {value}: the data has classes 0..{raw.num_classes - 1}")
    return int(value)
