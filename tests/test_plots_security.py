"""Security figures (results/plots_security.py): written as 300 dpi PNG + PDF, every axis
labelled, one series per configuration (never pooling runs whose config differs beyond the
seed), the plotted values equal to an independent mean and 95% t-interval over seeds."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats
from torch import nn

from fedmedsec.evasion.domain import domain_for
from fedmedsec.results import plots_security as ps

EPS = [2 / 255, 4 / 255]


def _toml(cfg: dict) -> str:
    lines = []
    for sec, kv in cfg.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def _value(defense: str, adv: str, seed: int, eps: float, steps: int) -> float:
    """A deterministic robust accuracy per configuration, different for every one of them."""
    base = {"fedavg": 0.8, "median": 0.7}[defense] + (0.05 if adv == "pgd" else 0.0) + 0.01 * (steps == 20)
    return round(base - 30 * eps * (0.5 if adv == "pgd" else 1.0) + 0.02 * seed, 6)


def _write_run(d, cfg: dict, summary: dict, rounds: pd.DataFrame | None = None) -> None:
    d.mkdir(parents=True)
    (d / "config.toml").write_text(_toml(cfg))
    (d / "summary.json").write_text(json.dumps(summary))
    if rounds is not None:
        rounds.to_csv(d / "rounds.csv", index=False)


def _evasion_sweep(root):
    """defense x train.adversarial x 3 seeds, plus one configuration with evasion.steps = 20
    (2 seeds): five configurations that must stay apart."""
    points = [(d, a, s, 10) for d, a, s in itertools.product(["fedavg", "median"], ["none", "pgd"], [0, 1, 2])]
    points += [("fedavg", "none", s, 20) for s in (0, 1)]
    for i, (d, a, s, steps) in enumerate(points):
        cfg = {"experiment": {"seed": s, "name": "ev"}, "data": {"name": "medmnist"},
               "defense": {"name": d}, "train": {"adversarial": a},
               "evasion": {"eps": EPS, "norm": "linf", "steps": steps, "attacks": ["fgsm", "pgd"]}}
        rows = []
        for e in EPS:
            v = _value(d, a, s, e, steps)
            rows.append({"attack": "worst_case", "eps": e, "robust_accuracy": v, "clean_accuracy": 0.85 + 0.01 * s})
            rows.append({"attack": "pgd", "eps": e, "robust_accuracy": v + 0.05, "clean_accuracy": 0.85 + 0.01 * s})
        _write_run(root / f"run{i:02d}", cfg, {"evasion": {"rows": rows}, "attack_rounds": []})
    return points


def _png_dpi(path) -> tuple[float, float]:
    with Image.open(path) as im:
        return im.info["dpi"]


def _check_files_and_labels(info: ps.FigureInfo) -> None:
    assert info.png.is_file() and info.pdf.is_file()
    assert info.pdf.read_bytes()[:4] == b"%PDF"
    assert all(abs(v - 300) < 1 for v in _png_dpi(info.png))
    assert info.axes, "no axes recorded"
    for title, xl, yl in info.axes:
        # every axes (colour bars included: their label is the y label) says what it shows
        assert yl.strip(), f"axes {title!r} has no y label"
        assert xl.strip() or "colorbar" in title.lower() or not title, f"axes {title!r} has no x label"


def _check_no_pooling(info: ps.FigureInfo, runs: pd.DataFrame) -> None:
    """Every series averages runs whose resolved config is identical except the seed, and
    runs of different configurations never share a series."""
    cfg_cols = [c for c in ps.config_keys(runs) if c not in ps.REPLICATE_KEYS]
    by_run = runs.set_index("run")
    seen: dict[tuple, str] = {}
    for s in info.series:
        confs = {tuple(json.dumps(by_run.loc[r, c], default=str) for c in cfg_cols) for r in s.runs}
        assert len(confs) == 1, f"series {s.label!r} pools {len(confs)} configurations"
        key = (next(iter(confs)), s.metric, s.panel)
        assert key not in seen, f"two series ({seen.get(key)!r}, {s.label!r}) for one configuration"
        seen[key] = s.label


def test_robust_accuracy_figure_keeps_every_configuration_apart(tmp_path):
    points = _evasion_sweep(tmp_path / "sweep")
    runs = ps.load_runs(tmp_path / "sweep")
    ev = ps.evasion_frame(runs)
    info = ps.plot_robust_accuracy(ev, tmp_path / "fig" / "robust", chance=0.731)
    _check_files_and_labels(info)
    _check_no_pooling(info, runs)
    assert len(info.series) == 5  # 2 defenses x 2 adversarial settings + the steps = 20 variant
    for s in info.series:
        d, a, steps = s.config["defense.name"], s.config["train.adversarial"], s.config["evasion.steps"]
        seeds = sorted(sd for dd, aa, sd, st_ in points if (dd, aa, st_) == (d, a, steps))
        assert f"n={len(seeds)}" in s.label
        assert s.x == (0.0, *EPS)  # clean accuracy at eps = 0, then the budgets
        for x, m, lo, hi, n in zip(s.x, s.mean, s.low, s.high, s.n):
            vals = [0.85 + 0.01 * sd if x == 0 else _value(d, a, sd, x, steps) for sd in seeds]
            assert n == len(seeds) and m == pytest.approx(np.mean(vals))
            ref = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
            assert (lo, hi) == pytest.approx(ref)
    # the worst case is what is drawn, never the single attacks' rows
    assert all(m <= 0.9 for s in info.series for m in s.mean[1:])
    assert info.warnings and "fewer than 3" in info.warnings[0]  # the steps = 20 variant has n = 2


def test_panels_split_by_the_keys_the_caller_does_not_put_on_lines(tmp_path):
    _evasion_sweep(tmp_path / "sweep")
    ev = ps.evasion_frame(ps.load_runs(tmp_path / "sweep"))
    info = ps.plot_robust_accuracy(ev, tmp_path / "robust_by_defense", lines=["train.adversarial"])
    panels = {s.panel for s in info.series}
    assert len(panels) == 3  # defense x steps combinations that occur: fedavg/10, fedavg/20, median/10
    for p in panels:
        labels = [s.label for s in info.series if s.panel == p]
        assert len(labels) == len(set(labels))
    _check_files_and_labels(info)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=0, max_size=12))
def test_mean_ci_is_the_t_interval_of_the_mean(xs):
    m, lo, hi, n = ps.mean_ci(xs)
    assert n == len(xs)
    if not xs:
        assert math.isnan(m)
        return
    mean = sum(xs) / len(xs)
    assert m == pytest.approx(mean, abs=1e-9)
    if len(xs) < 2:
        assert math.isnan(lo) and math.isnan(hi)
        return
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))  # brute force
    h = stats.t.ppf(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))
    assert lo == pytest.approx(mean - h, abs=1e-9) and hi == pytest.approx(mean + h, abs=1e-9)


def test_split_keys_put_every_varying_key_on_lines_or_panels():
    df = pd.DataFrame({"run": list("abcd"), "experiment.seed": [0, 1, 0, 1],
                       "attack.name": ["backdoor", "neurotoxin", "neurotoxin", "backdoor"],
                       "attack.top_k_ratio": [None, 0.1, 0.1, None], "evasion.eps": [[0.1]] * 4,
                       "defense.name": ["fedavg", "fedavg", "flame", "flame"],
                       "clean_accuracy": [0.1, 0.2, 0.3, 0.4]})
    # a missing value is a value; a list that is the same everywhere does not vary
    assert ps.varying_keys(df) == ["attack.name", "attack.top_k_ratio", "defense.name"]
    # top_k_ratio is fixed by the attack (it splits nothing further); the defense is not
    assert ps.split_keys(df, lines=["attack.name"]) == (["attack.name"], ["defense.name"])
    assert ps.split_keys(df, panels=["defense.name"]) == (["attack.name"], ["defense.name"])
    assert ps.split_keys(df, lines=["attack.top_k_ratio"]) == (["attack.top_k_ratio"], ["defense.name"])


def _durability_sweep(root):
    window = [4, 5, 6]
    for i, (attack, defense, seed) in enumerate(itertools.product(["backdoor", "neurotoxin"],
                                                                  ["fedavg", "flame"], [0, 1, 2])):
        r = np.arange(1, 16)
        lift = 0.3 if attack == "neurotoxin" else 0.0
        asr = np.where(r < 4, 0.02, np.where(r <= 6, 0.9, np.maximum(0.9 - (0.15 - lift / 3) * (r - 6), 0.02)))
        asr = asr * (0.5 if defense == "flame" else 1.0) + 0.01 * seed
        rounds = pd.DataFrame({"round": r, "clean_accuracy": 0.8 + 0.001 * r,
                               "attack_success_rate": asr, "attack_success_rate_clean": 0.03})
        cfg = {"experiment": {"seed": seed}, "data": {"name": "ecg_synthetic"},
               "attack": {"name": attack, "start_round": 4, "end_round": 6,
                          **({"top_k_ratio": 0.1} if attack == "neurotoxin" else {})},
               "defense": {"name": defense}}
        _write_run(root / f"r{i:02d}", cfg, {"attack_rounds": window}, rounds)
    return window


def test_durability_figure_shades_the_window_and_keeps_attacks_and_defenses_apart(tmp_path):
    window = _durability_sweep(tmp_path / "dur")
    runs = ps.load_runs(tmp_path / "dur")
    rounds = ps.rounds_frame(runs)
    info = ps.plot_durability(rounds, tmp_path / "durability")
    _check_files_and_labels(info)
    _check_no_pooling(info, runs)
    panels = {s.panel for s in info.series}
    assert panels == {"defense=fedavg", "defense=flame"}
    for p in panels:  # per panel: per attack, its ASR, its twin's ASR and its clean accuracy
        got = sorted((s.config["attack.name"], s.metric) for s in info.series if s.panel == p)
        assert got == sorted(itertools.product(["backdoor", "neurotoxin"],
                                               ["attack_success_rate", "attack_success_rate_clean",
                                                "clean_accuracy"]))
        assert [(a, b) for q, a, b in info.shaded if q == p] == [(min(window) - 0.5, max(window) + 0.5)]
    s = next(s for s in info.series if s.panel == "defense=flame" and s.config["attack.name"] == "neurotoxin"
             and s.metric == "attack_success_rate")
    raw = rounds[(rounds["defense.name"] == "flame") & (rounds["attack.name"] == "neurotoxin")]
    ref = raw.groupby("round")["attack_success_rate"].mean()
    assert list(s.mean) == pytest.approx(list(ref.to_numpy())) and set(s.n) == {3}
    assert not info.warnings


class _Tiny(nn.Module):
    def __init__(self, d: int, c: int = 2):
        super().__init__()
        self.f = nn.Sequential(nn.Flatten(), nn.Linear(d, c))

    def forward(self, x):
        return self.f(x)


@pytest.mark.parametrize("modality, shape", [("image", (1, 8, 8)), ("ecg", (1, 50))])
def test_adversarial_examples_stay_in_the_threat_model_and_are_drawn(tmp_path, modality, shape):
    torch.manual_seed(0)
    d = int(np.prod(shape))
    model = _Tiny(d)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((3, *shape), generator=g) if modality == "image" else torch.randn((3, *shape), generator=g)
    y = torch.tensor([0, 1, 0])
    domain = (domain_for("image", shape) if modality == "image"
              else domain_for("ecg", shape, np.full(shape, -3.0), np.full(shape, 3.0)))
    eps = 4 / 255 if modality == "image" else 0.3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex, info = ps.draw_adversarial_examples(model, domain, x, y, tmp_path / f"examples_{modality}", eps=eps,
                                            class_names=["malignant", "benign"],
                                            sampling_rate=100 if modality == "ecg" else None)
    assert np.abs(ex.x_adv - ex.x).max() <= eps + 1e-6
    lo, hi = domain.box(torch.as_tensor(ex.x))
    assert (torch.as_tensor(ex.x_adv) >= lo - 1e-6).all() and (torch.as_tensor(ex.x_adv) <= hi + 1e-6).all()
    with torch.no_grad():
        assert (model(torch.as_tensor(ex.x_adv)).argmax(1).numpy() == ex.pred_adv).all()
        assert (model(torch.as_tensor(ex.x)).argmax(1).numpy() == ex.pred_clean).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    _check_files_and_labels(info)
    n_axes = 3 * 3 + 3 if modality == "image" else 3 * 2  # clean | adversarial | difference (+ colour bars)
    assert len(info.axes) == n_axes
    if modality == "image":
        assert sum("x_adv - x" in yl for _, _, yl in info.axes) == 3  # the colour bars are labelled


def test_loaders_read_a_real_run_and_examples_from_run(tmp_path):
    """A 2-round WDBC run with evasion: the loaders' frames and examples_from_run work on
    the engine's real files."""
    from fedmedsec.config import load_config
    from fedmedsec.engine import run_experiment

    out = tmp_path / "run"
    run_experiment(load_config(raw={}, overrides=[
        "simulation.backend=inprocess", "experiment.mia=false", "experiment.rounds=2",
        "evasion.eps=[0.25]", "evasion.max_records=30", 'evasion.attacks=["fgsm", "pgd"]']), out)
    runs = ps.load_runs(out)
    ev = ps.evasion_frame(runs)
    assert set(ev["attack"]) == {"fgsm", "pgd", "worst_case"} and ev["worst"].sum() == 1
    assert len(ps.rounds_frame(runs)) == 2
    got = ps.examples_from_run(out, n=2)
    ex, info = ps.draw_adversarial_examples(got["model"], got["domain"], got["x"], got["y"],
                                            tmp_path / "wdbc_examples", eps=0.25)
    assert (ex.pred_clean == ex.y).all()  # records the model gets right
    _check_files_and_labels(info)


def test_flips_first_shows_the_records_the_attack_flipped_one_per_class_first():
    y = np.array([0, 0, 1, 1, 0, 1])
    pred = y.copy()
    adv = np.array([0, 1, 1, 0, 1, 1])  # records 1, 3, 4 flipped (classes 0, 1, 0)
    ex = ps.AdversarialExamples(x=np.arange(6.0)[:, None], x_adv=np.arange(6.0)[:, None] + 0.5, y=y,
                                pred_clean=pred, pred_adv=adv, prob_clean=np.full(6, 0.9),
                                prob_adv=np.linspace(0.5, 0.6, 6), attack="pgd", eps=0.1, norm="linf",
                                modality="tabular")
    two = ps.flips_first(ex, 2)
    assert two.x[:, 0].tolist() == [1.0, 3.0]  # one flipped record of each class, in test order
    assert (two.pred_adv != two.pred_clean).all() and two.x_adv[:, 0].tolist() == [1.5, 3.5]
    four = ps.flips_first(ex, 4)
    assert four.x[:, 0].tolist() == [0.0, 1.0, 3.0, 4.0]  # every flip, then the first unflipped
    assert ps.flips_first(ex, 10).y.tolist() == y.tolist()
