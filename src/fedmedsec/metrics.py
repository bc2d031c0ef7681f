"""Clinical metrics from a mergeable sufficient statistic, so that the server and the
hospitals compute them the same way (federated evaluation).

Each hospital evaluates the global model on its own test split and sends
``counts_from_logits(logits, y, C).to_dict()``; the server ``merge``s the counts it receives
and calls ``clinical_metrics`` on the sum (and on each hospital's own counts for the
per-hospital table). Counts add exactly: the merged counts of several hospitals equal the
counts of their concatenated test sets, so federated and pooled metrics agree.

What the counts hold (``ClassificationCounts``):

- ``confusion``: int64 [C, C], rows the true label, columns the predicted one (argmax of the
  logits). Accuracy, balanced accuracy, sensitivity, specificity, PPV and NPV are exact.
- ``hist``: int64 [C, C, B], ``hist[k, t, b]`` = samples of true label t whose class-k score
  falls in bin b. The class-k score is its log-odds ``z_k = log(p_k / (1 - p_k))`` with p the
  softmax, computed stably from the logits as ``l_k - logsumexp_{j != k} l_j``, shifted by
  ``log(C - 1)`` so that a model predicting uniformly scores 0 (binary: the logit difference).
  AUROC depends on the ranking only, and the score is monotone in ``p_k``, so it is the AUROC
  of the softmax probabilities - without their float saturation at 0 and 1, where a
  confident model's probabilities tie in float32.
- ``loss_sum`` (float64 sum of per-sample cross-entropy) and ``nonfinite`` (samples whose
  logits had a NaN or infinity: a diverged model; their scores go to the middle bin and their
  prediction is the argmax over the finite logits, or class 0).

Binning (fixed, so every party bins alike): B = 4096 bins uniform in
``asinh(z / SCALE)`` over ``|z| <= LIMIT`` (SCALE = 1e-3, LIMIT = 1e4; clipped outside).
Near z = 0 the bins are 7e-5 wide in log-odds, so an untrained model whose logits differ by
1e-3 is still resolved; for |z| > 1 a bin is 0.8 % of |z| wide, so the bins scale with the
model's confidence. Bins on p saturate near 0 and 1, bins uniform on a clipped log-odds range
either lose confident models (clip) or untrained ones (width). Measured AUROC error against
the exact value on 5000 samples: <= 1e-4 for Gaussian, heavy-tailed, imbalanced and
saturated (|z| ~ 80) scores, 5e-5 for scores of scale 1e-3.

AUROC is scikit-learn's ``roc_auc_score`` over the bins (bin centers as scores, bin counts as
``sample_weight``): samples sharing a bin count as ties (half credit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: number of score bins, the asinh scale and the clip limit of the log-odds (see module doc)
BINS = 4096
SCALE = 1e-3
LIMIT = 1e4
_T = math.asinh(LIMIT / SCALE)


def score_bin(z: np.ndarray) -> np.ndarray:
    """Bin index int64 in [0, BINS) of log-odds ``z`` (any shape; NaN -> the middle bin)."""
    z = np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0)
    t = np.arcsinh(np.clip(z, -LIMIT, LIMIT) / SCALE)
    return np.clip(np.floor((t + _T) / (2 * _T) * BINS), 0, BINS - 1).astype(np.int64)


def bin_centers() -> np.ndarray:
    """Float64 [BINS]: the centered log-odds at the center of each bin (monotone increasing)."""
    t = (np.arange(BINS) + 0.5) / BINS * (2 * _T) - _T
    return SCALE * np.sinh(t)


@dataclass(frozen=True, eq=False)
class ClassificationCounts:
    """Sufficient statistic of a classifier's evaluation on a labelled set (see module doc).

    confusion: int64 [C, C] (true, predicted). hist: int64 [C, C, BINS] (score class, true
    class, bin). loss_sum: float sum of cross-entropy. nonfinite: samples with non-finite logits.
    The number of samples is ``confusion.sum()``. Add with ``+`` or ``merge``.
    """

    confusion: np.ndarray
    hist: np.ndarray
    loss_sum: float = 0.0
    nonfinite: int = 0

    def __post_init__(self) -> None:
        c = self.confusion
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
            raise ValueError(f"confusion must be [C, C] with C >= 2, got {c.shape}")
        if self.hist.shape != (c.shape[0], c.shape[0], BINS):
            raise ValueError(f"hist must be [C, C, {BINS}] for C={c.shape[0]}, got {self.hist.shape}")

    @property
    def num_classes(self) -> int:
        return int(self.confusion.shape[0])

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @classmethod
    def zeros(cls, num_classes: int) -> ClassificationCounts:
        """The counts of an empty set (the identity of ``+``)."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        return cls(np.zeros((num_classes, num_classes), np.int64),
                   np.zeros((num_classes, num_classes, BINS), np.int64))

    def __add__(self, other: ClassificationCounts) -> ClassificationCounts:
        if not isinstance(other, ClassificationCounts):
            return NotImplemented
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge counts of {self.num_classes} and {other.num_classes} classes")
        return ClassificationCounts(self.confusion + other.confusion, self.hist + other.hist,
                                    self.loss_sum + other.loss_sum, self.nonfinite + other.nonfinite)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassificationCounts):
            return NotImplemented
        return (np.array_equal(self.confusion, other.confusion) and np.array_equal(self.hist, other.hist)
                and self.nonfinite == other.nonfinite
                and (self.loss_sum == other.loss_sum
                     or (math.isnan(self.loss_sum) and math.isnan(other.loss_sum))))

    def to_dict(self) -> dict[str, Any]:
        """Flat ints and floats (Flower ``MetricRecord`` / JSON friendly). The histogram is
        sparse: ``hist_index`` (flat indices into [C, C, BINS]) and ``hist_count``, at most
        N * C entries for N samples instead of C * C * 4096."""
        flat = self.hist.reshape(-1)
        nz = np.flatnonzero(flat)
        return {
            "num_classes": self.num_classes,
            "bins": BINS,
            "confusion": [int(v) for v in self.confusion.reshape(-1)],
            "hist_index": [int(v) for v in nz],
            "hist_count": [int(v) for v in flat[nz]],
            "loss_sum": float(self.loss_sum),
            "nonfinite": int(self.nonfinite),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassificationCounts:
        """Inverse of ``to_dict``; a mismatched size or binning is a ValueError."""
        C = int(d["num_classes"])
        if int(d.get("bins", BINS)) != BINS:
            raise ValueError(f"counts use {d['bins']} score bins; this version uses {BINS}")
        if C < 2:
            raise ValueError(f"num_classes must be >= 2, got {C}")
        conf = np.asarray(d["confusion"], dtype=np.int64)
        if conf.size != C * C:
            raise ValueError(f"confusion has {conf.size} entries for num_classes={C}")
        idx = np.asarray(d["hist_index"], dtype=np.int64)
        cnt = np.asarray(d["hist_count"], dtype=np.int64)
        if idx.shape != cnt.shape or (idx.size and (idx.min() < 0 or idx.max() >= C * C * BINS)):
            raise ValueError("hist_index and hist_count must be equally long indices into [C, C, bins]")
        hist = np.zeros(C * C * BINS, np.int64)
        np.add.at(hist, idx, cnt)
        return cls(conf.reshape(C, C), hist.reshape(C, C, BINS),
                   float(d.get("loss_sum", 0.0)), int(d.get("nonfinite", 0)))


def log_odds(logits: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float64 [N, C]: ``z_k = log(p_k / (1 - p_k)) = l_k - logsumexp_{j != k} l_j`` for the
    softmax p of ``logits: [N, C]`` (non-finite logits give NaN rows)."""
    L = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    N, C = L.shape
    out = np.empty((N, C))
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(C):
            rest = np.delete(L, k, axis=1)
            m = rest.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(rest - m).sum(axis=1))
            out[:, k] = L[:, k] - lse
    bad = ~np.isfinite(L).all(axis=1)
    out[bad] = np.nan
    return out


def counts_from_logits(logits: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | Sequence[int],
                       num_classes: int) -> ClassificationCounts:
    """ClassificationCounts of ``logits: [N, C] float`` against labels ``y: [N] int`` in [0, C)."""
    L = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    yy = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64).reshape(-1)
    if L.ndim != 2 or L.shape[1] != num_classes:
        raise ValueError(f"logits must be [N, {num_classes}], got {L.shape}")
    if L.shape[0] != yy.shape[0]:
        raise ValueError(f"logits have {L.shape[0]} rows for {yy.shape[0]} labels")
    if yy.size and (yy.min() < 0 or yy.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{yy.min()}, {yy.max()}]")
    out = ClassificationCounts.zeros(num_classes)
    N, C = L.shape
    if N == 0:
        return out
    finite = np.isfinite(L).all(axis=1)
    pred = np.where(np.isnan(L), -np.inf, L).argmax(axis=1)
    conf = np.bincount(yy * C + pred, minlength=C * C).reshape(C, C)
    z = log_odds(L) + math.log(C - 1)  # centered: 0 for a uniform prediction
    b = score_bin(z)  # [N, C]
    k = np.broadcast_to(np.arange(C), (N, C))
    t = np.broadcast_to(yy[:, None], (N, C))
    hist = np.bincount(((k * C + t) * BINS + b).reshape(-1), minlength=C * C * BINS).reshape(C, C, BINS)
    # cross-entropy -log softmax_y = logsumexp(l) - l_y; NaN/inf for non-finite rows
    with np.errstate(invalid="ignore", over="ignore"):
        m = L.max(axis=1)
        lse = m + np.log(np.exp(L - m[:, None]).sum(axis=1))
        loss = lse - L[np.arange(N), yy]
    return ClassificationCounts(conf.astype(np.int64), hist.astype(np.int64),
                                float(math.fsum(loss)) if finite.all() else float(np.sum(loss)),
                                int((~finite).sum()))


def merge(counts: Iterable[ClassificationCounts]) -> ClassificationCounts:
    """The sum of several counts (at least one; all with the same number of classes)."""
    items = list(counts)
    if not items:
        raise ValueError("merge needs at least one ClassificationCounts")
    out = items[0]
    for c in items[1:]:
        out = out + c
    return out


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """roc_auc_score over bins with counts ``pos``, ``neg`` (None if one side is empty)."""
    from sklearn.metrics import roc_auc_score  # local import: sklearn is slow to import

    if pos.sum() == 0 or neg.sum() == 0:
        return None
    c = bin_centers()
    mp, mn = pos > 0, neg > 0
    y = np.r_[np.ones(mp.sum()), np.zeros(mn.sum())]
    s = np.r_[c[mp], c[mn]]
    w = np.r_[pos[mp], neg[mn]].astype(np.float64)
    return float(roc_auc_score(y, s, sample_weight=w))


def class_auroc(counts: ClassificationCounts, k: int) -> float | None:
    """One-vs-rest AUROC of class k (its log-odds as the score); None if class k, or every
    other class, is absent from the labels."""
    h = counts.hist[k]
    pos = h[k]
    neg = h.sum(axis=0) - pos
    return _auroc(pos, neg)


def clinical_metrics(counts: ClassificationCounts, positive_label: int | str | None = None,
                     class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class sensitivity/specificity/PPV/AUROC, the positive
    class's sensitivity/specificity/PPV/NPV, AUROC and mean loss from counts.

    With TP, FN, FP, TN of class k against the rest (rows of ``confusion`` are true labels):
    sensitivity (recall, TPR) = TP / (TP + FN); specificity (TNR) = TN / (TN + FP);
    PPV (precision) = TP / (TP + FP); NPV = TN / (TN + FN). Balanced accuracy = the mean
    sensitivity over the classes present in the labels (scikit-learn's
    ``balanced_accuracy_score``). ``auroc``: binary (C = 2) the positive class's AUROC;
    otherwise the unweighted mean of the one-vs-rest AUROCs over the classes whose AUROC is
    defined (scikit-learn's ``multi_class="ovr", average="macro"`` when all are present).

    positive_label: the class of interest, an index or one of ``class_names`` (e.g.
    "malignant": index 0 in WDBC and BreastMNIST, so the binary default of 1 is wrong there);
    default 1 for binary tasks, None otherwise (then the positive-class keys are None). Every
    ratio whose denominator is zero is None (a class absent from the labels has no
    sensitivity; AUROC needs both sides).
    """
    C = counts.num_classes
    if class_names is not None and len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} names for {C} classes")
    names = [str(n) for n in class_names] if class_names is not None else [str(k) for k in range(C)]
    if isinstance(positive_label, str):
        if positive_label not in names:
            raise ValueError(f"positive_label {positive_label!r} is not a class; choose one of {', '.join(names)}")
        positive_label = names.index(positive_label)
    if positive_label is None and C == 2:
        positive_label = 1
    if positive_label is not None and not 0 <= positive_label < C:
        raise ValueError(f"positive_label must lie in [0, {C}), got {positive_label}")
    M = counts.confusion.astype(np.int64)
    n = int(M.sum())
    support = M.sum(axis=1)
    predicted = M.sum(axis=0)
    per_class: dict[str, dict[str, Any]] = {}
    recalls, aurocs = [], []
    for k in range(C):
        tp = int(M[k, k])
        fn = int(support[k] - tp)
        fp = int(predicted[k] - tp)
        tn = n - tp - fn - fp
        sens = _ratio(tp, tp + fn)
        auc = class_auroc(counts, k)
        per_class[names[k]] = {
            "support": int(support[k]), "sensitivity": sens, "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "auroc": auc,
        }
        if sens is not None:
            recalls.append(sens)
        if auc is not None:
            aurocs.append(auc)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": _ratio(float(np.trace(M)), n),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "loss": _ratio(counts.loss_sum, n),
        "nonfinite": counts.nonfinite,
        "macro_auroc": float(np.mean(aurocs)) if aurocs else None,
        "positive_label": positive_label,
        "sensitivity": None, "specificity": None, "ppv": None, "npv": None,
        "per_class": per_class,
    }
    if out["loss"] is not None and not math.isfinite(out["loss"]):
        out["loss"] = None
    if positive_label is not None:
        pc = per_class[names[positive_label]]
        out.update({k: pc[k] for k in ("sensitivity", "specificity", "ppv", "npv")})
    # binary: z_0 = -z_1, so both classes' AUROCs are equal; report the positive class's
    out["auroc"] = per_class[names[positive_label]]["auroc"] if C == 2 else out["macro_auroc"]
    return out


