"""The run directory: the unit of results (see DESIGN.md, "The CLI and results contract").

config.toml (resolved), rounds.csv (one row per round), clients.csv (one row per client
per round), summary.json, environment.json (versions, git commit, machine).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

ROUND_COLUMNS = [
    "round", "clean_accuracy", "test_loss", "balanced_accuracy", "auroc", "sensitivity",
    "specificity", "attack_success_rate", "attack_success_rate_clean", "attack_success_lift",
    "triggered_miss_rate", "evaluated_on", "mean_hospital_accuracy",
    "worst_hospital_accuracy", "worst_honest_hospital_accuracy", "replies", "accepted",
    "dropped_replies", "epsilon", "round_seconds", "elapsed_seconds",
]
#: the Coordinator's round-row names -> rounds.csv's (one meaning per name across the files:
#: ``dropped_replies`` counts the replies the server refused in the round, as summary.json's
#: ``dropped_replies`` counts them over the run)
ROUND_RENAME = {"dropped": "dropped_replies"}
CLIENT_COLUMNS = [
    "round", "partition_id", "hospital", "malicious", "attacking", "reported_attacking", "status", "problem",
    "accepted", "weight", "update_norm", "num_examples", "train_loss", "local_accuracy", "epsilon",
    "reported_epsilon",
]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("fedmedsec", "flwr", "torch", "opacus", "numpy", "ray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _clean(v: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6))
    return "" if v is None else v


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    extra = sorted({k for r in rows for k in r} - set(columns))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns + extra)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in columns + extra})


class RunDir:
    """Writes one run's files; ``rounds.csv``/``clients.csv`` are rewritten each round so a
    killed run leaves what it had."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, toml_text: str) -> None:
        (self.path / "config.toml").write_text(toml_text)
        env = {"versions": versions(), "git_commit": git_commit(), "platform": platform.platform(),
               "cpus": __import__("os").cpu_count()}
        (self.path / "environment.json").write_text(json.dumps(env, indent=2))

    def write_progress(self, rounds: list[dict], clients: list[dict]) -> None:
        rounds = [{ROUND_RENAME.get(k, k): v for k, v in r.items()} for r in rounds]
        write_csv(self.path / "rounds.csv", ROUND_COLUMNS, rounds)
        write_csv(self.path / "clients.csv", CLIENT_COLUMNS, clients)

    def write_summary(self, summary: dict) -> None:
        tmp = self.path / "summary.json.tmp"
        tmp.write_text(json.dumps(_clean(summary), indent=2))
        tmp.replace(self.path / "summary.json")  # atomic: summary.json means "complete"
