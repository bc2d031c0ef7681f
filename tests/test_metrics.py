"""Clinical metrics from mergeable counts (fedmedsec.metrics) against scikit-learn on the raw
predictions and against brute-force loops written from the definitions."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fedmedsec.metrics import (
    ClassificationCounts,
    attack_success_rate,
    class_auroc,
    clinical_metrics,
    counts_from_logits,
    log_odds,
    merge,
    score_bin,
    targeted_miss_rate,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def evaluations(draw, min_n=1, max_n=60):
    """(logits float32 [N, C], y [N], C) from seeded draws; scale spans untrained to saturated."""
    C = draw(st.integers(2, 5))
    N = draw(st.integers(min_n, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 100.0]))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    logits = (rng.normal(size=(N, C)) + 2.0 * np.eye(C)[y] * draw(st.floats(0, 2))) * scale
    return logits.astype(np.float32), y, C


def brute_force_rates(pred, y, k):
    """(sensitivity, specificity, ppv, npv) of class k vs the rest by counting samples."""
    tp = sum(1 for p, t in zip(pred, y) if t == k and p == k)
    fn = sum(1 for p, t in zip(pred, y) if t == k and p != k)
    fp = sum(1 for p, t in zip(pred, y) if t != k and p == k)
    tn = sum(1 for p, t in zip(pred, y) if t != k and p != k)
    r = lambda a, b: a / b if b else None
    return r(tp, tp + fn), r(tn, tn + fp), r(tp, tp + fp), r(tn, tn + fn)


@SETTINGS
@given(evaluations())
def test_confusion_metrics_are_exact(ev):
    """Accuracy, balanced accuracy and per-class rates equal sklearn / brute force exactly."""
    logits, y, C = ev
    pred = logits.argmax(1)
    c = counts_from_logits(logits, y, C)
    assert np.array_equal(c.confusion, confusion_matrix(y, pred, labels=range(C)))
    m = clinical_metrics(c)
    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    with warnings.catch_warnings():  # sklearn warns when y_pred has classes not in y_true
        warnings.simplefilter("ignore")
        ba = balanced_accuracy_score(y, pred)
    assert m["balanced_accuracy"] == pytest.approx(ba, abs=1e-12)
    rec = recall_score(y, pred, labels=range(C), average=None, zero_division=np.nan)
    prec = precision_score(y, pred, labels=range(C), average=None, zero_division=np.nan)
    for k in range(C):
        pc = m["per_class"][str(k)]
        sens, spec, ppv, npv = brute_force_rates(pred, y, k)
        for got, want in ((pc["sensitivity"], sens), (pc["specificity"], spec),
                          (pc["ppv"], ppv), (pc["npv"], npv)):
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, abs=1e-15)
        assert (pc["sensitivity"] is None) == math.isnan(rec[k])
        if not math.isnan(rec[k]):
            assert pc["sensitivity"] == pytest.approx(rec[k], abs=1e-15)
        if not math.isnan(prec[k]):
            assert pc["ppv"] == pytest.approx(prec[k], abs=1e-15)
    ce = -np.log(np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))[np.arange(len(y)), y]
                 / np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True)).sum(1))
    assert m["loss"] == pytest.approx(ce.mean(), rel=1e-9, abs=1e-12)


def test_binary_positive_class_metrics():
    """Binary: the positive class's sensitivity/specificity/PPV/NPV; positive_label=0 swaps."""
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    logits = np.stack([-(2.0 * pred - 1), 2.0 * pred - 1], 1)
    c = counts_from_logits(logits, y, 2)
    m = clinical_metrics(c, class_names=["benign", "malignant"])
    assert m["positive_label"] == 1
    assert (m["sensitivity"], m["specificity"], m["ppv"], m["npv"]) == pytest.approx((3 / 4, 3 / 4, 3 / 4, 3 / 4))
    assert set(m["per_class"]) == {"benign", "malignant"}
    m0 = clinical_metrics(c, positive_label=0)
    assert m0["sensitivity"] == m["specificity"] and m0["ppv"] == m["npv"]
    assert clinical_metrics(c, positive_label="benign", class_names=["benign", "malignant"])["ppv"] == m0["ppv"]
    with pytest.raises(ValueError, match="not a class"):
        clinical_metrics(c, positive_label="tumour", class_names=["benign", "malignant"])


def test_multiclass_positive_label_is_one_vs_rest():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 2 * np.eye(4)[y]
    m = clinical_metrics(counts_from_logits(logits, y, 4), positive_label=2)
    assert m["sensitivity"] == m["per_class"]["2"]["sensitivity"]
    assert clinical_metrics(counts_from_logits(logits, y, 4))["sensitivity"] is None


def brute_auroc(pos_scores, neg_scores):
    """Mann-Whitney: P(score_pos > score_neg) + 0.5 P(tie), by looping over all pairs."""
    wins = 0.0
    for a in pos_scores:
        for b in neg_scores:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(pos_scores) * len(neg_scores))


