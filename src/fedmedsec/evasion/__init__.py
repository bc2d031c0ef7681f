"""Evasion at the bedside: test-time adversarial examples against the final federated
model (FGSM, PGD, APGD / AutoAttack), robust accuracy per hospital as summable counts,
feature-squeezing detection, and federated adversarial training hooks."""

import importlib

#: public name -> submodule; imported on first use so that ``fedmedsec.config`` (which
#: mounts EvasionConfig) does not import torch
_WHERE = {
    "adversarial_batch": "adversarial", "adversarial_training_hooks": "adversarial",
    "ATTACK_NAMES": "config", "EVASION_ATTACKS": "attacks", "apgd": "attacks", "attack_mode": "attacks",
    "check_attacks": "attacks", "default_step_size": "attacks", "fgsm": "attacks", "pgd": "attacks",
    "project": "attacks", "run_attack": "attacks",
    "DEFAULT_ADVERSARIAL_EPS": "config", "DEFAULT_EPS": "config", "AdversarialTrainingConfig": "config",
    "EvasionConfig": "config",
    "DetectionResult": "detection", "feature_squeezing_detection": "detection", "fit_threshold": "detection",
    "squeezers_for": "detection", "squeezing_scores": "detection",
    "InputDomain": "domain", "domain_for": "domain", "resolve_immutable": "domain",
    "WORST_CASE": "report", "combine_reports": "report", "robustness_report": "report",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTACK_NAMES", "EVASION_ATTACKS", "InputDomain", "domain_for", "resolve_immutable",
    "fgsm", "pgd", "apgd", "project", "run_attack", "check_attacks", "attack_mode",
    "default_step_size", "robustness_report", "combine_reports", "WORST_CASE",
    "DetectionResult", "feature_squeezing_detection", "fit_threshold", "squeezers_for",
    "squeezing_scores", "adversarial_batch", "adversarial_training_hooks",
    "EvasionConfig", "AdversarialTrainingConfig", "DEFAULT_EPS", "DEFAULT_ADVERSARIAL_EPS",
]
