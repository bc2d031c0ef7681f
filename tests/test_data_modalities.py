"""Loaders of the medical modalities (MedMNIST, synthetic ECG, WFDB, CSV) and the image /
ECG backdoor triggers: shapes and dtypes of RawData, the defining property of each label
rule, one-line DataErrors for bad files, train-only imputation, trigger parts (DBA)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_csv, make_medmnist_npz, make_mitbih, make_ptbxl
from pydantic import ValidationError
from scipy.signal import find_peaks

from fedmedsec.attacks.base import AttackContext
from fedmedsec.attacks.data.triggers import TRIGGERS, TriggerParams, make_trigger
from fedmedsec.data.base import DATASETS, DataError
from fedmedsec.data.csv_table import CSVParams, impute_apply, impute_fit, load_csv
from fedmedsec.data.ecg_synthetic import ECGSyntheticParams, load_ecg_synthetic
from fedmedsec.data.ecg_wfdb import ECGWFDBParams, load_ecg_wfdb
from fedmedsec.data.medmnist import MedMNISTParams, load_medmnist

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BREAST = SHARED / "medmnist" / "breastmnist.npz"
HEART = SHARED / "uci-heart-disease" / "heart_disease_4sites.csv"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_registered_with_modality():
    for name, mod in [("medmnist", "image"), ("ecg_synthetic", "ecg"), ("ecg_wfdb", "ecg"), ("csv", "tabular")]:
        assert DATASETS.get(name).meta["modality"] == mod


# --------------------------------------------------------------------------- MedMNIST
def test_medmnist_gray_fixture(tmp_path):
    f = make_medmnist_npz(tmp_path / "m.npz", n=(20, 6, 9), num_classes=3)
    d = load_medmnist(MedMNISTParams(path=str(f)), 0)
    assert d.x.shape == (26, 1, 28, 28) and d.x.dtype == np.float32
    assert d.y.dtype == np.int64 and d.y.shape == (26,)
    assert d.x_test.shape == (9, 1, 28, 28) and d.y_test.tolist() == [0, 1, 2] * 3
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0 and d.modality == "image" and d.num_classes == 3
    raw = np.load(f)
    assert np.allclose(d.x[0, 0], raw["train_images"][0] / 255.0)  # train first, then val
    assert np.allclose(d.x[20, 0], raw["val_images"][0] / 255.0)
    d2 = load_medmnist(MedMNISTParams(path=str(f), use_val=False, num_classes=4), 0)
    assert len(d2.x) == 20 and d2.num_classes == 4


def test_medmnist_rgb_64_channels_first(tmp_path):
    f = make_medmnist_npz(tmp_path / "rgb.npz", size=64, rgb=True, n=(6, 3, 3))
    d = load_medmnist(MedMNISTParams(path=str(f)), 0)
    raw = np.load(f)["train_images"]
    assert d.x.shape == (9, 3, 64, 64)
    assert np.allclose(d.x[1].transpose(1, 2, 0), raw[1] / 255.0)


def test_medmnist_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_medmnist(MedMNISTParams(path=str(tmp_path / "none.npz")), 0)
    assert "none.npz" in _one_line(e)
    f = make_medmnist_npz(tmp_path / "chest.npz", multilabel=14)
    with pytest.raises(DataError, match="multi-label") as e:
        load_medmnist(MedMNISTParams(path=str(f)), 0)
    _one_line(e)
    g = tmp_path / "nokey.npz"
    np.savez(g, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match="missing keys") as e:
        load_medmnist(MedMNISTParams(path=str(g)), 0)
    assert "test_images" in _one_line(e)
    h = tmp_path / "rect.npz"
    arr = {f"{s}_images": np.zeros((2, 28, 20), np.uint8) for s in ("train", "val", "test")}
    arr.update({f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(h, **arr)
    with pytest.raises(DataError, match="square"):
        load_medmnist(MedMNISTParams(path=str(h)), 0)


@pytest.mark.skipif(not BREAST.is_file(), reason="shared BreastMNIST file not present")
def test_medmnist_real_breastmnist():
    assert hashlib.md5(BREAST.read_bytes()).hexdigest() == "750601b1f35ba3300ea97c75c52ff8f6"
    d = load_medmnist(MedMNISTParams(path=str(BREAST)), 0)
    assert d.x.shape == (546 + 78, 1, 28, 28) and d.x_test.shape == (156, 1, 28, 28)
    assert d.num_classes == 2 and set(np.unique(d.y)) == {0, 1}
    assert d.x.max() <= 1.0 and d.x.min() >= 0.0


# --------------------------------------------------------------------------- synthetic ECG
SMALL = dict(num_sites=3, records_per_site=40, length_s=5.0, sampling_rate=100)


def _rates(x: np.ndarray, fs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per record: beats per minute and RR coefficient of variation from R peaks."""
    bpm, cv = [], []
    for r in x[:, 0]:
        pk, _ = find_peaks(r, height=0.5 * r.max(), distance=int(0.25 * fs))
        rr = np.diff(pk) / fs
        bpm.append(60 / rr.mean())
        cv.append(rr.std() / rr.mean())
    return np.array(bpm), np.array(cv)