def test_binned_auroc_is_mann_whitney_over_bins():
    """Ties inside a bin get half credit: the binned AUROC equals the brute-force
    Mann-Whitney statistic on the bin indices."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    z = rng.normal(y * 0.5, 1.0) * 1e-3  # small scores: many shared bins
    logits = np.stack([np.zeros_like(z), z], 1)
    b = score_bin(log_odds(logits)[:, 1])
    want = brute_auroc(b[y == 1], b[y == 0])
    got = class_auroc(counts_from_logits(logits, y, 2), 1)
    assert got == pytest.approx(want, abs=1e-12)


def _binary_case(name, rng, n):
    y = (rng.random(n) < (0.03 if name == "imbalanced" else 0.5)).astype(int)
    s = 2 * y - 1
    z = {
        "random": rng.normal(size=n),
        "realistic": rng.normal(3.0 * s, 2.0),
        "saturated": rng.normal(40.0 * s, 20.0),
        "very_saturated": rng.normal(300.0 * s, 200.0),
        "untrained": rng.normal(1e-3 * y, 1e-3),
        "heavy_tailed": rng.standard_t(2, n) * 5 + 3 * y,
        "imbalanced": rng.normal(2.0 * y, 1.5),
    }[name]
    return z, y


@pytest.mark.parametrize("name", ["random", "realistic", "saturated", "very_saturated", "untrained",
                                  "heavy_tailed", "imbalanced"])
def test_binary_auroc_close_to_exact(name):
    """Binned AUROC within 1e-3 of sklearn's exact AUROC on the float64 logit difference."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    for _ in range(3):
        z, y = _binary_case(name, rng, 4000)
        logits = np.stack([-z / 2, z / 2], 1).astype(np.float32)
        exact = roc_auc_score(y, logits[:, 1].astype(np.float64) - logits[:, 0])
        m = clinical_metrics(counts_from_logits(logits, y, 2))
        assert abs(m["auroc"] - exact) < 1e-3, (name, m["auroc"], exact)


def test_saturated_probabilities_tie_but_log_odds_do_not():
    """Why bins on log-odds: float32 softmax probabilities of a confident model tie at 1.0
    and lose the ranking; the counts keep AUROC within 1e-3 of the exact value."""
    rng = np.random.default_rng(5)
    z, y = _binary_case("saturated", rng, 4000)
    logits = np.stack([-z / 2, z / 2], 1).astype(np.float32)
    p32 = torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy()
    exact = roc_auc_score(y, logits[:, 1].astype(np.float64) - logits[:, 0])
    assert abs(roc_auc_score(y, p32) - exact) > 1e-3  # the saturation this design avoids
    assert abs(clinical_metrics(counts_from_logits(logits, y, 2))["auroc"] - exact) < 1e-3


