"""Hospital-local data: one file per hospital, schema agreement, federated preprocessing."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmedsec.config import load_config
from fedmedsec.data.base import DataError
from fedmedsec.data.pipeline import build_federated_data
from fedmedsec.data.preprocess import Preprocessor, column_stats, combine, fit
from fedmedsec.engine import run_experiment

HEART = ["data.name=csv", "data.target=num", 'data.label_map={"0"=0,"1"=1,"2"=1,"3"=1,"4"=1}',
         "model.name=mlp"]
FAST = ["simulation.backend=inprocess", "experiment.rounds=3", "experiment.mia=false"]


@pytest.fixture
def heart_sites(shared_data, tmp_path):
    """The UCI heart-disease table split into one file per real site (the site column
    kept in some files and dropped in others, as hospitals' exports differ)."""
    df = pd.read_csv(shared_data / "uci-heart-disease" / "heart_disease_4sites.csv", dtype=str)
    d = tmp_path / "sites"
    d.mkdir()
    for i, (site, part) in enumerate(sorted(df.groupby("site"))):
        (part if i % 2 else part.drop(columns=["site"])).to_csv(d / f"{site}.csv", index=False)
    return d


def test_one_file_per_site_gives_per_site_results(heart_sites, tmp_path, check_run_dir):
    cfg = load_config(raw={}, overrides=FAST + HEART + [f'data.path="{heart_sites}"', "data.drop_columns=[]"])
    with pytest.raises(DataError, match="column 'site'"):
        build_federated_data(cfg)  # two files carry the site column, two do not
    cfg = load_config(raw={}, overrides=FAST + HEART + [f'data.path="{heart_sites}"',
                                                        'data.drop_columns=["site"]'])
    with pytest.raises(DataError, match="site"):
        build_federated_data(cfg)  # a file without the column cannot drop it
    for f in heart_sites.iterdir():  # the hospitals agree to drop it before sharing
        pd.read_csv(f, dtype=str).drop(columns=["site"], errors="ignore").to_csv(f, index=False)
    cfg = load_config(raw={}, overrides=FAST + HEART + [f'data.path="{heart_sites}"'])
    data = build_federated_data(cfg)
    assert [h.name for h in data.hospitals] == ["cleveland", "hungary", "switzerland", "va_long_beach"]
    assert len(data.y_test) == 0  # the server holds no test set
    s = run_experiment(cfg, tmp_path / "run")
    assert check_run_dir(tmp_path / "run") == []
    assert s["hospital_names"] == {"0": "cleveland", "1": "hungary", "2": "switzerland", "3": "va_long_beach"}
    assert s["evaluated_on"] == "hospitals" and 0.5 < s["clean_accuracy"] <= 1
    merged = sum(s["per_hospital_clinical"][p]["n"] for p in s["per_hospital_clinical"])
    assert s["clinical"]["n"] == merged  # federated evaluation: the hospitals' counts, summed


def _write(path, rows, header):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_categorical_levels_present_at_only_some_hospitals(tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, levels in (("a", ["x", "y"]), ("b", ["y", "z"]), ("c", ["x"])):
        rows = [[float(rng.normal()), levels[i % len(levels)], i % 2] for i in range(20)]
        _write(d / f"{name}.csv", rows, ["v", "kind", "y"])
    cfg = load_config(raw={}, overrides=FAST + ["data.name=csv", "data.target=y", f'data.path="{d}"',
                                                'data.categorical_columns=["kind"]'])
    data = build_federated_data(cfg)
    assert data.feature_names == ["v", "kind=x", "kind=y", "kind=z"]
    b = data.hospitals[1]
    assert set(np.unique(b.x_train[:, 1])) == {0.0}  # b has no "x": its column is all zero


def test_a_hospital_with_a_different_column_set_is_named(tmp_path):
    d = tmp_path / "h"
    d.mkdir()
    _write(d / "a.csv", [[1.0, 2.0, 0], [2.0, 1.0, 1]] * 5, ["u", "v", "y"])
    _write(d / "b.csv", [[1.0, 0], [2.0, 1]] * 5, ["u", "y"])
    cfg = load_config(raw={}, overrides=FAST + ["data.name=csv", "data.target=y", f'data.path="{d}"'])
    with pytest.raises(DataError, match="hospital b: lacks column 'v'"):
        build_federated_data(cfg)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(3, 30), min_size=1, max_size=5), st.integers(0, 2**16),
       st.floats(0.0, 0.4))
