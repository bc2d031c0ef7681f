"""From a config to federated data, in one of two ways.

One pooled file split by the simulator: (1) the server's held-out test set is split off
first (or the dataset's official test split is used); (2) the rest is partitioned across
hospitals; (3) each hospital splits its records into local train and test; (4)
preprocessing (imputation, standardisation) is fitted from the hospitals' training
statistics only (``data.preprocess``: counts and sums combined at the server, or each
hospital's own), then applied to everything.

One file per hospital (``data.path`` a list or a directory): the protocol of
``data.local`` (describe, agree on an encoding, split locally, combine statistics), the
same a deployment runs with one file per SuperNode; the server holds no test set unless
``data.server_test`` names one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..streams import Stream, rng, seed_sequence
from . import local
from .base import DATASETS, DataError, RawData
from .partition import PARTITIONERS, PartitionError
from .preprocess import Preprocessor, column_stats


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
    #: the agreed encoding (hospital files) and the preprocessing the server sent: what a
    #: SuperNode needs, besides its own file, to build the same model input
    encoding: dict | None = None
    preprocessing: dict | None = None

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


def _config_key(data_cfg: dict, seed: int, root_size: int) -> str:
    blob = json.dumps({"data": data_cfg, "seed": seed, "root": root_size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


_CACHE: dict[str, FederatedData] = {}

#: hospitals when ``data.num_hospitals`` is not given (and the split does not define it)
DEFAULT_HOSPITALS = 10


def root_set_size(cfg) -> int:
    """The server's clean root set size when the rule needs one (FLTrust), else 0."""
    from ..aggregators import AGGREGATORS

    needs_root = AGGREGATORS.get(cfg.defense.name).meta.get("needs_reference", False)
    return cfg.defense.root_size if needs_root else 0


def carve_root(cfg, x_test: np.ndarray, y_test: np.ndarray, root_size: int):
    """(root_x, root_y, x_test, y_test): the root set drawn from the server's own test
    file (hospital-local data: the coordinator's only records), the rest stays its test."""
    if len(y_test) <= root_size:
        raise DataError(f"defense.root_size = {root_size}: the server's root set comes from "
                        f"data.server_test, which has {len(y_test)} records (give data.server_test "
                        "when the hospitals hold the data)")
    perm = rng(cfg.experiment.seed, Stream.DATA_SPLIT).permutation(len(y_test))
    keep = np.sort(perm[root_size:])
    return x_test[perm[:root_size]], y_test[perm[:root_size]], x_test[keep], y_test[keep]


def build_federated_data(cfg) -> FederatedData:
    """Federated data for ``cfg`` (a ``Config``); cached per process (Ray actors are reused
    across rounds) by the data section, the seed and the FLTrust root-set size."""
    root = root_set_size(cfg)
    key = _config_key(cfg.to_dict()["data"], cfg.experiment.seed, root)
    if key not in _CACHE:
        if len(_CACHE) >= 4:
            _CACHE.pop(next(iter(_CACHE)))
        files = local.hospital_files(cfg)
        _CACHE[key] = _build(cfg, root) if files is None else _build_per_hospital(cfg, files, root)
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
    stats = [column_stats(x[tr]) for tr, _ in hosp_idx]
    prep = local.preprocessing(cfg, stats, raw.modality, raw.categorical)
    combined = Preprocessor.from_dict(prep["combined"])
    hospitals, n_imputed = [], 0
    for h, (tr, te) in enumerate(hosp_idx):
        p = local.preprocessor_for(prep, h)
        x_tr, m_tr = p.apply(x[tr])
        x_te, m_te = p.apply(x[te])
        n_imputed += m_tr
        hospitals.append(HospitalData(id=h, name=site_names[h] if site_names else f"hospital-{h}",
                                      x_train=x_tr, y_train=y[tr], x_test=x_te, y_test=y[te]))
    notes = (f"imputed {n_imputed} missing training values (federated means / modes of the hospitals' "
             "training data)",) if n_imputed else ()
    return FederatedData(
        hospitals=hospitals,
        x_test=combined.apply(x_test)[0],
        y_test=y_test,
        num_classes=raw.num_classes,
        modality=raw.modality,
        input_shape=raw.input_shape,
        feature_low=combined.low.astype(np.float32).reshape(raw.input_shape),
        feature_high=combined.high.astype(np.float32).reshape(raw.input_shape),
        root_x=combined.apply(root_x)[0] if root_x is not None else None,
        root_y=root_y,
        class_names=raw.class_names,
        feature_names=raw.feature_names,
        notes=tuple(raw.notes) + tuple(notes),
        class_counts=np.bincount(y[train_rows], minlength=raw.num_classes),
        positive_label=positive_label(d.positive_class if d.positive_class is not None
                                      else raw.positive_class, raw),
        preprocessing=prep,
    )


def _build_per_hospital(cfg, files: list[Path], root_size: int) -> FederatedData:
    """One file per hospital, all in this process: the protocol of ``data.local`` (describe,
    agree, open, combine statistics, finish) exactly as a deployment runs it."""
    d = cfg.data
    if d.num_hospitals is not None and d.num_hospitals != len(files):
        raise DataError(f"data.num_hospitals = {d.num_hospitals}: data.path has {len(files)} hospital files")
    described = [local.describe(cfg, f) for f in files]
    encoding = local.agree(cfg, described)
    opened = [local.open_hospital(cfg, f, encoding, i) for i, f in enumerate(files)]
    first = opened[0].raw
    prep = local.preprocessing(cfg, [h.stats for h in opened], first.modality, first.categorical)
    hospitals = [local.finish(h, prep) for h in opened]
    combined = Preprocessor.from_dict(prep["combined"])
    x_test = np.zeros((0,) + first.input_shape, np.float32)
    y_test = np.zeros(0, np.int64)
    root_x = root_y = None
    if d.server_test is not None:
        raw_t = local.encode(cfg, d.server_test, encoding)
        xs = [raw_t.x] + ([raw_t.x_test] if raw_t.x_test is not None else [])
        ys = [raw_t.y] + ([raw_t.y_test] if raw_t.y_test is not None else [])
        x_test, y_test = combined.apply(np.concatenate(xs))[0], np.concatenate(ys).astype(np.int64)
    if root_size:
        root_x, root_y, x_test, y_test = carve_root(cfg, x_test, y_test, root_size)
    counts = sum(np.bincount(h.y_train, minlength=first.num_classes) for h in opened)
    return FederatedData(
        hospitals=hospitals, x_test=x_test, y_test=y_test, num_classes=first.num_classes,
        modality=first.modality, input_shape=first.input_shape,
        feature_low=combined.low.astype(np.float32).reshape(first.input_shape),
        feature_high=combined.high.astype(np.float32).reshape(first.input_shape),
        root_x=root_x, root_y=root_y, class_names=first.class_names, feature_names=first.feature_names,
        notes=(f"{len(files)} hospital files ({', '.join(h.name for h in hospitals[:6])}"
               f"{', ...' if len(hospitals) > 6 else ''}); preprocessing {d.preprocess}",),
        class_counts=counts,
        positive_label=positive_label(d.positive_class, first),
        encoding=encoding, preprocessing=prep,
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
