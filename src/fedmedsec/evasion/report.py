"""Robust accuracy per hospital, as counts the server can add up.

Robust accuracy at budget eps (Madry et al. 2018; REFERENCES.md): the share of records
(x, y) for which the model is right on every input of S(x) the attack tries. The clean
input is one of them (distance 0), so an already misclassified record is never robust and
robust accuracy <= clean accuracy on the same records, row by row. Per record we keep the
"worse" prediction of the clean and the adversarial input, ranked target hit (targeted
mode, true label != target) > error > correct; the worst-case row over several attacks
folds the same rule over all of them (a record is robust only if no attack fooled it).

Targeted mode (``targeted_label = t``, e.g. malignant -> benign): only records with
y != t count for the success rate, success = prediction t; ``clean_target_rate`` is the
same rate on the clean inputs (the clean twin, what the model already gets "wrong" that
way). Sensitivity = recall of ``positive_label`` (e.g. malignant) on the clean and the
attacked inputs.

Every rate is a ratio of counts in the row (``correct_*``, ``n``, ``positive_*``,
``target_*``, the C x C confusion matrices with rows = true class, columns = prediction,
the detector's counts), so federated evaluation sums the hospitals' counts per
(attack, norm, eps, targeted) key and recomputes the rates: :func:`combine_reports`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .attacks import Norm, attack_mode, check_attacks, run_attack
from .detection import feature_squeezing_detection, squeezers_for
from .domain import InputDomain, domain_for

__all__ = ["robustness_report", "combine_reports", "WORST_CASE", "COUNT_KEYS", "rates_from_counts"]

WORST_CASE = "worst_case"
#: keys that add up across hospitals (the confusion matrices add elementwise)
COUNT_KEYS = (
    "n", "correct_clean", "correct_robust", "positive_total", "positive_hit_clean",
    "positive_hit_robust", "target_eligible", "target_hits_clean", "target_hits_robust",
    "n_successful", "detected", "false_positives", "n_calibration",
)
_KEY = ("attack", "norm", "eps", "steps", "targeted", "target_label", "positive_label")


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with attack_mode(model):
        return torch.cat([model(x[s: s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)]
                         or [torch.zeros(0, dtype=torch.long)])


def _rank(pred: Tensor, y: Tensor, target: int | None) -> Tensor:
    """2 = target hit (y != target), 1 = error, 0 = correct."""
    r = (pred != y).long()
    if target is not None:
        r = torch.where((pred == target) & (y != target), torch.full_like(r, 2), r)
    return r


def _worse(p_a: Tensor, p_b: Tensor, y: Tensor, target: int | None) -> Tensor:
    return torch.where(_rank(p_b, y, target) > _rank(p_a, y, target), p_b, p_a)


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def rates_from_counts(row: dict) -> dict:
    """Recompute every rate of a row from its counts (in place and returned)."""
    row["clean_accuracy"] = _div(row["correct_clean"], row["n"])
    row["robust_accuracy"] = _div(row["correct_robust"], row["n"])
    row["sensitivity_clean"] = _div(row["positive_hit_clean"], row["positive_total"])
    row["sensitivity_robust"] = _div(row["positive_hit_robust"], row["positive_total"])
    if row["targeted"]:
        row["targeted_success_rate"] = _div(row["target_hits_robust"], row["target_eligible"])
        row["clean_target_rate"] = _div(row["target_hits_clean"], row["target_eligible"])
    else:
        row["targeted_success_rate"] = row["clean_target_rate"] = None
    if row.get("detector", "none") != "none":
        row["detection_rate"] = _div(row["detected"], row["n_successful"])
        row["detector_false_positive_rate"] = _div(row["false_positives"], row["n_calibration"])
    return row


def _row(attack, norm, eps, steps, y, p_clean, p_final, num_classes, target, positive_label) -> dict:
    conf_c = np.zeros((num_classes, num_classes), dtype=np.int64)
    conf_r = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf_c, (y.numpy(), p_clean.numpy()), 1)
    np.add.at(conf_r, (y.numpy(), p_final.numpy()), 1)
    pos = y == positive_label
    elig = y != target if target is not None else torch.zeros_like(y, dtype=torch.bool)
    row = dict(
        attack=attack, norm=norm, eps=float(eps), steps=int(steps), targeted=target is not None,
        target_label=target, positive_label=int(positive_label),
        n=int(len(y)), correct_clean=int((p_clean == y).sum()), correct_robust=int((p_final == y).sum()),
        positive_total=int(pos.sum()), positive_hit_clean=int((pos & (p_clean == y)).sum()),
        positive_hit_robust=int((pos & (p_final == y)).sum()),
        target_eligible=int(elig.sum()),
        target_hits_clean=int((elig & (p_clean == target)).sum()) if target is not None else 0,
        target_hits_robust=int((elig & (p_final == target)).sum()) if target is not None else 0,
        confusion_clean=conf_c.tolist(), confusion_robust=conf_r.tolist(),
        detector="none",
    )
    return row


def robustness_report(
    model: nn.Module,
    x,
    y,
    *,
    attacks: Sequence[str] = ("fgsm", "pgd", "apgd"),
    eps_list: Sequence[float],
    norm: Norm = "linf",
    steps: int = 10,
    targeted_label: int | None = None,
    modality: str | None = None,
    feature_low=None,
    feature_high=None,
    immutable=None,
    feature_names: Sequence[str] | None = None,
    domain: InputDomain | None = None,
    generator: torch.Generator,
    positive_label: int = 1,
    num_classes: int | None = None,
    max_records: int | None = None,
    detector: str = "none",
    detector_fpr: float = 0.05,
    x_calibration=None,
    backend: str = "auto",
    batch_size: int = 256,
) -> list[dict]:
    """Tidy rows, one per (attack, eps) plus one ``attack = "worst_case"`` row per eps
    (when more than one attack), for ``model`` on (x [N, *input_shape], y [N]).

    The domain comes from ``domain`` or from (modality, feature_low, feature_high,
    immutable, feature_names) via ``domain_for``. ``max_records``: evaluate a random subset
    of that size (drawn from ``generator``; the cost cap per hospital). ``detector =
    "feature_squeezing"`` adds, per row, the detector's counts on the successful
    adversarial inputs (records the attack changed from correct to wrong, or to the target)
    at ``detector_fpr`` on ``x_calibration`` (default: the clean records), and its AUC.
    Keys of each row: attack, norm, eps, steps, targeted, target_label, positive_label, the
    counts of ``COUNT_KEYS``, confusion_clean / confusion_robust (C x C lists), and the
    rates clean_accuracy, robust_accuracy, sensitivity_clean, sensitivity_robust,
    targeted_success_rate, clean_target_rate (None untargeted), detection_rate,
    detector_false_positive_rate, detection_auc, detection_threshold (with a detector)."""
    if detector not in ("none", "feature_squeezing"):
        raise ValueError(f"evasion.detector = {detector!r}: choose feature_squeezing or none")
    x0 = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).detach().float()
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).detach().long().reshape(-1)
    if x0.shape[0] != yt.shape[0]:
        raise ValueError(f"x has {x0.shape[0]} records, y has {yt.shape[0]}")
    if domain is None:
        if modality is None:
            raise ValueError("robustness_report needs a domain or a modality")
        domain = domain_for(modality, tuple(x0.shape[1:]), feature_low, feature_high, immutable,
                            feature_names)
    if max_records is not None and x0.shape[0] > max_records:
        keep = torch.randperm(x0.shape[0], generator=generator)[: int(max_records)].sort().values
        x0, yt = x0[keep], yt[keep]
    if num_classes is None:
        with torch.no_grad(), attack_mode(model):
            num_classes = int(model(x0[:1]).shape[1]) if len(x0) else 2
    check_attacks(list(attacks), num_classes=num_classes, domain=domain,
                  targeted=targeted_label is not None)
    if targeted_label is not None and not 0 <= int(targeted_label) < num_classes:
        raise ValueError(f"evasion.target_label = {targeted_label!r}: must be in 0..{num_classes - 1}")
    if any(not (e >= 0 and math.isfinite(e)) for e in eps_list):
        raise ValueError(f"evasion.eps = {list(eps_list)!r}: every eps must be finite and >= 0")
    t = None if targeted_label is None else int(targeted_label)
    p_clean = _predict(model, x0, batch_size)
    squeezers = squeezers_for(domain.modality) if detector != "none" else None
    x_cal = None if x_calibration is None else torch.as_tensor(np.asarray(x_calibration)).float()
    rows: list[dict] = []
    for eps in eps_list:
        worst = p_clean.clone()
        worst_adv = x0.clone()
        for name in attacks:
            chunks = [run_attack(name, model, x0[s: s + batch_size], yt[s: s + batch_size], eps=float(eps),
                                 norm=norm, steps=steps, domain=domain, targeted_label=t,
                                 generator=generator, backend=backend, num_classes=num_classes)
                      for s in range(0, len(x0), batch_size)]
            x_adv = torch.cat(chunks) if chunks else x0.clone()
            p_adv = _predict(model, x_adv, batch_size)
            p_final = _worse(p_clean, p_adv, yt, t)
            row = _row(name, norm, eps, steps, yt, p_clean, p_final, num_classes, t, positive_label)
            succ = _rank(p_adv, yt, t) > _rank(p_clean, yt, t)
            if squeezers is not None:
                _add_detection(row, model, x0, x_adv[succ], squeezers, detector_fpr, x_cal)
            rows.append(rates_from_counts(row))
            improved = _rank(p_adv, yt, t) > _rank(worst, yt, t)
            worst_adv[improved] = x_adv[improved]
            worst = _worse(worst, p_adv, yt, t)
        if len(attacks) > 1:
            row = _row(WORST_CASE, norm, eps, steps, yt, p_clean, worst, num_classes, t, positive_label)
            if squeezers is not None:
                succ = _rank(worst, yt, t) > _rank(p_clean, yt, t)
                _add_detection(row, model, x0, worst_adv[succ], squeezers, detector_fpr, x_cal)
            rows.append(rates_from_counts(row))
    return rows


def _add_detection(row, model, x_clean, x_succ, squeezers, fpr, x_cal) -> None:
    res = feature_squeezing_detection(model, x_clean, x_succ, squeezers=squeezers, fpr=fpr,
                                      x_calibration=x_cal)
    row.update(detector="feature_squeezing", detector_fpr=fpr, n_successful=res.n_adversarial,
               detected=res.detected, false_positives=res.false_positives,
               n_calibration=res.n_calibration, detection_auc=res.auc,
               detection_threshold=res.threshold)


def combine_reports(reports: Sequence[Sequence[dict]]) -> list[dict]:
    """Sum the hospitals' rows per (attack, norm, eps, steps, targeted, target_label,
    positive_label) and recompute the rates (federated evaluation). Per-hospital values
    that do not add up (detection_auc, detection_threshold) are dropped; ``hospitals``
    counts the reports that had the row."""
    out: dict[tuple, dict] = {}
    for rows in reports:
        for r in rows:
            k = tuple(r[c] for c in _KEY)
            if k not in out:
                out[k] = {c: r[c] for c in _KEY}
                out[k].update({c: 0 for c in COUNT_KEYS}, detector=r.get("detector", "none"),
                              hospitals=0, confusion_clean=None, confusion_robust=None)
                if "detector_fpr" in r:
                    out[k]["detector_fpr"] = r["detector_fpr"]
            agg = out[k]
            agg["hospitals"] += 1
            for c in COUNT_KEYS:
                agg[c] += int(r.get(c, 0))
            for c in ("confusion_clean", "confusion_robust"):
                m = np.asarray(r[c], dtype=np.int64)
                agg[c] = m if agg[c] is None else agg[c] + m
    rows = []
    for agg in out.values():
        agg["confusion_clean"] = agg["confusion_clean"].tolist()
        agg["confusion_robust"] = agg["confusion_robust"].tolist()
        rows.append(rates_from_counts(agg))
    return rows
