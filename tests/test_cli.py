"""The command line: user mistakes exit 2 with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


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