@pytest.mark.parametrize("scale", [1e-3, 1.0, 5.0, 60.0])
def test_multiclass_macro_auroc_close_to_exact(scale):
    """Macro one-vs-rest AUROC within 1e-3 of sklearn's on the exact log-odds (per class), and
    of sklearn's multi_class='ovr' on float64 softmax where that does not saturate."""
    rng = np.random.default_rng(int(scale * 1000))
    C, N = 5, 3000
    y = rng.integers(0, C, N)
    logits = ((rng.normal(size=(N, C)) + 1.5 * np.eye(C)[y]) * scale).astype(np.float32)
    z = log_odds(logits)
    exact = np.mean([roc_auc_score(y == k, z[:, k]) for k in range(C)])
    m = clinical_metrics(counts_from_logits(logits, y, C))
    assert abs(m["auroc"] - exact) < 1e-3
    for k in range(C):
        assert abs(m["per_class"][str(k)]["auroc"] - roc_auc_score(y == k, z[:, k])) < 1e-3
    if scale <= 5.0:
        L = logits.astype(np.float64)
        p = np.exp(L - L.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        assert abs(m["auroc"] - roc_auc_score(y, p, multi_class="ovr", average="macro")) < 1e-3


def test_log_odds_is_logit_of_softmax():
    rng = np.random.default_rng(0)
    L = rng.normal(size=(50, 4)) * 3
    p = np.exp(L) / np.exp(L).sum(1, keepdims=True)
    np.testing.assert_allclose(log_odds(L), np.log(p / (1 - p)), rtol=1e-9, atol=1e-9)


def test_absent_class_and_single_class_are_none():
    """A class absent from the labels has no sensitivity and no AUROC; with one class only
    there is no AUROC at all; an empty set has no accuracy."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(30, 3))
    y = np.where(rng.random(30) < 0.5, 0, 1)  # class 2 absent
    m = clinical_metrics(counts_from_logits(logits, y, 3))
    assert m["per_class"]["2"]["sensitivity"] is None and m["per_class"]["2"]["auroc"] is None
    assert m["per_class"]["2"]["specificity"] is not None
    assert m["macro_auroc"] == pytest.approx(np.mean([m["per_class"][k]["auroc"] for k in "01"]))
    one = clinical_metrics(counts_from_logits(logits[:, :2], np.zeros(30, int), 2))
    assert one["auroc"] is None and one["sensitivity"] is None and one["specificity"] is not None
    empty = clinical_metrics(ClassificationCounts.zeros(2))
    assert empty["accuracy"] is None and empty["auroc"] is None and empty["loss"] is None
    assert json.dumps(m)  # no NaN: JSON friendly


def test_nonfinite_logits_do_not_crash():
    """A diverged model (NaN/inf logits) is counted, predicted by its finite logits, and its
    loss is reported as None rather than crashing the evaluation."""
    logits = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 0.0], [0.0, 1.0]])
    y = np.array([1, 1, 0, 0])
    c = counts_from_logits(logits, y, 2)
    assert c.nonfinite == 2 and c.count == 4
    assert c.confusion.tolist() == [[1, 1], [0, 2]]  # the NaN row predicts its finite class 1
    m = clinical_metrics(c)
    assert m["loss"] is None and m["nonfinite"] == 2 and m["accuracy"] == 0.75


@SETTINGS
@given(evaluations(min_n=0), st.lists(st.integers(0, 60), min_size=0, max_size=4))
def test_merge_equals_counts_of_concatenation(ev, cuts):
    """Counts add: merging the counts of any split equals the counts of all the data;
    merge is commutative and associative; zeros is its identity."""
    logits, y, C = ev
    N = len(y)
    bounds = sorted({0, N, *[min(c, N) for c in cuts]})
    parts = [counts_from_logits(logits[a:b], y[a:b], C) for a, b in itertools.pairwise(bounds)] or [
        counts_from_logits(logits, y, C)]
    whole = counts_from_logits(logits, y, C)
    merged = merge(parts)
    assert np.array_equal(merged.confusion, whole.confusion) and np.array_equal(merged.hist, whole.hist)
    assert merged.loss_sum == pytest.approx(whole.loss_sum, rel=1e-12, abs=1e-12)
    assert merge(parts[::-1]).confusion.tolist() == merged.confusion.tolist()
    assert np.array_equal(merge(parts[::-1]).hist, merged.hist)
    if len(parts) >= 3:
        a, b, c = parts[:3]
        assert (a + b) + c == a + (b + c) or math.isclose(((a + b) + c).loss_sum, (a + (b + c)).loss_sum)
        assert np.array_equal(((a + b) + c).hist, (a + (b + c)).hist)
    z = ClassificationCounts.zeros(C)
    assert z + whole == whole
    assert clinical_metrics(merged)["accuracy"] == clinical_metrics(whole)["accuracy"]


@SETTINGS
@given(evaluations(min_n=0))
def test_dict_round_trip(ev):
    """to_dict is flat ints/floats, survives JSON, and from_dict restores the counts."""
    logits, y, C = ev
    c = counts_from_logits(logits, y, C)
    d = json.loads(json.dumps(c.to_dict()))
    for v in d.values():
        assert isinstance(v, (int, float)) or all(isinstance(x, int) for x in v)
    assert len(d["hist_index"]) <= len(y) * C
    assert ClassificationCounts.from_dict(d) == c


def test_from_dict_refuses_mismatch():
    d = counts_from_logits(np.zeros((3, 2)), [0, 1, 1], 2).to_dict()
    with pytest.raises(ValueError, match="bins"):
        ClassificationCounts.from_dict({**d, "bins": 100})
    with pytest.raises(ValueError, match="confusion"):
        ClassificationCounts.from_dict({**d, "num_classes": 3})
    with pytest.raises(ValueError, match="classes"):
        ClassificationCounts.zeros(2) + ClassificationCounts.zeros(3)


def test_input_checks():
    with pytest.raises(ValueError, match="labels"):
        counts_from_logits(np.zeros((2, 2)), [0, 2], 2)
    with pytest.raises(ValueError, match="logits"):
        counts_from_logits(np.zeros((2, 3)), [0, 1], 2)


@SETTINGS
@given(evaluations(), st.data())
def test_targeted_miss_rate_and_asr_match_brute_force(ev, data):
    """Miss rate = share of true positives predicted negative; ASR = share of non-target
    samples predicted as the target (both by looping over predictions)."""
    logits, y, C = ev
    pred = logits.argmax(1)
    c = counts_from_logits(logits, y, C)
    pos = data.draw(st.integers(0, C - 1))
    neg = data.draw(st.one_of(st.none(), st.integers(0, C - 1)))
    rows = [p for p, t in zip(pred, y) if t == pos]
    want = (sum(1 for p in rows if (p == neg if neg is not None else p != pos)) / len(rows)) if rows else None
    got = targeted_miss_rate(c, pos, neg)
    assert (got is None) == (want is None) and (want is None or got == pytest.approx(want))
    if neg is None and rows:
        assert got == pytest.approx(1 - clinical_metrics(c, positive_label=pos)["sensitivity"])
    others = [p for p, t in zip(pred, y) if t != pos]
    want_asr = sum(1 for p in others if p == pos) / len(others) if others else None
    got_asr = attack_success_rate(c, pos)
    assert (got_asr is None) == (want_asr is None) and (want_asr is None or got_asr == pytest.approx(want_asr))