def test_ecg_synthetic_shapes_sites_determinism():
    p = ECGSyntheticParams(**SMALL)
    d = load_ecg_synthetic(p, 7)
    assert d.x.shape == (120, 1, 500) and d.x.dtype == np.float32 and d.modality == "ecg"
    assert d.y.dtype == np.int64 and d.num_classes == 4 and len(d.class_names) == 4
    assert np.allclose(d.x.mean(-1), 0, atol=1e-4) and np.allclose(d.x.std(-1), 1, atol=1e-3)
    assert sorted(set(d.sites)) == ["hospital_0", "hospital_1", "hospital_2"]
    for h in set(d.sites):  # balanced classes in every hospital by default
        assert np.bincount(d.y[d.sites == h], minlength=4).tolist() == [10] * 4
    again = load_ecg_synthetic(ECGSyntheticParams(**SMALL), 7)
    assert np.array_equal(d.x, again.x) and np.array_equal(d.y, again.y)
    again.x[:] = 0  # the in-process cache hands out copies
    assert np.array_equal(d.x, load_ecg_synthetic(p, 7).x)
    assert not np.allclose(d.x, load_ecg_synthetic(p, 8).x)


def test_ecg_synthetic_classes_follow_their_rhythm_definition():
    """Without noise: brady < 55 < normal < 90 < 110 < tachycardia by R-peak rate, and the
    AF-like class has irregular RR (high coefficient of variation) unlike the others."""
    d = load_ecg_synthetic(ECGSyntheticParams(**SMALL, noise=0.0), 1)
    bpm, cv = _rates(d.x, 100)
    med = {c: np.median(bpm[d.y == c]) for c in range(4)}
    assert 60 <= med[0] <= 90 and 110 <= med[1] <= 165 and 33 <= med[2] <= 57
    assert np.median(cv[d.y == 3]) > 2.5 * max(np.median(cv[d.y == c]) for c in (0, 1, 2))


def test_ecg_synthetic_hospitals_differ_and_skew():
    d = load_ecg_synthetic(ECGSyntheticParams(**SMALL), 3)
    # device noise differs: high-frequency residual energy per hospital
    hf = {h: np.median(np.abs(np.diff(d.x[d.sites == h, 0], 2)).mean(-1)) for h in set(d.sites)}
    assert max(hf.values()) > 1.1 * min(hf.values())
    s = load_ecg_synthetic(ECGSyntheticParams(**SMALL, num_classes=2, class_alpha=0.3), 3)
    assert set(np.unique(s.y)) <= {0, 1} and s.num_classes == 2
    props = [s.y[s.sites == h].mean() for h in sorted(set(s.sites))]
    assert max(props) - min(props) > 0.2  # Dirichlet(0.3) priors: label skew across hospitals


def test_ecg_synthetic_param_errors():
    with pytest.raises(ValidationError):
        ECGSyntheticParams(num_classes=9)
    with pytest.raises(ValidationError):
        ECGSyntheticParams(bogus=1)


# --------------------------------------------------------------------------- WFDB
def test_ptbxl_superclass_labels_and_test_fold(tmp_path):
    root, expected = make_ptbxl(tmp_path / "ptbxl")
    d = load_ecg_wfdb(ECGWFDBParams(path=str(root), format="ptbxl", site_column="site"), 0)
    cls = ["NORM", "MI", "STTC", "CD", "HYP"]
    assert d.class_names == cls and d.num_classes == 5
    assert [cls[c] for c in d.y] == [expected[i] for i in (1, 2, 3)]  # ecg 4 has two classes
    assert [cls[c] for c in d.y_test] == [expected[5], expected[6]]  # strat_fold 10
    assert d.x.shape == (3, 12, 200) and d.x_test.shape == (2, 12, 200)
    assert np.allclose(d.x.mean(-1), 0, atol=1e-5) and np.allclose(d.x.std(-1), 1, atol=1e-4)
    assert d.sites.tolist() == ["0", "1", "0"] and d.test_sites.tolist() == ["0", "1"]
    raw = load_ecg_wfdb(
        ECGWFDBParams(path=str(root), format="ptbxl", label_policy="max_likelihood",
                      leads=["ii", "V6"], normalize="none", test_fold=None), 0)
    assert raw.x.shape == (6, 2, 200) and raw.x_test is None and raw.feature_names == ["II", "V6"]
    assert cls[raw.y[3]] == "MI"  # IMI 100 beats NDT 50
    # record i carries offset i (+ lead ramp): order and lead selection are right
    assert np.allclose(raw.x[:, 0].mean(-1), np.arange(1, 7) + 1 / 11, atol=0.05)
    assert np.allclose(raw.x[:, 1].mean(-1), np.arange(1, 7) + 1.0, atol=0.05)


