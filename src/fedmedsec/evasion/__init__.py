"""Evasion at the bedside: test-time adversarial examples against the final federated
model (FGSM, PGD, APGD / AutoAttack), robust accuracy per hospital as summable counts,
feature-squeezing detection, and federated adversarial training hooks."""

from .adversarial import adversarial_batch, adversarial_training_hooks
from .attacks import (
    ATTACK_NAMES,
    EVASION_ATTACKS,
    apgd,
    attack_mode,
    check_attacks,
    default_step_size,
    fgsm,
    pgd,
    project,
    run_attack,
)
from .config import DEFAULT_ADVERSARIAL_EPS, DEFAULT_EPS, AdversarialTrainingConfig, EvasionConfig
from .detection import (
    DetectionResult,
    feature_squeezing_detection,
    fit_threshold,
    squeezers_for,
    squeezing_scores,
)
from .domain import InputDomain, domain_for, resolve_immutable
from .report import WORST_CASE, combine_reports, robustness_report

__all__ = [
    "ATTACK_NAMES", "EVASION_ATTACKS", "InputDomain", "domain_for", "resolve_immutable",
    "fgsm", "pgd", "apgd", "project", "run_attack", "check_attacks", "attack_mode",
    "default_step_size", "robustness_report", "combine_reports", "WORST_CASE",
    "DetectionResult", "feature_squeezing_detection", "fit_threshold", "squeezers_for",
    "squeezing_scores", "adversarial_batch", "adversarial_training_hooks",
    "EvasionConfig", "AdversarialTrainingConfig", "DEFAULT_EPS", "DEFAULT_ADVERSARIAL_EPS",
]