def test_federated_statistics_equal_the_pooled_ones(sizes, seed, missing):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(3, 2, size=(n, 4)) for n in sizes]
    for p in parts:
        p[rng.random(p.shape) < missing] = np.nan
    cat = np.array([False, False, False, True])
    for p in parts:
        p[:, 3] = np.where(np.isnan(p[:, 3]), np.nan, (p[:, 3] > 3).astype(float))
    fed = fit(combine([column_stats(p) for p in parts]), "tabular", cat)
    pooled = np.concatenate(parts)
    # the pooled reference: mean imputation (mode for the one-hot column), then z-score
    obs_mean = np.array([np.nanmean(pooled[:, j]) if (~np.isnan(pooled[:, j])).any() else 0.0 for j in range(4)])
    fill = obs_mean.copy()
    fill[3] = float(obs_mean[3] > 0.5) if not np.isnan(obs_mean[3]) else 0.0
    filled = np.where(np.isnan(pooled), fill, pooled)
    mu, sd = filled.mean(0), filled.std(0)
    sd = np.where(sd < 1e-8, 1.0, sd)
    mu[3], sd[3] = 0.0, 1.0
    np.testing.assert_allclose(fed.fill, fill, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fed.mu, mu, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fed.sd, sd, rtol=1e-7, atol=1e-9)
    out, _ = fed.apply(pooled)
    np.testing.assert_allclose(fed.low, out.min(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fed.high, out.max(0), rtol=1e-5, atol=1e-5)
    again = Preprocessor.from_dict(json.loads(json.dumps(fed.to_dict())))
    np.testing.assert_array_equal(again.apply(pooled)[0], out)


def test_local_preprocessing_uses_each_hospitals_own_statistics(tmp_path):
    cfg = load_config(raw={}, overrides=FAST + ["data.preprocess=local", "data.num_hospitals=3"])
    data = build_federated_data(cfg)
    for h in data.hospitals:  # standardised on its own training rows: mean 0, std 1
        np.testing.assert_allclose(h.x_train.mean(0), 0, atol=1e-4)


class NodeTransport:
    """The deployment's data protocol and rounds without the network: every hospital is a
    separate Setup built from its own file only (``deployment.node_setup``)."""

    def __init__(self, cfg, files):
        from fedmedsec.deployment import agree_encoding, data_spec, node_schema, node_setup, node_statistics

        schemas = {i: node_schema(cfg, f) for i, f in enumerate(files)}
        encoding = agree_encoding(cfg, schemas)
        stats = {i: node_statistics(cfg, f, encoding, i) for i, f in enumerate(files)}
        self.spec = data_spec(cfg, encoding, stats)
        self.nodes = {i: node_setup(cfg, self.spec, f, i) for i, f in enumerate(files)}
        self.states = {i: {} for i in self.nodes}

    def available(self, server_round):
        return sorted(self.nodes)

    def train(self, server_round, ids, vec):
        from fedmedsec.client import local_train
        from fedmedsec.rounds import ClientReply

        out = []
        for p in ids:
            s = self.nodes[p]
            v, m = local_train(s, s.data.hospitals[p], vec, server_round, self.states[p])
            out.append(ClientReply(p, v, int(m["num-examples"]), m))
        return out

    def evaluate(self, server_round, ids, vec):
        from fedmedsec.client import local_evaluate
        from fedmedsec.rounds import ClientEval

        out = []
        for p in ids:
            s = self.nodes[p]
            m, ev = local_evaluate(s, s.data.hospitals[p], vec, server_round)
            out.append(ClientEval(p, m["loss"], m["accuracy"], int(m["num-examples"]), counts=ev))
        return out


def _rows_no_time(path):
    with open(path / "rounds.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in csv.DictReader(fh)]


def test_hospital_local_nodes_give_the_simulations_numbers(heart_sites, tmp_path):
    """The same files as one-file-per-hospital simulation and as separate nodes whose
    server never opens a data file (its data.path does not exist): the same numbers."""
    from fedmedsec.deployment import server_setup

    for f in heart_sites.iterdir():
        pd.read_csv(f, dtype=str).drop(columns=["site"], errors="ignore").to_csv(f, index=False)
    files = sorted(heart_sites.iterdir())
    common = FAST + HEART + ["data.num_hospitals=4", "attack.name=sign_flip", "attack.hospitals=[2]",
                             "defense.name=median", "experiment.mia=true"]
    sim = run_experiment(load_config(raw={}, overrides=common + [f'data.path="{heart_sites}"']), tmp_path / "sim")
    server_cfg = load_config(raw={}, overrides=common + [f'data.path="{tmp_path / "nowhere"}"'])
    nodes = NodeTransport(server_cfg, files)
    dep = run_experiment(server_cfg, tmp_path / "dep",
                         connect=lambda cfg: (server_setup(cfg, nodes.spec), nodes))
    assert not (tmp_path / "nowhere").exists()
    assert dep["per_hospital_accuracy"] == sim["per_hospital_accuracy"]
    assert dep["clean_accuracy"] == sim["clean_accuracy"]
    assert dep["membership_inference"]["auc"] == sim["membership_inference"]["auc"]
    assert _rows_no_time(tmp_path / "dep") == _rows_no_time(tmp_path / "sim")


def test_partial_knowledge_alie_on_nodes_crafts_from_its_own_update(heart_sites, tmp_path):
    from fedmedsec.config import ConfigError
    from fedmedsec.deployment import server_setup

    for f in heart_sites.iterdir():
        pd.read_csv(f, dtype=str).drop(columns=["site"], errors="ignore").to_csv(f, index=False)
    base = FAST + HEART + ["data.num_hospitals=4", "attack.name=alie", "attack.hospitals=[1]",
                           "defense.name=median"]
    cfg = load_config(raw={}, overrides=base + ["attack.knowledge=partial", f'data.path="{tmp_path}/x"'])
    nodes = NodeTransport(cfg, sorted(heart_sites.iterdir()))
    s = run_experiment(cfg, tmp_path / "dep", connect=lambda c: (server_setup(c, nodes.spec), nodes))
    assert s["threat_model"]["knowledge"].startswith("own benign")
    assert nodes.nodes[1].collude_locally
    full = load_config(raw={}, overrides=base + [f'data.path="{tmp_path}/x"'])
    from fedmedsec.flower.transport import _refuse_full_knowledge

    with pytest.raises(ConfigError, match="attack.knowledge = 'full'"):
        _refuse_full_knowledge(server_setup(full, nodes.spec), ConfigError)
