"""The run's ``summary.json`` from what the Coordinator recorded."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .run_dir import versions


def detection_rates(clients: list[dict]) -> dict[str, float] | None:
    """True/false positive rates of the defense's exclusions against the real attackers.

    Each (client, round) with a valid reply is one decision: excluded (weight 0) or kept.
    Positives are rounds in which the hospital attacked. None when no one attacked.
    """
    rows = [c for c in clients if c["status"] == "ok"]
    pos = [c for c in rows if c["attacking"]]
    neg = [c for c in rows if not c["attacking"]]
    if not pos or not neg:
        return None
    tp = sum(1 for c in pos if not c["accepted"])
    fp = sum(1 for c in neg if not c["accepted"])
    return {"tpr": tp / len(pos), "fpr": fp / len(neg), "excluded_malicious": tp,
            "excluded_honest": fp, "malicious_decisions": len(pos), "honest_decisions": len(neg)}


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _clinical_block(setup, counts) -> dict[str, Any]:
    from ..evaluation import clinical

    m = clinical(setup, counts)
    return {k: m[k] for k in ("n", "accuracy", "balanced_accuracy", "auroc", "sensitivity",
                              "specificity", "ppv", "npv", "positive_class", "per_class")}


def build_summary(co, wall_seconds: float, twin: dict | None = None) -> dict[str, Any]:
    """summary.json of a finished run from the Coordinator's records (``twin``: the clean
    twin's results, ``twin.clean_twin``)."""
    setup, cfg = co.setup, co.cfg
    last = co.rounds[-1] if co.rounds else {}
    per = {str(pid): e.accuracy for pid, e in sorted(co.last_eval.items()) if not math.isnan(e.accuracy)}
    honest = {p: a for p, a in per.items() if not setup.is_malicious(int(p))}
    attack = setup.attack
    filters = bool(co.capabilities.get("filters")) or co.detector is not None
    summary: dict[str, Any] = {
        "experiment": cfg.experiment.name,
        "clean_accuracy": last.get("clean_accuracy"),
        "test_loss": last.get("test_loss"),
        "per_hospital_accuracy": per,
        "worst_hospital_accuracy": min(per.values()) if per else None,
        "honest_hospital_accuracy": honest,
        "worst_honest_hospital_accuracy": min(honest.values()) if honest else None,
        "hospital_names": {str(h.id): h.name for h in setup.data.hospitals},
        "attack_success_rate": _num(last.get("attack_success_rate")),
        "attack_success_rate_clean": None,
        "attack_success_lift": None,
        "triggered_miss_rate": _num(last.get("triggered_miss_rate")),
        "clean_twin": None,
        "evaluated_on": last.get("evaluated_on") or None,
        "clinical": None,
        "per_hospital_clinical": {},
        "epsilon": None,
        "delta": None,
        "detection": detection_rates(co.clients) if filters else None,
        "dropped_replies": sum(1 for c in co.clients if c["status"] == "dropped"),
        "wall_seconds": wall_seconds,
        "rounds": cfg.experiment.rounds,
        "seed": cfg.experiment.seed,
        "mode": cfg.experiment.mode,
        "dataset": cfg.data.name,
        "num_hospitals": setup.n,
        "attack": cfg.attack.name,
        "defense": cfg.defense.name,
        "privacy_mode": cfg.privacy.mode,
        "malicious_hospitals": list(setup.attackers) if attack is not None else [],
        "threat_model": (dataclasses.asdict(attack.threat_for(cfg.attack.knowledge))
                         if attack is not None else None),
        "attack_rounds": [r for r in range(1, cfg.experiment.rounds + 1) if setup.attack_round(r)]
        if attack is not None else [],
        "membership_inference": None,
        "cost": {
            "seconds_per_round": float(np.mean([r["round_seconds"] for r in co.rounds])) if co.rounds else None,
            "bytes_to_clients": co.bytes_down,
            "bytes_from_clients": co.bytes_up,
            "parameters": int(co.global_vec.numel()),
        },
        "versions": versions(),
        "notes": list(setup.data.notes),
    }
    summary["detector"] = (None if co.detector is None else
                           {"name": cfg.detection.name, **co.detection_counts.to_dict()})
    primary = co.last_server if co.last_server is not None else co.last_federated
    if primary is not None:
        summary["clinical"] = _clinical_block(setup, primary.clean)
    summary["per_hospital_clinical"] = {
        str(pid): {k: v for k, v in _clinical_block(setup, e.counts.clean).items() if k != "per_class"}
        for pid, e in sorted(co.last_eval.items()) if e.counts is not None and e.counts.clean.count}
    if twin is not None:
        asr, clean = summary["attack_success_rate"], twin["attack_success_rate"]
        summary["attack_success_rate_clean"] = clean
        summary["attack_success_lift"] = asr - clean if asr is not None and clean is not None else None
        summary["clean_twin"] = {"clean_accuracy": twin["clean_accuracy"], "attack_success_rate": clean}
    summary["backdoor_lifespan"] = backdoor_lifespan(co, summary["attack_rounds"])
    summary.update(evasion_summary(co))
    summary.update(co.privacy_summary())
    from ..privacy.audit import membership_audit

    try:
        summary["membership_inference"] = membership_audit(setup, co.global_model(), co.mia_audits)
    except (KeyError, TypeError, ValueError):  # a malformed audit from a hospital
        summary["membership_inference"] = None
    summary["reconstruction"] = reconstruction_summary(co)
    from ..privacy.report import privacy_report

    summary["privacy_report"] = privacy_report(
        {h.id: h.name for h in setup.data.hospitals}, cfg.privacy.model_dump(mode="json"),
        epsilons=co.epsilons, run_privacy={k: summary.get(k) for k in ("epsilon", "delta", "epsilon_note")},
        membership=summary["membership_inference"], reconstruction=summary["reconstruction"])
    from ..sanity import run_warnings

    summary["warnings"] = run_warnings(co, summary)
    return summary


