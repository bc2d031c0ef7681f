"""The clean twin of a run with a targeted attack: the same config with the attack removed,
trained the same way, so an attack's success can be read beside the trigger's success on a
model that was never poisoned (a trigger can be "successful" on its own: REFERENCES.md).

The twin runs the same round loop in-process on the same data (same splits, seed, model
initialisation, sampling and local training streams), and its trigger success is measured
each round on the same records the run itself evaluates: the server's test set, or the
hospitals' test splits when the server holds none.
"""

from __future__ import annotations

import tomllib
from typing import Any

from .config import config_from_dict
from .evaluation import evaluate_records, merged, round_metrics
from .experiment import Setup
from .metrics import attack_success_rate
from .rounds import run_rounds


def twin_config(setup: Setup):
    """The run's config without the attack (and without what only the run reports)."""
    raw: dict[str, Any] = tomllib.loads(setup.cfg.to_toml())
    raw["attack"] = {"name": "none"}
    raw["experiment"].update(mia=False, mia_lira_shadows=0, clean_twin=False)
    raw["simulation"] = {"backend": "inprocess"}
    raw.pop("tracking", None)
    return config_from_dict(raw)


def has_twin(setup: Setup) -> bool:
    """A clean twin is defined for targeted attacks, when the config asks for it."""
    a = setup.attack
    local = all(len(h.y_train) for h in setup.data.hospitals)  # the records are in this process
    return bool(setup.cfg.experiment.clean_twin and a is not None and a.target_label is not None and local)


def clean_twin(setup: Setup, on_round=None) -> dict[str, Any]:
    """Train the twin; returns {"asr": {round: trigger success on the twin}, "clean_accuracy":
    its final clean accuracy, "attack_success_rate": its final trigger success}."""
    from .server import Coordinator
    from .transports import InProcessTransport

    twin = Setup(cfg=twin_config(setup), data=setup.data, attackers=(), dp_fix=setup.dp_fix)
    attack = setup.attack
    asr: dict[int, float | None] = {}
    final: dict[str, Any] = {}

    def measure(row: dict) -> None:
        model = co.global_model()
        d = setup.data
        if d.x_test is not None and len(d.y_test):
            ev = evaluate_records(setup, model, d.x_test, d.y_test, attack)
        else:
            ev = merged([evaluate_records(setup, model, h.x_test, h.y_test, attack) for h in d.hospitals])
        r = row["round"]
        asr[r] = attack_success_rate(ev.trigger, attack.target_label) if ev.trigger is not None else None
        final.update(round_metrics(twin, ev), attack_success_rate=asr[r])
        if on_round:
            on_round(row)

    co = Coordinator(twin, on_round=measure)
    run_rounds(co, InProcessTransport(twin))
    return {"asr": asr, "clean_accuracy": final.get("clean_accuracy"),
            "attack_success_rate": final.get("attack_success_rate")}