def test_ptbxl_errors(tmp_path):
    root, _ = make_ptbxl(tmp_path / "p")
    with pytest.raises(DataError, match="no leads") as e:
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="ptbxl", leads=["V7"]), 0)
    _one_line(e)
    (root / "records100" / "00000" / "00002_lr.hea").unlink()
    with pytest.raises(DataError, match="00002_lr.hea") as e:
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="ptbxl"), 0)
    _one_line(e)
    (root / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match="scp_statements.csv"):
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="ptbxl"), 0)
    with pytest.raises(DataError, match="no such dataset folder"):
        load_ecg_wfdb(ECGWFDBParams(path=str(tmp_path / "x"), format="ptbxl"), 0)
    with pytest.raises(ValidationError, match="data.records: not a key of data.format = 'ptbxl'"):
        ECGWFDBParams(path=".", format="ptbxl", records=["100"])


def test_mitbih_aami_beats(tmp_path):
    root, keep = make_mitbih(tmp_path / "mit")
    d = load_ecg_wfdb(ECGWFDBParams(path=str(root), format="mitbih", beat_window=200), 0)
    aami = d.class_names
    assert aami == ["N", "S", "V", "F", "Q"] and d.x.shape == (10, 2, 200) and d.x_test is None
    assert [aami[c] for c in d.y] == keep["100"] + keep["101"]
    assert d.sites.tolist() == ["100"] * 5 + ["101"] * 5
    # the window is centred: the annotated spike sits at sample beat_window // 2
    assert (d.x[:, 0].argmax(-1) == 100).all()
    t = load_ecg_wfdb(ECGWFDBParams(path=str(root), format="mitbih", beat_window=200,
                                    beat_before=50, test_records=["101"], leads=["V1"]), 0)
    # 50 samples before: the beat at sample 50 now fits, the one at 3550 still does not
    assert t.x.shape == (6, 1, 200) and [aami[c] for c in t.y] == ["N"] + keep["100"]
    assert [aami[c] for c in t.y_test] == keep["101"]
    assert (t.x[:, 0].argmax(-1) == 50).all() and t.test_sites.tolist() == ["101"] * 5


def test_mitbih_errors(tmp_path):
    root, _ = make_mitbih(tmp_path / "mit")
    with pytest.raises(DataError, match="not among the records"):
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="mitbih", test_records=["999"]), 0)
    (root / "101.atr").unlink()
    with pytest.raises(DataError, match="101.atr") as e:
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="mitbih"), 0)
    _one_line(e)
    (root / "RECORDS").unlink()
    with pytest.raises(DataError, match="RECORDS"):
        load_ecg_wfdb(ECGWFDBParams(path=str(root), format="mitbih"), 0)
    with pytest.raises(ValidationError, match="beat_before"):
        ECGWFDBParams(path=".", format="mitbih", beat_window=10, beat_before=10)


# --------------------------------------------------------------------------- CSV
CSV_TEXT = """
hospital,age,smoker,chol,diag
A,50,yes,200,0
A,?,no,240,2
A,61,no,,1
B,45,yes,180,0
B,70,?,300,3
B,55,no,210.5,1.0
"""


