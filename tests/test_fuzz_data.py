"""Fuzzing the data files a user points the CLI at: generated CSV tables (odd headers,
missing or duplicate columns, non-numeric cells, huge and non-finite values, one row, one
class, every feature missing, bytes that are not text) and MedMNIST-style .npz files (bad
CRC, truncated, string / object / float labels, wrong shapes and dtypes, NaN pixels, huge or
negative labels, missing keys), each through ``fedmedsec.cli.main`` in-process (2 rounds).

Every case must end in exit 0 with a meaningful run or exit 2 with one line naming the key
or the file (``test_fuzz_common.classify``), never a traceback.
``FEDMEDSEC_FUZZ_EXAMPLES`` raises the number of cases.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_common import classify, record, run_cli

EXAMPLES = int(os.environ.get("FEDMEDSEC_FUZZ_EXAMPLES", 30))
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

BASE = """
[experiment]
name = "fuzz-data"
rounds = 2
mia = false
clean_twin = false

[model]
name = "{model}"
{model_keys}

[simulation]
backend = "inprocess"
"""

CELLS = ["1", "0", "-1", "2.5", "", "NA", "?", "nan", "inf", "-inf", "3e38", "-3e38", "1e308", "1e400",
         "abc", "  7 ", "1,5", '"x"', "é", "0x10", "TRUE", "1e-320"]


@st.composite
def csv_case(draw) -> tuple[bytes, dict]:
    """(file bytes, extra config) for data.name = "csv" with target "y". (Rare damage is
    drawn as the largest value of a small integer: hypothesis favours small ones.)"""
    n_feat = draw(st.integers(0, 4)) if draw(st.integers(0, 5)) == 5 else draw(st.integers(1, 4))
    odd = draw(st.integers(0, 3)) == 3
    names = [draw(st.sampled_from(["a", "b", "c", "age", "y", "", " ", "a", "x" * 300, "é", "1", "site"]))
             if odd else f"f{j}" for j in range(n_feat)]
    target_in = draw(st.integers(0, 9)) != 9
    header = names + (["y"] if target_in else [])
    rows = draw(st.sampled_from([40, 60, 40, 3, 2, 1, 0]))
    kind = draw(st.sampled_from(["numbers", "numbers", "numbers", "cells", "one_class", "all_missing", "huge"]))
    lines = [",".join(header)]
    bad_target_row = draw(st.integers(-1, rows)) if draw(st.integers(0, 3)) == 3 else -1
    for i in range(rows):
        if kind == "numbers":
            cells = [str(draw(st.integers(-5, 50))) for _ in names]
        elif kind == "huge":
            cells = [draw(st.sampled_from(["3e38", "-3e38", "1e308", "1e400", "5e-324", "1"])) for _ in names]
        elif kind == "all_missing":
            cells = ["" for _ in names]
        else:
            cells = [draw(st.sampled_from(CELLS)) for _ in names]
        if target_in:
            y = "1" if kind == "one_class" else str(i % 2)
            if i == bad_target_row:
                y = draw(st.sampled_from(["2", "", "yes", "1e6", "-1"]))
            cells.append(y)
        if draw(st.integers(0, 59)) == 59:
            cells = cells[:-1] if cells else ["1", "2", "3"]  # a ragged row
        lines.append(",".join(cells))
    text = "\n".join(lines) + "\n"
    data = text.encode()
    damage = draw(st.sampled_from(["none"] * 15 + ["latin1", "binary", "empty", "bom", "nul"]))
    if damage == "latin1":
        data = text.encode("utf-8").replace(b"a", b"\xe9", 1)
    elif damage == "binary":
        data = bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=200)))
    elif damage == "empty":
        data = b""
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "nul":
        data = data.replace(b",", b"\x00,", 1)
    extra = {}
    if draw(st.booleans()):
        extra["data.missing_values"] = draw(st.sampled_from(['["?"]', '[""]', "[]", '["NA", "?"]']))
    if draw(st.integers(0, 4)) == 4:
        extra["data.label_map"] = draw(st.sampled_from(['{ "0" = 0, "1" = 1 }', '{ "1" = 1 }', "{}",
                                                        '{ "0" = 0, "1" = 5 }', '{ "0" = -1, "1" = 1 }']))
    if draw(st.integers(0, 5)) == 5:
        extra["data.categorical_columns"] = draw(st.sampled_from(['["a"]', '["nope"]', '["y"]', "[]"]))
    return data, extra


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@st.composite
def npz_case(draw) -> tuple[bytes, dict]:
    """(file bytes, extra config) for data.name = "medmnist"."""
    n = {s: draw(st.integers(0, 12)) if draw(st.integers(0, 5)) == 5 else 12 for s in ("train", "val", "test")}
    side = draw(st.sampled_from([8, 8, 8, 7, 1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    arrays: dict = {}
    for s in ("train", "val", "test"):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n[s], side, side), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n[s], 1), dtype=np.int64)
    kind = draw(st.sampled_from(["good", "good", "string_labels", "float_labels", "huge_label", "negative_label",
                                 "nan_pixels", "float_pixels", "wrong_shape", "multilabel", "missing_key",
                                 "length", "one_class", "rgb", "bool_labels", "int8_overflow"]))
    key = draw(st.sampled_from(["train", "val", "test"]))
    if kind == "string_labels":
        arrays[f"{key}_labels"] = np.array([["a"]] * n[key])
    elif kind == "float_labels":
        arrays[f"{key}_labels"] = arrays[f"{key}_labels"].astype(np.float64) + 0.5
    elif kind == "huge_label" and n[key]:
        arrays[f"{key}_labels"][0, 0] = draw(st.sampled_from([10**6, 2**40, 2**63 - 1]))
    elif kind == "negative_label" and n[key]:
        arrays[f"{key}_labels"][0, 0] = -1
    elif kind == "nan_pixels":
        arrays[f"{key}_images"] = np.full((n[key], side, side), np.nan, np.float32)
    elif kind == "float_pixels":
        arrays[f"{key}_images"] = rng.random((n[key], side, side)).astype(np.float64) * draw(
            st.sampled_from([1.0, 255.0, 1e38]))
    elif kind == "wrong_shape":
        arrays[f"{key}_images"] = rng.integers(0, 256, draw(st.sampled_from([(n[key],), (n[key], side),
                                                                             (n[key], side, side, 2)])),
                                               dtype=np.uint8)
    elif kind == "multilabel":
        arrays[f"{key}_labels"] = rng.integers(0, 2, (n[key], 14))
    elif kind == "missing_key":
        del arrays[f"{key}_labels"]
    elif kind == "length":
        arrays[f"{key}_labels"] = arrays[f"{key}_labels"][:-1]
    elif kind == "one_class":
        for s in ("train", "val", "test"):
            arrays[f"{s}_labels"][:] = 0
    elif kind == "rgb":
        arrays[f"{key}_images"] = rng.integers(0, 256, (n[key], side, side, 3), dtype=np.uint8)
    elif kind == "bool_labels":
        arrays[f"{key}_labels"] = arrays[f"{key}_labels"].astype(bool)
    elif kind == "int8_overflow":
        arrays[f"{key}_labels"] = arrays[f"{key}_labels"].astype(np.uint64) + np.uint64(2**63)
    data = _npz_bytes(arrays)
    damage = draw(st.sampled_from(["none"] * 15 + ["crc", "truncate", "object", "not_zip", "empty"]))
    if damage == "crc":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            first = z.infolist()[0]
        off = first.header_offset + 30 + len(first.filename) + len(first.extra) + 140
        b = bytearray(data)
        if off < len(b):
            b[off] ^= 0xFF
        data = bytes(b)
    elif damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "object":
        buf = io.BytesIO()
        np.savez(buf, **{**arrays, "train_labels": np.array([{"a": 1}] * 3, dtype=object)})
        data = buf.getvalue()
    elif damage == "not_zip":
        data = b"PK\x03\x04" + b"\x00" * 40
    elif damage == "empty":
        data = b""
    extra = {}
    if draw(st.integers(0, 4)) == 4:
        extra["data.num_classes"] = draw(st.sampled_from(["2", "3", "1", "10000000"]))
    return data, extra


def _run(tmp: Path, suite: str, data: bytes, suffix: str, dataset: dict, model: str, model_keys: str,
         extra: dict):
    case = tmp / f"case-{abs(hash(data)) % 10**9}"
    case.mkdir(exist_ok=True)
    f = case / f"file{suffix}"
    f.write_bytes(data)
    cfg = case / "base.toml"
    cfg.write_text(BASE.format(model=model, model_keys=model_keys))
    argv = ["run", str(cfg), "--quiet", "--out", str(case / "run"), "--overwrite",
            "-s", f'data.path="{f}"', "-s", "data.num_hospitals=2"]
    for k, v in {**dataset, **extra}.items():
        argv += ["-s", f"{k}={v}"]
    o = classify(run_cli(argv), case / "run")
    record(suite, o)
    assert o.kind in ("clean_error", "ok"), o.describe()
    if o.kind == "clean_error" and o.rc == 2 and "usage:" not in o.err:
        line = o.err.strip()
        assert len(line) < 600, line
    return o


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-data")


@settings(**SETTINGS)
@given(case=csv_case())
def test_bad_csv_files(case, workdir):
    data, extra = case
    _run(workdir, "data-csv", data, ".csv", {"data.name": '"csv"', "data.target": '"y"'}, "mlp", "hidden = [4]",
         extra)


@settings(**SETTINGS)
@given(case=npz_case())
def test_bad_npz_files(case, workdir):
    data, extra = case
    _run(workdir, "data-npz", data, ".npz", {"data.name": '"medmnist"'}, "cnn",
         "channels = [2]\ngroups = 1\nhidden = 4", extra)


def test_an_npz_with_an_empty_test_split_is_refused_by_name(workdir):
    """Regression (found by this suite): an empty test split raised a ValueError in
    preprocess.apply (reshape of 0 rows)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 12), ("val", 12), ("test", 0)):
        arrays[f"{s}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.int64)
    o = _run(workdir, "data-npz-regression", _npz_bytes(arrays), ".npz", {"data.name": '"medmnist"'}, "cnn",
             "channels = [2]\ngroups = 1\nhidden = 4", {})
    assert o.kind == "clean_error" and "test split" in o.detail, o.describe()


def test_preprocessing_zero_rows_keeps_the_shape():
    from fedmedsec.data.preprocess import Preprocessor

    pre = Preprocessor(None, None, None, np.zeros(4), np.ones(4))
    out, missing = pre.apply(np.zeros((0, 2, 2), np.float32))
    assert out.shape == (0, 2, 2) and missing == 0


def test_a_missing_file_names_the_key(workdir):
    o = run_cli(["run", str(workdir / "nope.toml"), "--quiet"])
    o = classify(o, None)
    assert o.kind == "clean_error", o.describe()
