"""Checkpoints and resume: a killed run continues from its last completed round with the
numbers of an uninterrupted run; the final model is saved and can start a new run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedmedsec.config import ConfigError, load_config
from fedmedsec.engine import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path, name: str) -> list[dict]:
    with open(path / name, newline="") as fh:
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in csv.DictReader(fh)]


def _same(a: Path, b: Path) -> None:
    assert _rows(a, "rounds.csv") == _rows(b, "rounds.csv")
    assert _rows(a, "clients.csv") == _rows(b, "clients.csv")
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    skip = {"wall_seconds", "cost", "versions", "resumed_at_round"}
    assert {k: v for k, v in sa.items() if k not in skip} == {k: v for k, v in sb.items() if k not in skip}


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedmedsec.cli", "run", "configs/quickstart.toml", "--out", str(out), "--quiet",
            *extra]


def test_a_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    """Kill a real `fedmedsec run` process after its third round, resume it, compare."""
    overrides = ["-s", "simulation.backend=inprocess", "-s", "experiment.rounds=8",
                 "-s", "attack.name=backdoor", "-s", "attack.fraction=0.2", "-s", "defense.name=foolsgold",
                 "-s", "privacy.mode=dp_sgd", "-s", "privacy.noise_multiplier=0.8"]
    ref = tmp_path / "ref"
    assert subprocess.run(_cli(ref, *overrides), cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "killed"
    p = subprocess.Popen(_cli(out, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        f = out / "checkpoint.json"
        if f.is_file() and json.loads(f.read_text() or "{}").get("round", 0) >= 3:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "summary.json").exists()
    r = subprocess.run([sys.executable, "-m", "fedmedsec.cli", "run", "configs/quickstart.toml", "--resume",
                        str(out), "--quiet", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert 2 <= s["resumed_at_round"] <= 8
    _same(ref, out)


def test_resume_refuses_a_different_config_or_a_complete_run(tmp_path):
    cfg = load_config(raw={}, overrides=["simulation.backend=inprocess", "experiment.rounds=2", "experiment.mia=false"])
    run_experiment(cfg, tmp_path)
    other = load_config(raw={}, overrides=["simulation.backend=inprocess", "experiment.rounds=3", "experiment.mia=false"])
    with pytest.raises(ConfigError, match="different configuration"):
        run_experiment(other, tmp_path, resume=True)
    r = subprocess.run([sys.executable, "-m", "fedmedsec.cli", "run", "configs/quickstart.toml", "--resume",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is complete" in r.stderr
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_experiment(cfg, tmp_path / "empty", resume=True)


def test_the_final_model_is_saved_and_starts_a_new_run(tmp_path):
    cfg = load_config(raw={}, overrides=["simulation.backend=inprocess", "experiment.rounds=3", "experiment.mia=false"])
    s = run_experiment(cfg, tmp_path / "a")
    sd = torch.load(tmp_path / "a" / "final_model.pt", weights_only=True)
    assert set(sd) and all(isinstance(v, torch.Tensor) for v in sd.values())
    warm = load_config(raw={}, overrides=["simulation.backend=inprocess", "experiment.rounds=1", "experiment.mia=false",
                                          f'experiment.init_model="{tmp_path / "a" / "final_model.pt"}"',
                                          "train.lr=1e-9"])
    s2 = run_experiment(warm, tmp_path / "b")
    assert s2["clean_accuracy"] == pytest.approx(s["clean_accuracy"], abs=1e-6)  # lr ~ 0: the same model
    bad = load_config(raw={}, overrides=["simulation.backend=inprocess", "experiment.rounds=1",
                                         f'experiment.init_model="{tmp_path / "nope.pt"}"'])
    with pytest.raises(ConfigError, match="experiment.init_model"):
        run_experiment(bad, tmp_path / "c")


def test_a_sweep_resumes_killed_runs_and_survives_a_corrupt_summary(tmp_path):
    from rich.console import Console

    from fedmedsec.results.sweep import run_sweep

    grid = tmp_path / "grid.toml"
    grid.write_text(f'base = "{ROOT / "configs" / "quickstart.toml"}"\n[grid]\n"experiment.seed" = [0, 1]\n'
                    '[fixed]\n"simulation.backend" = "inprocess"\n"experiment.rounds" = 3\n"experiment.mia" = false\n')
    out = tmp_path / "sweep"
    pts = run_sweep(grid, out, console=Console(file=open(os.devnull, "w")))
    ref = {p.name: json.loads((out / p.name / "summary.json").read_text()) for p in pts}
    first, second = (out / p.name for p in pts)
    (first / "summary.json").write_text('{"clean_accuracy": 0.9')  # truncated
    (second / "summary.json").unlink()  # killed after its last checkpoint
    pts2 = run_sweep(grid, out, console=Console(file=open(os.devnull, "w")))
    assert [p.status for p in pts2] == ["done", "done"]
    for p in pts2:
        s = json.loads((out / p.name / "summary.json").read_text())
        assert s["clean_accuracy"] == ref[p.name]["clean_accuracy"]
    assert json.loads((second / "summary.json").read_text())["resumed_at_round"] == 4  # nothing left to train
