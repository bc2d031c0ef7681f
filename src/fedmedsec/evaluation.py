"""Evaluation of the global model as counts that add up across hospitals.

Every evaluation, the server's on its own held-out test set and each hospital's on its own
test split, produces ``metrics.ClassificationCounts`` (confusion matrix, score histograms,
loss): of the clean inputs, and for a targeted attack of the triggered eligible inputs.
Merged counts give the same accuracy, clinical metrics and attack success as the pooled
records, so a data-free server can report them from what hospitals send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from .metrics import ClassificationCounts, attack_success_rate, clinical_metrics, counts_from_logits, merge
from .metrics import targeted_miss_rate as _miss_rate
from .training import predict

if TYPE_CHECKING:
    from .attacks import Attack
    from .experiment import Setup


@dataclass(frozen=True)
class EvalCounts:
    """One evaluation: ``clean`` counts of the test records, ``trigger`` counts of the
    triggered eligible records (None without a targeted attack), ``robustness`` the
    evasion rows (``evasion.report``, summable counts) on the rounds evasion runs."""

    clean: ClassificationCounts
    trigger: ClassificationCounts | None = None
    robustness: list[dict] | None = None
    mia: dict | None = None  # the hospital's membership-inference audit (final round)

    def to_dict(self) -> dict[str, Any]:
        return {"clean": self.clean.to_dict(), "trigger": None if self.trigger is None else self.trigger.to_dict()}


def counts(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int) -> ClassificationCounts:
    """Counts of ``model`` on (x [N, ...], y [N])."""
    logits = predict(model, x) if len(y) else np.zeros((0, num_classes), np.float32)
    return counts_from_logits(logits, y, num_classes)


def trigger_counts(setup: Setup, model: nn.Module, x: np.ndarray, y: np.ndarray,
                   attack: Attack | None = None) -> ClassificationCounts | None:
    """Counts of ``model`` on the attack's triggered copies of the eligible records of (x, y)
    (those whose true label is not the target); None for untargeted attacks. ``attack``
    defaults to the setup's (the clean twin passes the attacked run's)."""
    attack = attack if attack is not None else setup.attack
    if attack is None or attack.target_label is None or len(y) == 0:
        return None
    got = attack.asr_inputs(x, y, setup.attack_context())
    if got is None:
        return None
    x_eval, eligible = got
    return counts(model, x_eval[eligible], y[eligible], setup.data.num_classes)


def evaluate_records(setup: Setup, model: nn.Module, x: np.ndarray, y: np.ndarray,
                     attack: Attack | None = None) -> EvalCounts:
    """Clean and triggered counts of ``model`` on one set of records."""
    return EvalCounts(counts(model, x, y, setup.data.num_classes),
                      trigger_counts(setup, model, x, y, attack))


def server_evaluation(setup: Setup, model: nn.Module) -> EvalCounts | None:
    """The server's evaluation on its own held-out test set; None when it holds none."""
    d = setup.data
    if d.x_test is None or len(d.y_test) == 0:
        return None
    return evaluate_records(setup, model, d.x_test, d.y_test)


def merged(evals: list[EvalCounts]) -> EvalCounts | None:
    """The sum of several hospitals' evaluations (federated evaluation)."""
    if not evals:
        return None
    triggers = [e.trigger for e in evals if e.trigger is not None]
    return EvalCounts(merge([e.clean for e in evals]), merge(triggers) if triggers else None)


def round_metrics(setup: Setup, ev: EvalCounts | None) -> dict[str, float | None]:
    """The per-round numbers of one evaluation: accuracy, loss, balanced accuracy, AUROC,
    the positive class's sensitivity and specificity, attack success and the share of
    triggered positives the model calls negative (a missed diagnosis)."""
    out: dict[str, float | None] = dict.fromkeys(
        ("clean_accuracy", "test_loss", "balanced_accuracy", "auroc", "sensitivity", "specificity",
         "attack_success_rate", "triggered_miss_rate"))
    if ev is None:
        return out
    d = setup.data
    m = clinical_metrics(ev.clean, d.positive_label, d.class_names)
    out.update(clean_accuracy=m["accuracy"], test_loss=m["loss"], balanced_accuracy=m["balanced_accuracy"],
               auroc=m["auroc"], sensitivity=m["sensitivity"], specificity=m["specificity"])
    attack = setup.attack
    if ev.trigger is not None and attack is not None:
        out["attack_success_rate"] = attack_success_rate(ev.trigger, attack.target_label)
        out["triggered_miss_rate"] = triggered_miss_rate(setup, ev.trigger)
    return out


def triggered_miss_rate(setup: Setup, trigger: ClassificationCounts) -> float | None:
    """Among triggered records of the positive class (e.g. malignant), the share the model
    calls the attack's target; None unless the target is another class than the positive."""
    pos, attack = setup.data.positive_label, setup.attack
    if pos is None or attack is None or attack.target_label in (None, pos):
        return None
    return _miss_rate(trigger, pos, attack.target_label)


def clinical(setup: Setup, c: ClassificationCounts) -> dict[str, Any]:
    """The summary's clinical block of one set of counts."""
    d = setup.data
    m = clinical_metrics(c, d.positive_label, d.class_names)
    names = d.class_names or [str(k) for k in range(d.num_classes)]
    m["positive_class"] = names[m["positive_label"]] if m["positive_label"] is not None else None
    return m


def robustness(setup: Setup, model: nn.Module, x: np.ndarray, y: np.ndarray, server_round: int,
               key: int, x_calibration: np.ndarray | None = None) -> list[dict]:
    """Evasion rows of ``model`` on (x, y) under ``[evasion]`` (FGSM / PGD / APGD at each
    eps, in the modality's units and valid range; ``evasion.report.robustness_report``).
    ``key`` keys the random starts (a partition id; the server uses the number of hospitals)."""
    from .evasion.report import robustness_report
    from .streams import Stream

    ev, d = setup.cfg.evasion, setup.data
    if len(y) == 0:
        return []
    positive = ev.positive_label if ev.positive_label is not None else d.positive_label
    if positive is None:
        positive = 1 if d.num_classes == 2 else 0
    return robustness_report(
        model, x, y, attacks=ev.attacks, eps_list=ev.eps, norm=ev.norm, steps=ev.steps,
        targeted_label=ev.target_label if ev.targeted else None, domain=setup.input_domain,
        generator=setup.generator(Stream.EVALUATION, server_round, key), positive_label=positive,
        num_classes=d.num_classes, max_records=ev.max_records, detector=ev.detector,
        detector_fpr=ev.detector_fpr, x_calibration=x_calibration)