def targeted_miss_rate(counts: ClassificationCounts, positive_label: int,
                       negative_label: int | None = None) -> float | None:
    """Missed diagnoses under a targeted attack: among the samples whose true label is
    ``positive_label`` (e.g. malignant; counts computed on triggered inputs), the share the
    model calls ``negative_label`` (e.g. benign, the attack's target), or any other class when
    ``negative_label`` is None. Equals 1 - sensitivity of the positive class when
    ``negative_label`` is None. None when no positive sample was counted."""
    C = counts.num_classes
    if not 0 <= positive_label < C or (negative_label is not None and not 0 <= negative_label < C):
        raise ValueError(f"positive_label and negative_label must lie in [0, {C})")
    row = counts.confusion[positive_label]
    total = int(row.sum())
    missed = int(row[negative_label]) if negative_label is not None else total - int(row[positive_label])
    return _ratio(missed, total)


def attack_success_rate(counts: ClassificationCounts, target_label: int) -> float | None:
    """Attack success from counts on triggered inputs: the share of samples whose true label
    is not ``target_label`` that the model classifies as ``target_label`` (REFERENCES.md,
    BadNets ASR). None when every counted sample has the target label."""
    C = counts.num_classes
    if not 0 <= target_label < C:
        raise ValueError(f"target_label must lie in [0, {C}), got {target_label}")
    M = counts.confusion
    others = np.arange(C) != target_label
    total = int(M[others].sum())
    return _ratio(int(M[others, target_label].sum()), total)