def test_csv_numeric_categorical_sites_missing(tmp_path):
    f = make_csv(tmp_path / "t.csv", CSV_TEXT)
    p = CSVParams(path=str(f), target="diag", site_column="hospital",
                  label_map={"0": 0, "1": 1, "2": 1, "3": 1})
    d = load_csv(p, 0)
    assert d.modality == "tabular" and d.num_classes == 2 and d.x.dtype == np.float32
    assert d.feature_names == ["age", "smoker=no", "smoker=yes", "chol"]
    assert d.categorical.tolist() == [False, True, True, False]
    assert d.y.tolist() == [0, 1, 1, 0, 1, 1] and d.sites.tolist() == list("AAABBB")
    assert np.isnan(d.x[1, 0]) and np.isnan(d.x[2, 3]) and np.isnan(d.x[4, 1:3]).all()
    assert d.x[0, 1:3].tolist() == [0.0, 1.0] and d.x[5, 3] == np.float32(210.5)
    assert any("3 missing values in 3 columns" in n for n in d.notes)
    # without a label map: classes are the sorted distinct values ("1.0" == "1")
    d2 = load_csv(CSVParams(path=str(f), target="diag", drop_columns=["hospital", "smoker"]), 0)
    assert d2.class_names == ["0", "1", "2", "3"] and d2.y.tolist() == [0, 2, 1, 0, 3, 1]
    assert d2.feature_names == ["age", "chol"] and d2.sites is None


def test_impute_uses_training_statistics_only():
    x = np.array([[1.0, 1.0], [3.0, 0.0], [np.nan, 0.0], [100.0, np.nan]], dtype=np.float32)
    train, test = x[:3], x[3:]
    stats = impute_fit(train, categorical=np.array([False, True]))
    assert stats.fill.tolist() == [2.0, 0.0]  # median of train (1, 3); mode of (1, 0, 0)
    filled, n = impute_apply(test, stats)
    assert filled.tolist() == [[100.0, 0.0]] and n == 1
    assert np.isnan(test[0, 1])  # input untouched
    # fitting on train+test would move the fill (the leak the split-then-fit order avoids)
    assert impute_fit(x).fill[0] == 3.0
    assert impute_apply(train, stats)[0][2, 0] == 2.0
    assert impute_fit(np.full((3, 1), np.nan)).fill.tolist() == [0.0]


@pytest.mark.parametrize(
    "text,kw,match",
    [
        ("a,b\n1,2\n", dict(target="y"), "no column 'y'"),
        ("a,y\n1,0\n2,5\n", dict(target="y", label_map={"0": 0, "1": 1}), r"values \['5'\] are not in data.label_map"),
        ("s,a,y\nA,1,0\n,2,1\n", dict(target="y", site_column="s"), "'s' \\(site\\) is empty in rows 2"),
        ("a,y\n1,0\n2,1\nabc,0\n4,1\n", dict(target="y"), "column 'a' has non-numeric value 'abc' in rows 3"),
        ("a,y\n1,0\n2,1\n", dict(target="y", site_column="site"), "no column 'site'"),
        ("a,y\n1,0\n2,\n", dict(target="y"), "target\\) is missing in rows 2"),
    ],
)
def test_csv_errors_one_line(tmp_path, text, kw, match):
    f = make_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match) as e:
        load_csv(CSVParams(path=str(f), **kw), 0)
    assert "bad.csv" in _one_line(e)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such CSV file"):
        load_csv(CSVParams(path=str(tmp_path / "no.csv"), target="y"), 0)


@pytest.mark.skipif(not HEART.is_file(), reason="shared heart disease file not present")
def test_csv_real_heart_disease():
    p = CSVParams(path=str(HEART), target="num", site_column="site",
                  label_map={"0": 0, "1": 1, "2": 1, "3": 1, "4": 1},
                  categorical_columns=["cp", "restecg", "slope", "thal"])
    d = load_csv(p, 0)
    assert d.x.shape[0] == 920 and d.num_classes == 2
    assert dict(zip(*np.unique(d.sites, return_counts=True))) == {
        "cleveland": 303, "hungary": 294, "switzerland": 123, "va_long_beach": 200}
    assert 0.5 < d.y.mean() < 0.6  # 509 of 920 with heart disease
    assert "cp=1" in d.feature_names and "cp=1.0" not in d.feature_names
    assert np.isnan(d.x).any()
    filled, n = impute_apply(d.x, impute_fit(d.x, d.categorical))
    assert n > 0 and not np.isnan(filled).any()


# --------------------------------------------------------------------------- triggers
IMG = AttackContext(modality="image", num_classes=2, input_shape=(3, 28, 28))
ECG = AttackContext(modality="ecg", num_classes=4, input_shape=(2, 500))


def test_triggers_registered_per_modality():
    assert TRIGGERS.get("patch").meta["modality"] == "image"
    assert TRIGGERS.get("blended").meta["modality"] == "image"
    assert TRIGGERS.get("waveform").meta["modality"] == "ecg"
    assert type(make_trigger(None, TriggerParams(), ECG)).__name__ == "WaveformTrigger"
    assert type(make_trigger(None, TriggerParams(), IMG)).__name__ == "PatchTrigger"


