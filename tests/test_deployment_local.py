"""A real deployment with hospital-local data: one SuperNode per site file of the UCI heart
disease table (TLS and node authentication on, the hospital kit in clients/), a server
config whose data.path does not exist (the server never opens a data file), one red-team
node with a partial-knowledge ALIE. The per-hospital numbers equal the one-file-per-hospital
simulation of the same files. Marked ``deployment``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_deployment import BIN, CHECK, KIT, Federation, _wait

pytestmark = pytest.mark.deployment
ROOT = Path(__file__).resolve().parents[1]
SITES = ["cleveland", "hungary", "switzerland", "va_long_beach"]

EXPERIMENT = """
[experiment]
name = "deployment-local"
rounds = 2
round_timeout = 120
min_hospitals = 4
clean_twin = false

[data]
name = "csv"
path = "{nowhere}"
target = "num"
label_map = {{ "0" = 0, "1" = 1, "2" = 1, "3" = 1, "4" = 1 }}
num_hospitals = 4

[attack]
name = "alie"
hospitals = [3]
knowledge = "partial"

[defense]
name = "median"
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    shared = ROOT.parent / "shared" / "data" / "uci-heart-disease" / "heart_disease_4sites.csv"
    if not shared.is_file():
        pytest.skip("../shared/data is not present")
    d = tmp_path_factory.mktemp("sites")
    df = pd.read_csv(shared, dtype=str)
    for site, part in df.groupby("site"):
        part.drop(columns=["site"]).to_csv(d / f"{site}.csv", index=False)
    bad = df[df.site == "hungary"].drop(columns=["site", "chol"])
    bad.to_csv(d / "bad-hungary.csv", index=False)
    return d


@pytest.fixture(scope="module")
def federation(tmp_path_factory, sites):
    tmp = tmp_path_factory.mktemp("deployment-local")
    fed = Federation(tmp)
    try:
        fed.sh(str(KIT / "make_certs.sh"), str(tmp / "certs"))
        for i in range(4):
            fed.sh(str(KIT / "make_node_key.sh"), str(tmp / "keys"), f"site-{i}")
        fed.start("superlink", str(KIT / "start_superlink.sh"), str(tmp / "certs"), "--host", "127.0.0.1",
                  "--port", str(fed.port))
        _wait(lambda: "Uvicorn running on https://" in fed.log("superlink"), 120, "the SuperLink")
        fed.sh(str(KIT / "flwr_connection.sh"), "fedmedsec", f"127.0.0.1:{fed.port}", str(tmp / "certs" / "ca.crt"))
        for i in range(4):
            fed.sh(str(KIT / "register_node.sh"), str(tmp / "keys" / f"site-{i}.pub"), "fedmedsec")
        for i, site in enumerate(SITES):
            role = ' role="attacker"' if i == 3 else ""
            fed.supernode(f"site-{i}", f"site-{i}", f'partition-id={i} data-path="{sites / (site + ".csv")}"{role}')
        _wait(lambda: fed.online() == 4, 180, "four SuperNodes online", interval=3)
        yield fed
    finally:
        fed.stop()


def _flwr_run(fed: Federation, out: Path, wait: float = 600) -> str:
    cfg = fed.tmp / f"{out.name}.toml"
    cfg.write_text(EXPERIMENT.format(nowhere=fed.tmp / "the-server-has-no-data.csv"))
    name = f"flwr-run-{out.name}"
    p = fed.start(name, str(BIN / "flwr"), "run", ".", "fedmedsec", "--stream", "--run-config",
                  f'config="{cfg}" out="{out}"')
    deadline = time.monotonic() + wait
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    if p.poll() is None:
        fed.kill(name)
        pytest.fail(f"flwr run did not finish in {wait} s:\n{fed.log(name)[-3000:]}")
    return fed.log(name)


def test_hospital_local_files_on_supernodes_match_the_simulation(federation, sites, tmp_path):
    out = tmp_path / "run"
    log = _flwr_run(federation, out)
    assert (out / "summary.json").is_file(), log[-3000:]
    check = subprocess.run([sys.executable, str(CHECK), str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    s = json.loads((out / "summary.json").read_text())
    assert not (federation.tmp / "the-server-has-no-data.csv").exists()
    assert s["evaluated_on"] == "hospitals" and s["hospital_names"] == {str(i): n for i, n in enumerate(SITES)}
    assert s["threat_model"]["knowledge"].startswith("own benign")
    # the same files as a one-file-per-hospital simulation: the same per-hospital numbers
    from fedmedsec.config import load_config
    from fedmedsec.engine import run_experiment

    files = [sites / f"{n}.csv" for n in SITES]
    raw = __import__("tomllib").loads((federation.tmp / "run.toml").read_text())
    raw["data"]["path"] = [str(f) for f in files]
    raw["simulation"] = {"backend": "inprocess"}
    sim = run_experiment(load_config(raw=raw), tmp_path / "sim")
    assert s["per_hospital_accuracy"] == sim["per_hospital_accuracy"]
    assert s["clean_accuracy"] == pytest.approx(sim["clean_accuracy"])


def test_a_node_whose_file_has_other_columns_is_refused_by_name(federation, sites, tmp_path):
    federation.kill("site-1")
    federation.supernode("site-1", "site-1", f'partition-id=1 data-path="{sites / "bad-hungary.csv"}"')
    _wait(lambda: federation.online() == 4, 180, "four SuperNodes online again", interval=3)
    out = tmp_path / "bad"
    log = _flwr_run(federation, out, wait=400)
    assert not (out / "summary.json").exists()
    assert "hospital bad-hungary: lacks column 'chol'" in log or "lacks column 'chol'" in log, log[-3000:]