def reconstruction_summary(co) -> dict[str, Any] | None:
    """The curious server's reconstruction audit (``[reconstruction]``): its scores beside
    the baseline's, label accuracy and settings (``privacy.reconstruction.run``), a
    ``skipped`` reason when it could not run, None when not asked for."""
    r = co.cfg.reconstruction
    if not r.enabled:
        return None
    if co.reconstruction is not None:
        return co.reconstruction
    from ..privacy.reconstruction.run import skipped

    return skipped(f"hospital {r.target_hospital} sent no valid update in rounds {r.round}.."
                   f"{co.cfg.experiment.rounds}")


def evasion_summary(co) -> dict[str, Any]:
    """summary.json keys of the last evasion evaluation (the final model): the tidy rows
    (one per attack and eps, plus the worst case), and per eps the worst-case robust
    accuracy overall and per hospital, the positive class's sensitivity under attack, the
    targeted success rate and the detection rate when a detector ran."""
    ev = co.evasion
    if ev is None:
        return {"evasion": None, "robust_accuracy": None, "per_hospital_robust_accuracy": {}}
    from ..evasion.report import WORST_CASE

    def worst(rows):
        attacks = {r["attack"] for r in rows}
        w = WORST_CASE if WORST_CASE in attacks else next(iter(attacks), None)
        return {f"{r['eps']:g}": r for r in rows if r["attack"] == w}

    primary = ev["server"] if ev["server"] is not None else ev["combined"]
    top = worst(primary)
    cfg = co.cfg.evasion

    def light(rows):
        return [{k: v for k, v in r.items() if not k.startswith("confusion")} for r in rows]

    return {
        "evasion": {"round": ev["round"], "evaluated_on": "server" if ev["server"] is not None else "hospitals",
                    "norm": cfg.norm, "steps": cfg.steps, "targeted": cfg.targeted,
                    "target_label": cfg.target_label, "attacks": list(cfg.attacks), "rows": light(primary),
                    "per_hospital": {str(p): light(rows) for p, rows in sorted(ev["hospitals"].items())}},
        "robust_accuracy": {e: r["robust_accuracy"] for e, r in top.items()},
        "clean_accuracy_evasion_rows": {e: r["clean_accuracy"] for e, r in top.items()},
        "robust_sensitivity": {e: r["sensitivity_robust"] for e, r in top.items()},
        "targeted_evasion_success_rate": ({e: r["targeted_success_rate"] for e, r in top.items()}
                                          if cfg.targeted else None),
        "evasion_detection_rate": ({e: r.get("detection_rate") for e, r in top.items()}
                                   if cfg.detector != "none" else None),
        "per_hospital_robust_accuracy": {str(p): {e: r["robust_accuracy"] for e, r in worst(rows).items()}
                                         for p, rows in sorted(ev["hospitals"].items())},
    }


def backdoor_lifespan(co, attack_rounds: list[int]) -> dict[str, Any] | None:
    """How long a backdoor outlives its attackers (BackFed / FLPoison's durability):
    after the last round the attackers acted, the rounds until the attack's success lift
    over the clean twin (its success itself without a twin) first falls below
    ``experiment.lifespan_threshold``, and the mean lift over those rounds (the area under
    the curve per round). ``rounds_to_fade`` is None (``censored``) when it never fell
    below within the run; ``planted`` says whether the measure reached the threshold in the
    last attack round (``at_last_attack``): a backdoor never planted also "fades" after one
    round. None without a targeted attack or rounds after the window."""
    if co.setup.attack is None or co.setup.attack.target_label is None or not attack_rounds:
        return None
    last = max(attack_rounds)
    after = [r for r in co.rounds if r["round"] > last]
    key = "attack_success_lift" if co.twin_asr else "attack_success_rate"
    curve = [r[key] for r in after if r[key] == r[key]]  # NaN-free
    if not curve:
        return None
    th = co.cfg.experiment.lifespan_threshold
    fade = next((i + 1 for i, v in enumerate(curve) if v < th), None)
    at_last = next((r[key] for r in co.rounds if r["round"] == last and r[key] == r[key]), None)
    return {"measure": key, "threshold": th, "last_attack_round": last, "rounds_after": len(curve),
            "at_last_attack": at_last, "planted": at_last is not None and at_last >= th,
            "rounds_to_fade": fade, "censored": fade is None, "mean_after": float(np.mean(curve)),
            "area_after": float(np.sum(curve)), "curve": curve}