def test_patch_trigger_badnets_corner_and_dba_parts():
    x = np.random.default_rng(0).random((4, 3, 28, 28), dtype=np.float32)
    trig = make_trigger("patch", TriggerParams(trigger_size=4), IMG)
    out = trig.apply(x)
    assert out is not x and not np.shares_memory(out, x)
    changed = np.any(out != x, axis=(0, 1))
    assert changed[24:, 24:].any() and not changed[:24].any() and not changed[:, :24].any()
    assert (out[:, :, 24, 24] == 1.0).all() and (out[:, :, 24, 25] == 0.0).all()  # checkerboard
    assert np.array_equal(out[:, 0, 24:, 24:], out[:, 2, 24:, 24:])  # every channel
    rows = [set(np.nonzero(np.any(trig.apply(x, i, 4) != x, axis=(0, 1, 3)))[0]) for i in range(4)]
    assert rows == [{24}, {25}, {26}, {27}]  # 4 parts of a 4x4 patch: one row each
    composed = x
    for i in range(4):
        composed = trig.apply(composed, part=i, n_parts=4)
    assert np.array_equal(composed, out)  # union of the parts = the full trigger


def test_blended_trigger_formula_and_parts():
    x = np.random.default_rng(1).random((3, 3, 28, 28), dtype=np.float32)
    p = TriggerParams(blend_alpha=0.2)
    trig = make_trigger("blended", p, IMG)
    k = make_trigger("blended", p, IMG).pattern  # fixed pattern: same for every party
    assert np.array_equal(k, trig.pattern) and k.min() >= 0 and k.max() <= 1
    assert np.allclose(trig.apply(x), 0.8 * x + 0.2 * k, atol=1e-6)
    touched = [np.any(trig.apply(x, i, 3) != x, axis=(0, 1)) for i in range(3)]
    assert not (touched[0] & touched[1]).any() and not (touched[1] & touched[2]).any()
    composed = x
    for i in range(3):
        composed = trig.apply(composed, i, 3)
    assert np.allclose(composed, trig.apply(x), atol=1e-6)


def test_waveform_trigger_adds_on_every_lead_and_parts_are_segments():
    x = np.random.default_rng(2).standard_normal((5, 2, 500)).astype(np.float32)
    trig = make_trigger("waveform", TriggerParams(trigger_size=40, trigger_amplitude=0.5), ECG)
    out = trig.apply(x)
    delta = out - x
    assert np.allclose(delta[:, 0], delta[:, 1]) and np.allclose(delta, delta[:1])
    nz = np.nonzero(np.any(np.abs(delta) > 1e-7, axis=(0, 1)))[0]
    assert nz.min() >= 25 and nz.max() < 25 + 40  # default start T // 20
    assert np.isclose(np.abs(delta).max(), 0.5, atol=0.01)
    seg = [set(np.nonzero(np.any(trig.apply(x, i, 4) != x, axis=(0, 1)))[0]) for i in range(4)]
    assert all(max(a) < min(b) for a, b in zip(seg, seg[1:]))  # disjoint, ordered in time
    total = sum(trig.apply(x, i, 4) - x for i in range(4))
    assert np.allclose(total, delta, atol=1e-6)
    # defaults when not set: T // 10 samples, amplitude 2; explicit position
    short = make_trigger("waveform", TriggerParams(trigger_position=0), ECG)
    assert len(short.waveform) == 50 and short.start == 0
    assert np.isclose(np.abs(short.waveform).max(), 2.0, atol=0.02)


def test_trigger_errors():
    with pytest.raises(ValueError, match="attack.trigger_size = 30"):
        make_trigger("patch", TriggerParams(trigger_size=30), IMG)
    with pytest.raises(ValueError, match="attack.trigger_position = 26"):
        make_trigger("patch", TriggerParams(trigger_size=4, trigger_position=26), IMG)
    with pytest.raises(ValueError, match="attack.trigger_position = 480"):
        make_trigger("waveform", TriggerParams(trigger_size=40, trigger_position=480), ECG)
    with pytest.raises(ValueError, match="ecg trigger, but the data is image"):
        make_trigger("waveform", TriggerParams(), IMG)
    trig = make_trigger("patch", TriggerParams(), IMG)
    with pytest.raises(ValueError, match="cannot be split"):
        trig.apply(np.zeros((1, 3, 28, 28), np.float32), part=0, n_parts=17)
    with pytest.raises(ValueError, match="expected"):
        trig.apply(np.zeros((1, 1, 28, 28), np.float32))
