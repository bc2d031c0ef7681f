"""ecg_synthetic's classes 4-7 and ``site_shift``: the defaults generate exactly the data of
before, the new options are reproducible from the seed, and each new class follows its
clinical definition (PVC prematurity and compensatory pause, PR > 0.2 s, ST elevation,
flutter conduction ratios)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.signal import find_peaks

from fedmedsec.data import ecg_synthetic as E
from fedmedsec.data.ecg_synthetic import ECGSyntheticParams, load_ecg_synthetic

TINY = dict(num_sites=2, records_per_site=16, length_s=5.0)


def _digest(d) -> str:
    return hashlib.sha256(d.x.tobytes() + d.y.tobytes()).hexdigest()[:16]


def test_defaults_generate_the_data_of_before():
    """Digest recorded with the generator before classes 4-7 and site_shift existed
    (commit 98c1add, numpy/scipy/neurokit2 of the shared venv)."""
    d = load_ecg_synthetic(ECGSyntheticParams(num_sites=2, records_per_site=20), 3)
    assert _digest(d) == "42904064a4532069"
    same = load_ecg_synthetic(ECGSyntheticParams(num_sites=2, records_per_site=20, site_shift=0.0), 3)
    assert np.array_equal(d.x, same.x)


def test_new_classes_and_shift_are_reproducible_from_the_seed():
    p = ECGSyntheticParams(**TINY, num_classes=8, site_shift=1.5)
    a, b, c = load_ecg_synthetic(p, 11), load_ecg_synthetic(p, 11), load_ecg_synthetic(p, 12)
    E._generate.cache_clear()
    fresh = load_ecg_synthetic(p, 11)  # regenerated, not the cached copy
    assert np.array_equal(a.x, b.x) and np.array_equal(a.x, fresh.x) and np.array_equal(a.y, fresh.y)
    assert not np.allclose(a.x, c.x)
    assert a.num_classes == 8 and a.class_names == E.CLASS_NAMES
    for h in set(a.sites):
        assert np.bincount(a.y[a.sites == h], minlength=8).tolist() == [2] * 8
    unshifted = load_ecg_synthetic(ECGSyntheticParams(**TINY, num_classes=8), 11)
    assert np.array_equal(a.y, unshifted.y) and not np.allclose(a.x, unshifted.x)
    four = load_ecg_synthetic(ECGSyntheticParams(**TINY), 11)
    assert four.num_classes == 4 and set(four.y.tolist()) == {0, 1, 2, 3}


def test_site_shift_zero_is_the_identity_and_positive_draws_vary():
    rng = np.random.default_rng(0)
    ident = E._site_shift(rng, 0.0)
    assert ident["rate"] == 1.0 and ident["polarity"] == 1.0 and np.all(ident["width"] == 1)
    assert rng.random() == np.random.default_rng(0).random()  # no draws at s = 0
    draws = [E._site_shift(np.random.default_rng(s), 2.0) for s in range(200)]
    rates = np.array([d["rate"] for d in draws])
    assert 0.08 < np.log(rates).std() < 0.16  # exp(N(0, 0.06 s)), s = 2
    assert 0.25 < np.mean([d["polarity"] < 0 for d in draws]) < 0.55  # p = min(0.2 s, 0.5)
    assert all(np.all(d["angle"][1:4] == 0) for d in draws)  # Q, R, S stay at the R peak


def test_premature_beats_definition():
    """Each ectopic beat comes 30-45% of an RR early, the next beat keeps its time (full
    compensatory pause), never two in a row, at least one inside the window."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        rr = rng.uniform(0.7, 1.0)
        beats = -1.0 + rr * np.arange(12)
        out, ect = E._premature_beats(beats, rr, 5.0, rng)
        assert ect.any() and not (ect[1:] & ect[:-1]).any()
        assert ect[(beats > 0.5) & (beats < 4.5)].any()
        assert np.array_equal(out[~ect], beats[~ect])
        early = (beats[ect] - out[ect]) / rr
        assert np.all((early >= 0.30) & (early <= 0.45))


def test_flutter_and_sinus_rates():
    rng = np.random.default_rng(1)
    for _ in range(100):
        t = E._rr_intervals(7, 10.0, rng)
        rr = np.diff(t)
        assert 250 / 4 * 0.95 <= 60 / rr.mean() <= 350 / 2 * 1.05
        assert rr.std() / rr.mean() < 0.03  # regular conduction
        for c in (4, 5, 6):
            assert 55 <= 60 / np.diff(E._rr_intervals(c, 10.0, rng)).mean() <= 95
    fast = np.diff(E._rr_intervals(0, 10.0, np.random.default_rng(2), rate=1.5)).mean()
    slow = np.diff(E._rr_intervals(0, 10.0, np.random.default_rng(2), rate=1.0)).mean()
    assert fast == pytest.approx(slow / 1.5, rel=0.02)


def test_av_block_template_has_a_long_pr_and_st_plateau_elevates():
    def p_peak_to_r(c):
        ai, bi, ti = E._class_shape(c)
        tpl = E._ecgsyn_template(ai, bi, ti, seed=0)
        t = np.arange(len(tpl)) / E._TEMPLATE_FS - E._PRE
        pre = (t > -0.33) & (t < -0.08)  # before the Q wave
        return -t[pre][np.argmax(tpl[pre])]

    assert p_peak_to_r(0) < 0.2 < p_peak_to_r(5)  # PR: > 0.2 s is first-degree AV block
    n = int((E._PRE + E._POST) * E._TEMPLATE_FS)
    st = E._st_plateau(n, 0.2)
    t = np.arange(n) / E._TEMPLATE_FS - E._PRE
    assert np.allclose(st[(t > 0.07) & (t < 0.25)], 0.2)
    assert np.all(st[(t < 0.04) | (t > 0.28)] == 0)


def test_pvc_records_have_short_long_cycles_and_flutter_records_are_regular():
    d = load_ecg_synthetic(ECGSyntheticParams(num_sites=1, records_per_site=40, num_classes=8,
                                              noise=0.0), 5)

    def rr_ratio(x):
        pk, _ = find_peaks(np.abs(x), height=0.45 * np.abs(x).max(), distance=25)
        rr = np.diff(pk)
        return rr.min() / np.median(rr)

    ratio = {c: np.median([rr_ratio(x) for x in d.x[d.y == c, 0]]) for c in (0, 4, 7)}
    assert ratio[4] < 0.8 < ratio[0] and ratio[7] > 0.8


def test_param_ranges():
    with pytest.raises(ValidationError):
        ECGSyntheticParams(num_classes=9)
    with pytest.raises(ValidationError):
        ECGSyntheticParams(site_shift=3.5)
    assert ECGSyntheticParams(num_classes=8, site_shift=3.0).num_classes == 8
