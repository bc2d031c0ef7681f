"""The shape checker's statistics, and (slow) the cheapest published shapes rerun."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_shapes", ROOT / "simulations" / "check_shapes.py")
shapes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shapes)


def _runs(rows):
    return [({"defense.name": d, "experiment.seed": s}, {"defense.name": d, "experiment.seed": s}, {"m": v})
            for d, s, v in rows]


def test_claims_pair_by_seed_and_need_an_interval_that_excludes_zero():
    claim = {"name": "x", "metric": "m", "baseline": {"defense.name": "a"}, "treatment": {"defense.name": "b"},
             "expect": "lower", "margin": 0.2}
    strong = _runs([("a", 0, 0.9), ("a", 1, 0.8), ("a", 2, 0.85), ("b", 0, 0.1), ("b", 1, 0.2), ("b", 2, 0.15)])
    r = shapes.check_claim(claim, strong)
    assert r["passed"] and r["n"] == 3 and r["effect"] == pytest.approx(0.7)
    noisy = _runs([("a", 0, 0.9), ("a", 1, 0.1), ("a", 2, 0.9), ("b", 0, 0.1), ("b", 1, 0.9), ("b", 2, 0.2)])
    assert not shapes.check_claim(claim, noisy)["passed"]
    assert not shapes.check_claim(claim, strong[:2] + strong[3:5])["passed"]  # two seeds only
    cost = {**claim, "expect": "not_lower", "margin": 0.05}
    near = _runs([("a", s, 0.9) for s in range(3)] + [("b", s, 0.88) for s in range(3)])
    assert shapes.check_claim(cost, near)["passed"]


@pytest.mark.slow
def test_the_quick_shapes_hold(tmp_path):
    assert shapes.main(["--quick", "--only", "model_replacement", "backdoor_norm_bounding",
                        "--out", str(tmp_path)]) == 0
