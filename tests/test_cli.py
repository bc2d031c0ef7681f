"""The command line: user mistakes exit 2 with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedmedsec.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "missing.toml"], "does not exist"),
        (["run", "configs/quickstart.toml", "-s", "attack.name=nope"], "attack.name = 'nope'"),
        (["run", "configs/quickstart.toml", "-s", "data.num_hospitals=1000"], "data.num_hospitals = 1000"),
        (["run", "configs/quickstart.toml", "-s", "attack.name=backdoor", "-s", "attack.target_label=7"],
         "attack.target_label"),
        (["run", "configs/quickstart.toml", "-s", "train.lr=fast"], "train.lr = 'fast'"),
    ],
)
def test_user_errors_are_one_line(args, fragment):
    from pathlib import Path

    r = _run(*args, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_broken_toml_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nname = \n")
    r = _run("run", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr


def test_list_shows_components():
    r = _run("list")
    assert r.returncode == 0
    assert "wdbc" in r.stdout and "fedavg" in r.stdout and "sign_flip" in r.stdout


# --------------------------------------------------------------------------- habits


def _env(tmp_path, **extra):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.update(extra)
    return env


def _run_env(args, env, cwd=ROOT, flags=()):
    return subprocess.run([sys.executable, *flags, "-m", "fedmedsec.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def test_version():
    import importlib.metadata as md

    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fedmedsec {md.version('fedmedsec')}"


def test_run_dry_run_prints_the_resolved_config_and_stops(tmp_path):
    import tomllib

    from fedmedsec.config import load_config

    out = tmp_path / "never"
    r = _run("run", "configs/quickstart.toml", "-s", "attack.name=alie", "-s", "attack.fraction=0.2",
             "--out", str(out), "--dry-run", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cfg = load_config(ROOT / "configs/quickstart.toml", ["attack.name=alie", "attack.fraction=0.2"])
    assert tomllib.loads(r.stdout) == tomllib.loads(cfg.to_toml())  # valid TOML, every key resolved
    assert r.stdout.startswith("# fedmedsec run") and "[attack]" in r.stdout
    assert not out.exists()


def test_sweep_dry_run_lists_points_and_their_differences_and_writes_nothing(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(f'base = "{ROOT / "configs/quickstart.toml"}"\n[grid]\n"attack.name" = ["none", "alie"]\n'
                    '"defense.name" = ["fedavg", "median"]\n[fixed]\n"attack.fraction" = 0.2\n')
    out = tmp_path / "sweep"
    r = _run("sweep", str(grid), "--dry-run", "-s", "experiment.rounds=3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "4 grid points -> 4 runs" in lines[0] and "dry run" in lines[0]
    assert any("-s (every point): experiment.rounds = 3" in ln for ln in lines)
    head = next(ln for ln in lines if ln.startswith("run "))
    for k in ("attack.name", "defense.name", "attack.fraction"):  # attack.fraction: not applied to none
        assert k in head
    assert "experiment.rounds" not in head  # the same for every point
    assert sum("attack=alie__defense=median" in ln and "to run" in ln for ln in lines) == 1
    assert not out.exists()
    bad = _run("sweep", str(grid), "--dry-run", "-s", "attack.name=alie")
    assert bad.returncode == 2 and "is a [grid] axis" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = _run("sweep", str(grid))
    assert missing.returncode == 2 and "--out DIR is required" in missing.stderr


def test_list_shows_parameters_defaults_citations_and_is_cached_without_torch(tmp_path):
    env = _env(tmp_path)
    first = _run_env(["list"], env)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "z: float | None = None  (> 0)" in out  # alie's parameter: type, default, constraint
    assert "cite: Baruch, Baruch and Goldberg, NeurIPS 2019" in out
    assert "beta: float | None = None  (>= 0, < 0.5)" in out  # trimmed_mean
    assert "wdbc" in out and "fedavg" in out and "sign_flip" in out and "fldetector" in out
    second = _run_env(["list", "attack"], env, flags=("-X", "importtime"))
    assert second.returncode == 0
    assert second.stdout.splitlines()[0].startswith("attack (") and "defense (" not in second.stdout
    imported = {ln.split("|")[-1].strip() for ln in second.stderr.splitlines() if ln.startswith("import time:")}
    assert not {"torch", "flwr", "ray", "scipy", "pandas"} & imported, "a cached listing imports heavy modules"
    bad = _run_env(["list", "bogus"], env)
    assert bad.returncode == 2 and "unknown kind" in bad.stderr and "Traceback" not in bad.stderr


def test_catalogue_equals_the_registries_and_rebuilds_when_stale(tmp_path, monkeypatch):
    import json

    from fedmedsec import catalogue
    from fedmedsec.components import registry_for

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    live = catalogue.build()
    for kind in ("data", "model", "attack", "defense", "defense.pre", "detection"):
        reg = registry_for(kind)
        assert [e["name"] for e in live[kind]] == reg.names()
        for e in live[kind]:
            assert [p["name"] for p in e["params"]] == list(reg.get(e["name"]).params.model_fields)
    data, cached = catalogue.load()
    assert not cached and data == json.loads(json.dumps(live))
    data, cached = catalogue.load()
    assert cached and data == json.loads(json.dumps(live))
    path = next((tmp_path / "fedmedsec").glob("catalogue-*.json"))
    path.write_text("{broken")
    assert catalogue.load()[1] is False  # an unreadable cache is rebuilt, never trusted
    monkeypatch.setattr(catalogue, "source_key", lambda: "different-sources")
    assert catalogue.load()[1] is False and (tmp_path / "fedmedsec" / "catalogue-different-sources.json").is_file()
    assert not path.exists()  # the stale one is removed


def test_progress_lines_are_not_wrapped_in_logs(tmp_path):
    out = tmp_path / ("a-long-directory-name-" * 4) / "run"
    r = _run_env(["run", "configs/quickstart.toml", "-s", "simulation.backend=inprocess", "-s", "experiment.rounds=2",
                  "-s", "data.num_hospitals=3", "-s", "experiment.mia=false", "--out", str(out)], _env(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    head = lines[0]
    assert head.startswith("FedMedSec") and head.endswith(str(out)) and len(head) > 80  # one line, not wrapped
    rounds = [ln for ln in lines if ln.startswith("  round ")]
    assert len(rounds) == 2 and all(ln.endswith(" s") for ln in rounds)
    assert "\x1b[" not in r.stdout  # no colour codes in a log
