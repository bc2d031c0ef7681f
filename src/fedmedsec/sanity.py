"""Warnings for summary.json: one line each, naming the problem, for runs whose numbers do
not mean what they seem to (no attacker present, a rule assuming fewer attackers than there
are, a model that predicts one class, a trigger that succeeds without poisoning, ...)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .aggregators import AGGREGATORS
from .config import uses_f

#: a trigger whose success on the clean twin exceeds this is mostly the trigger
TWIN_ASR_WARN = 0.2


def run_warnings(co, summary: dict[str, Any]) -> list[str]:
    """The warnings of a finished run (``co``: its Coordinator)."""
    setup, cfg = co.setup, co.cfg
    out: list[str] = []
    a = cfg.attack
    if a.name != "none":
        if not setup.attackers:
            out.append(f"attack.name = {a.name!r} but no hospital is malicious (attack.fraction = "
                       f"{a.fraction} of {setup.n}, no attack.hospitals): the run measures no attack")
        elif not any(c["attacking"] for c in co.clients):
            out.append(f"attack.name = {a.name!r}: the attackers never acted (window starts at round "
                       f"{a.start_round} of {cfg.experiment.rounds}, or they were never sampled)")
    per_round = Counter(c["round"] for c in co.clients if c["attacking"] and c["status"] == "ok")
    most = max(per_round.values()) if per_round else 0
    entry = AGGREGATORS.get(cfg.defense.name)
    if most and uses_f(entry) and cfg.defense.f < most:
        out.append(f"defense.f = {cfg.defense.f} but up to {most} attacking hospitals replied in a round: "
                   f"{cfg.defense.name}'s guarantee assumes at most f")
    out += _degenerate_model(co, summary)
    idle = [r["round"] for r in co.rounds if r["accepted"] == 0]
    if idle:
        problems = Counter(c["problem"] for c in co.clients if c["status"] == "dropped" and c["problem"])
        why = f" (most common: {problems.most_common(1)[0][0]!r})" if problems else ""
        out.append(f"{len(idle)} of {len(co.rounds)} rounds aggregated nothing, the global model "
                   f"stayed{why}")
    clean = summary.get("attack_success_rate_clean")
    if clean is not None and clean > TWIN_ASR_WARN:
        out.append(f"the trigger succeeds on the clean twin too ({clean:.2f}): read attack_success_lift "
                   f"({_fmt(summary.get('attack_success_lift'))}), not attack_success_rate alone")
    loss = summary.get("test_loss")
    if loss is not None and not np.isfinite(loss):
        out.append("the final model's test loss is not finite: training diverged")
    return out


def _degenerate_model(co, summary: dict[str, Any]) -> list[str]:
    """The final model predicts a single class, or no better than the majority class."""
    primary = co.last_server if co.last_server is not None else co.last_federated
    if primary is None or primary.clean.count == 0:
        return []
    M = primary.clean.confusion
    names = co.setup.data.class_names or [str(k) for k in range(M.shape[0])]
    where = "the server's test set" if co.last_server is not None else "the hospitals' test splits"
    predicted = M.sum(axis=0)
    majority = int(M.sum(axis=1).max()) / int(M.sum())
    acc = float(np.trace(M)) / int(M.sum())
    if int((predicted > 0).sum()) == 1:
        k = int(np.argmax(predicted))
        return [f"the final model predicts one class only ({names[k]}) on {where}: accuracy "
                f"{acc:.3f} against a majority-class rate of {majority:.3f}"]
    if acc <= majority + 0.005:
        return [f"the final model is no better than always answering the majority class on {where} "
                f"(accuracy {acc:.3f}, majority rate {majority:.3f})"]
    return []


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"
