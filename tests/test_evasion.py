"""Evasion at the bedside: FGSM / PGD / APGD within the modality's domain, robust accuracy
as summable counts, feature squeezing, federated adversarial training (plain and DP-SGD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedmedsec.evasion import (
    AdversarialTrainingConfig,
    EvasionConfig,
    adversarial_training_hooks,
    check_attacks,
    combine_reports,
    domain_for,
    feature_squeezing_detection,
    fgsm,
    fit_threshold,
    pgd,
    resolve_immutable,
    robustness_report,
    run_attack,
)

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(d: int, c: int = 2, width: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, c))


def fit(model: nn.Module, x, y, steps: int = 200, lr: float = 0.02, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def blobs(n: int, seed: int = 0, size: int = 8):
    """Images [n, 1, size, size] in [0, 1]: class 0 has a brighter left half, class 1 a
    brighter right half (contrast 0.1), plus N(0, 0.1^2) pixel noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    left = np.repeat((np.arange(size) < size // 2).astype(np.float32)[None, :], size, 0)
    x = np.where(y[:, None, None] == 0, left, left[:, ::-1]) * 0.1 + 0.45
    x = x + rng.normal(0, 0.1, (n, size, size))
    return np.clip(x, 0, 1).astype(np.float32)[:, None], y.astype(np.int64)


def small_cnn(seed: int = 0, c: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 16), nn.ReLU(), nn.Linear(16, c))


@pytest.fixture(scope="module")
def image_task():
    x, y = blobs(200, 0)
    m = fit(small_cnn(0), x, y, steps=150, lr=0.01)
    xt, yt = blobs(64, 1)
    return m, torch.tensor(xt), torch.tensor(yt)


def tsipras(n: int, seed: int, d: int = 20, eta: float = 0.3, p: float = 0.9):
    """Tsipras et al. (ICLR 2019) toy: x_0 = +-1 agrees with y with prob p (robust feature),
    x_1..x_d ~ N(eta y, 1) (weak, non-robust: an L-inf shift of 2 eta flips them all)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 2 * y - 1
    x0 = np.where(rng.random(n) < p, s, -s)[:, None].astype(np.float32)
    rest = rng.normal(eta * s[:, None], 1.0, (n, d)).astype(np.float32)
    return np.concatenate([x0, rest], 1), y.astype(np.int64)


# ------------------------------------------------------------------ FGSM closed form


def test_fgsm_is_the_closed_form_sign_step_on_a_logistic_model():
    # For softmax regression z = W x + b with 2 classes, grad_x CE(z, y) = p_o (w_o - w_y)
    # (o the other class), so FGSM = x + eps sign(w_o - w_y) and FGM-L2 = x + eps u / ||u||.
    torch.manual_seed(1)
    f = 6
    m = nn.Linear(f, 2)
    x = torch.randn(10, f)
    y = torch.randint(0, 2, (10,))
    dom = domain_for("tabular", (f,), np.full(f, -50.0), np.full(f, 50.0))
    w = m.weight.detach()
    u = w[1 - y] - w[y]
    eps = 0.3
    assert torch.allclose(fgsm(m, x, y, eps=eps, domain=dom), x + eps * u.sign(), atol=1e-6)
    l2 = fgsm(m, x, y, eps=eps, norm="l2", domain=dom)
    assert torch.allclose(l2, x + eps * u / u.norm(dim=1, keepdim=True), atol=1e-6)
    # targeted to t: descend CE(z, t): for binary, rows with y != t move like untargeted
    t = 1
    xt = fgsm(m, x, y, eps=eps, domain=dom, targeted_label=t)
    expect = x + eps * (w[t] - w[1 - t]).sign()
    assert torch.allclose(xt, expect.expand_as(x), atol=1e-6)
    # images: the same step clipped to [0, 1], via torchattacks and via the reference
    xi = torch.rand(10, 1, 2, 3)
    mi = nn.Sequential(nn.Flatten(), m)
    dimg = domain_for("image", (1, 2, 3))
    expect = (xi + eps * u.sign().reshape(10, 1, 2, 3)).clamp(0, 1)
    for backend in ("torchattacks", "reference"):
        out = run_attack("fgsm", mi, xi, y, eps=eps, domain=dimg, generator=gen(), backend=backend)
        assert torch.allclose(out, expect, atol=1e-6), backend


# ------------------------------------------------------------------ constraints (property)


@settings(max_examples=16, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2"]),
       eps=st.floats(0.01, 2.0), attack=st.sampled_from(["fgsm", "pgd", "apgd", "apgd-dlr"]),
       targeted=st.booleans())
def test_attacks_stay_in_ball_box_and_keep_immutable_features(seed, norm, eps, attack, targeted):
    rng = np.random.default_rng(seed)
    f, n = 7, 12
    x = rng.normal(size=(n, f)).astype(np.float32)
    low = rng.uniform(-1.5, -0.2, f).astype(np.float32)
    high = rng.uniform(0.2, 1.5, f).astype(np.float32)
    imm = np.zeros(f, bool)
    imm[[0, 3]] = True
    dom = domain_for("tabular", (f,), low, high, imm)
    m = mlp(f, 4, seed=seed % 7)
    y = torch.as_tensor(rng.integers(0, 4, n))
    xt = torch.as_tensor(x)
    xa = run_attack(attack, m, xt, y, eps=eps, norm=norm, steps=5, domain=dom, generator=gen(seed),
                    targeted_label=2 if targeted else None)
    d = xa - xt
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-5
    else:
        assert (d.norm(dim=1) <= eps + 1e-5).all()
    lo = np.minimum(low, x)
    hi = np.maximum(high, x)  # a record outside the training range keeps its own value
    assert (xa.numpy() >= lo - 1e-6).all() and (xa.numpy() <= hi + 1e-6).all()
    assert torch.equal(xa[:, imm], xt[:, imm])


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd", "apgd-dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_image_attacks_through_torchattacks_stay_in_ball_and_unit_range(attack, norm):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 3, (8,))
    m = small_cnn(0, c=3)
    eps = 8 / 255 if norm == "linf" else 0.5
    xa = run_attack(attack, m, x, y, eps=eps, norm=norm, steps=5, domain=domain_for("image", (1, 8, 8)),
                    generator=gen())
    d = (xa - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert xa.min() >= 0 and xa.max() <= 1


def test_ecg_affine_map_keeps_eps_in_signal_units():
    # torchattacks sees u = (x - lo) / (hi - lo) in [0, 1] and eps / (hi - lo); FGSM through
    # it must equal the reference FGSM in the signal's own units.
    torch.manual_seed(0)
    x = torch.randn(6, 2, 30)
    y = torch.randint(0, 4, (6,))
    m = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                      nn.Flatten(), nn.Linear(4, 4))
    for low, high in ((None, None), (np.full((2, 30), -4.0), np.full((2, 30), 5.0))):
        dom = domain_for("ecg", (2, 30), low, high)
        a = run_attack("fgsm", m, x, y, eps=0.2, domain=dom, generator=gen(), backend="torchattacks")
        b = run_attack("fgsm", m, x, y, eps=0.2, domain=dom, generator=gen(), backend="reference")
        assert torch.allclose(a, b, atol=1e-5)
        assert (a - x).abs().max() <= 0.2 + 1e-5
        p = run_attack("pgd", m, x, y, eps=0.2, steps=5, domain=dom, generator=gen())
        assert (p - x).abs().max() <= 0.2 + 1e-5


# ------------------------------------------------------------------ PGD against references


def _brute_force_pgd(model, x0, y, eps, norm, steps, alpha, lo, hi, mutable):
    """Madry's PGD written as loops over records and coordinates (no random start)."""
    out = x0.clone()
    for i in range(x0.shape[0]):
        xi = x0[i].clone()
        for _ in range(steps):
            xr = xi.clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xr[None]), y[i: i + 1])
            (g,) = torch.autograd.grad(loss, xr)
            g = g.flatten().tolist()
            cur, orig = xi.flatten().tolist(), x0[i].flatten().tolist()
            lo_i, hi_i, mut = lo[i].flatten().tolist(), hi[i].flatten().tolist(), mutable.flatten().tolist()
            if norm == "linf":
                new = []
                for j in range(len(cur)):
                    if not mut[j]:
                        new.append(orig[j])
                        continue
                    s = (g[j] > 0) - (g[j] < 0)
                    v = min(max(cur[j] + alpha * s, orig[j] - eps), orig[j] + eps)
                    new.append(min(max(v, lo_i[j]), hi_i[j]))
            else:
                gn = math.sqrt(sum(g[j] ** 2 for j in range(len(g)) if mut[j])) + 1e-12
                d = [(cur[j] + alpha * g[j] / gn - orig[j]) if mut[j] else 0.0 for j in range(len(cur))]
                dn = math.sqrt(sum(v * v for v in d))
                scale = min(1.0, eps / (dn + 1e-12))
                new = [min(max(orig[j] + d[j] * scale, lo_i[j]), hi_i[j]) for j in range(len(cur))]
            xi = torch.tensor(new, dtype=torch.float32).reshape(x0[i].shape)
        out[i] = xi
    return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reference_pgd_matches_a_brute_force_loop_with_box_and_mask(norm):
    rng = np.random.default_rng(3)
    f = 5
    x = torch.tensor(rng.normal(size=(4, f)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 1])
    low, high = np.full(f, -0.8, np.float32), np.full(f, 0.9, np.float32)
    imm = np.array([False, True, False, False, False])
    dom = domain_for("tabular", (f,), low, high, imm)
    m = mlp(f, 3, seed=2)
    eps = 0.4 if norm == "linf" else 0.6
    ours = pgd(m, x, y, eps=eps, norm=norm, steps=6, domain=dom, random_start=False)
    lo, hi = dom.box(x)
    ref = _brute_force_pgd(m, x, y, eps, norm, 6, 2.5 * eps / 6, lo, hi, torch.tensor(~imm))
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reference_pgd_matches_torchattacks_on_unit_range_images(norm):
    import torchattacks

    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 3, (8,))
    m = small_cnn(1, c=3).eval()
    eps, steps = (8 / 255, 7) if norm == "linf" else (0.5, 7)
    alpha = 2.5 * eps / steps
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ta = cls(m, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = pgd(m, x, y, eps=eps, norm=norm, steps=steps, domain=domain_for("image", (1, 8, 8)),
               random_start=False)
    assert torch.allclose(ours, ta, atol=1e-5)


def test_torchattacks_backend_is_deterministic_and_leaves_the_global_rng_alone():
    m = small_cnn(0)
    torch.manual_seed(123)
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 2, (6,))
    before = torch.get_rng_state()
    d = domain_for("image", (1, 8, 8))
    a = run_attack("pgd", m, x, y, eps=0.05, steps=3, domain=d, generator=gen(5))
    assert torch.equal(torch.get_rng_state(), before)
    b = run_attack("pgd", m, x, y, eps=0.05, steps=3, domain=d, generator=gen(5))
    assert torch.equal(a, b)


# ------------------------------------------------------------------ APGD


def spheres(n: int, seed: int, d: int = 10):
    """Concentric spheres (Gilmer et al. 2018): class 0 radius in [0.5, 1], class 1 in
    [1.3, 1.8]; the boundary is curved, so a fixed-step PGD is not optimal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    v = rng.normal(size=(n, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = np.where(y == 0, rng.uniform(0.5, 1.0, n), rng.uniform(1.3, 1.8, n))
    return (v * r[:, None]).astype(np.float32), y.astype(np.int64)


def _acc(m, xa, y) -> float:
    with torch.no_grad():
        return float((m(xa).argmax(1) == y).float().mean())


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_model(image_task):
    x, y = spheres(1000, 0)
    xt, yt = map(torch.tensor, spheres(300, 1))
    m = fit(mlp(10, 2, width=64, seed=0), x, y, steps=400, lr=0.01)
    dom = domain_for("tabular", (10,), np.full(10, -3.0), np.full(10, 3.0))
    assert _acc(m, xt, yt) > 0.95
    for eps in (0.1, 0.15):
        rob = {a: _acc(m, run_attack(a, m, xt, yt, eps=eps, steps=20, domain=dom, generator=gen(1)), yt)
               for a in ("pgd", "apgd")}
        assert rob["pgd"] < 0.8  # the budget bites
        assert rob["apgd"] <= rob["pgd"] + 0.02
    # images: the reference APGD and torchattacks' agree, and both beat clean accuracy
    m, x, y = image_task
    d = domain_for("image", (1, 8, 8))
    acc = {b: _acc(m, run_attack("apgd", m, x, y, eps=0.05, steps=10, domain=d, generator=gen(1),
                                 backend=b), y) for b in ("reference", "torchattacks")}
    pgd_acc = _acc(m, run_attack("pgd", m, x, y, eps=0.05, steps=10, domain=d, generator=gen(1)), y)
    assert acc["reference"] < _acc(m, x, y) and acc["reference"] <= pgd_acc + 0.03
    assert abs(acc["reference"] - acc["torchattacks"]) <= 0.05


def test_dlr_needs_three_classes_and_autoattack_needs_one_range():
    with pytest.raises(ValueError, match="apgd-dlr.*3 classes.*binary"):
        check_attacks(["apgd-dlr"], num_classes=2)
    with pytest.raises(ValueError, match="targeted needs >= 4"):
        check_attacks(["apgd-dlr"], num_classes=3, targeted=True)
    tab = domain_for("tabular", (3,), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="autoattack"):
        check_attacks(["autoattack"], num_classes=5, domain=tab)
    with pytest.raises(ValueError, match="image only, not ecg"):
        check_attacks(["autoattack"], num_classes=4, domain=domain_for("ecg", (1, 50)))
    check_attacks(["autoattack", "apgd-dlr"], num_classes=4, domain=domain_for("image", (1, 8, 8)))
    with pytest.raises(ValueError, match="unknown attack"):
        check_attacks(["cw"], num_classes=2)


# ------------------------------------------------------------------ report


def test_report_rows_robust_never_above_clean_and_counts_consistent(image_task):
    m, x, y = image_task
    rows = robustness_report(m, x, y, attacks=["fgsm", "pgd", "apgd"], eps_list=[0.0, 0.03, 0.06],
                             steps=5, modality="image", generator=gen(), positive_label=0)
    assert len(rows) == 3 * 4
    by = {}
    for r in rows:
        by[(r["attack"], r["eps"])] = r
        assert r["correct_robust"] <= r["correct_clean"] and r["robust_accuracy"] <= r["clean_accuracy"]
        assert sum(np.diag(r["confusion_robust"])) == r["correct_robust"]
        assert np.sum(r["confusion_clean"]) == r["n"] == len(y)
        assert r["positive_total"] == int((y == 0).sum())
        assert r["sensitivity_robust"] <= r["sensitivity_clean"]
    for eps in (0.03, 0.06):
        w = by[("worst_case", eps)]["correct_robust"]
        assert w <= min(by[(a, eps)]["correct_robust"] for a in ("fgsm", "pgd", "apgd"))
    assert by[("pgd", 0.0)]["correct_robust"] == by[("pgd", 0.0)]["correct_clean"]
    assert by[("pgd", 0.06)]["robust_accuracy"] < by[("pgd", 0.06)]["clean_accuracy"]


def test_targeted_report_counts_only_other_classes_and_hits_the_target(image_task):
    m, x, y = image_task
    rows = robustness_report(m, x, y, attacks=["pgd", "apgd"], eps_list=[0.06], steps=10,
                             targeted_label=1, modality="image", generator=gen(), positive_label=0)
    for r in rows:
        assert r["targeted"] and r["target_eligible"] == int((y != 1).sum())
        assert r["target_hits_robust"] >= r["target_hits_clean"]
        assert r["targeted_success_rate"] > r["clean_target_rate"]
        # a hit on a class-0 record is a missed positive
        assert r["positive_total"] - r["positive_hit_robust"] >= r["target_hits_robust"]


def test_combined_hospital_counts_equal_the_pooled_report(image_task):
    m, x, y = image_task
    kw = dict(attacks=["fgsm"], eps_list=[0.03, 0.08], modality="image", positive_label=0)
    pooled = robustness_report(m, x, y, generator=gen(), **kw)
    parts = [robustness_report(m, x[s], y[s], generator=gen(), **kw)
             for s in (slice(0, 20), slice(20, 64))]
    comb = combine_reports(parts)
    for p, c in zip(sorted(pooled, key=lambda r: r["eps"]), sorted(comb, key=lambda r: r["eps"])):
        assert c["hospitals"] == 2
        for k in ("n", "correct_clean", "correct_robust", "positive_hit_robust", "confusion_robust",
                  "robust_accuracy", "sensitivity_robust"):
            assert c[k] == p[k], k


def test_max_records_caps_the_evaluated_rows(image_task):
    m, x, y = image_task
    rows = robustness_report(m, x, y, attacks=["fgsm"], eps_list=[0.05], modality="image",
                             generator=gen(), max_records=10)
    assert rows[0]["n"] == 10
    empty = robustness_report(m, x[:0], y[:0], attacks=["pgd"], eps_list=[0.05], modality="image",
                              generator=gen(), num_classes=2)
    assert empty[0]["n"] == 0 and math.isnan(empty[0]["robust_accuracy"])


# ------------------------------------------------------------------ feature squeezing


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=60), st.floats(0.0, 0.5))
def test_threshold_flags_at_most_fpr_of_clean_scores(scores, fpr):
    t = fit_threshold(np.array(scores), fpr)
    assert np.mean(np.array(scores) > t) <= fpr + 1e-12
    assert t in scores


def test_feature_squeezing_detects_fgsm_better_than_chance(image_task):
    m, x, y = image_task
    xa = run_attack("fgsm", m, x, y, eps=0.06, domain=domain_for("image", (1, 8, 8)), generator=gen())
    with torch.no_grad():
        fooled = m(xa).argmax(1) != y
    assert fooled.sum() >= 5
    cal, _ = blobs(200, 7)
    res = feature_squeezing_detection(m, x, xa[fooled], modality="image", fpr=0.05,
                                      x_calibration=torch.tensor(cal))
    assert res.false_positives <= 0.05 * res.n_calibration
    assert res.detection_rate > 0.3 and res.auc > 0.75  # chance: 0.05 and 0.5
    rows = robustness_report(m, x, y, attacks=["fgsm"], eps_list=[0.06], modality="image",
                             generator=gen(), detector="feature_squeezing")
    assert rows[0]["n_successful"] == int(fooled.sum()) and rows[0]["detection_rate"] > 0.3


# ------------------------------------------------------------------ adversarial training


def _robust_acc(m, x, y, dom, eps):
    xa = run_attack("pgd", m, x, y, eps=eps, steps=10, domain=dom, generator=gen(9))
    with torch.no_grad():
        return float((m(xa).argmax(1) == y).float().mean()), float((m(x).argmax(1) == y).float().mean())


def test_adversarial_training_raises_robust_accuracy():
    from fedmedsec.training import train_local

    x, y = tsipras(800, 0)
    xt, yt = tsipras(400, 1)
    dom = domain_for("tabular", (x.shape[1],), x.min(0), x.max(0))
    eps = 0.5
    res = {}
    for mode in ("none", "pgd"):
        m = mlp(x.shape[1], 2, width=16, seed=0)
        hooks = (adversarial_training_hooks(eps=eps, steps=5, fraction=1.0, domain=dom, generator=gen(3))
                 if mode == "pgd" else None)
        train_local(m, x, y, epochs=8, batch_size=32, lr=0.05, momentum=0.9, generator=gen(0), hooks=hooks)
        assert m.training  # the hook left the model in train mode
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
        res[mode] = _robust_acc(m, torch.tensor(xt), torch.tensor(yt), dom, eps)
    (rob_std, clean_std), (rob_at, clean_at) = res["none"], res["pgd"]
    assert clean_std > 0.9
    assert rob_std < 0.5  # the weak features are flipped
    assert rob_at > rob_std + 0.3 and rob_at > 0.8  # AT relies on the robust feature
    assert clean_at > 0.8  # at a clean-accuracy cost (p = 0.9 caps the robust feature)


def test_hook_touches_no_parameter_gradient_nor_grad_sample_under_opacus():
    from opacus import GradSampleModule

    x, y = tsipras(16, 0, d=6)
    xb, yb = torch.tensor(x), torch.tensor(y)
    dom = domain_for("tabular", (7,), x.min(0), x.max(0))
    m = mlp(7, 2, seed=1)
    twin = mlp(7, 2, seed=1)  # same weights, no hooks: the reference per-example gradients
    gsm = GradSampleModule(m, batch_first=True, loss_reduction="mean")
    gsm.train()
    hook = adversarial_training_hooks(eps=0.3, steps=3, fraction=0.5, domain=dom, generator=gen(2))
    xa, ya = hook.batch(m, xb, yb)
    assert m.training and torch.equal(ya, yb)
    assert int((xa != xb).any(1).sum()) == 8  # half the rows replaced
    for p in m.parameters():
        assert p.grad is None and getattr(p, "grad_sample", None) is None
    # the DP step after the hook sees exactly the per-example gradients of the new batch
    nn.functional.cross_entropy(gsm(xa), ya).backward()
    for (name, p), q in zip(m.named_parameters(), twin.parameters()):
        ref = torch.stack([torch.autograd.grad(nn.functional.cross_entropy(twin(xa[i: i + 1]), ya[i: i + 1]), q)[0]
                           for i in range(16)])
        assert p.grad_sample.shape == ref.shape and torch.allclose(p.grad_sample, ref, atol=1e-5), name
    gsm._close()


def test_dp_sgd_epoch_with_the_hook_keeps_the_accountant_steps():
    from fedmedsec.privacy.dp_sgd import steps_per_epoch, train_dp_sgd

    x, y = tsipras(96, 0, d=6)
    dom = domain_for("tabular", (7,), x.min(0), x.max(0))
    out = {}
    for mode in ("none", "pgd"):
        m = mlp(7, 2, seed=0)
        hooks = (adversarial_training_hooks(eps=0.3, steps=3, fraction=0.5, domain=dom, generator=gen(4))
                 if mode == "pgd" else None)
        out[mode] = train_dp_sgd(m, x, y, epochs=1, batch_size=16, lr=0.1, momentum=0.0,
                                 noise_multiplier=1.0, max_grad_norm=1.0, history=[],
                                 generator=gen(0), delta=1e-5, hooks=hooks)
        assert m.training  # train_dp_sgd restores the mode; the hook did not change it
        assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in m.parameters())
    assert out["pgd"].steps == out["none"].steps == steps_per_epoch(96, 16)
    assert out["pgd"].history == out["none"].history
    assert out["pgd"].epsilon == out["none"].epsilon
    assert math.isfinite(out["pgd"].loss)


# ------------------------------------------------------------------ config and domain


def test_config_defaults_and_validation():
    c = EvasionConfig()
    assert not c.enabled and c.attacks == ["fgsm", "pgd", "apgd"] and c.detector_fpr == 0.05
    assert EvasionConfig(eps=[0.01]).enabled
    for bad in ({"attacks": ["cw"]}, {"targeted": True}, {"eps": [-1.0]}, {"norm": "l1"},
                {"every": -1}, {"epsilon": [0.1]}, {"targeted": True, "target_label": 1,
                                                    "attacks": ["autoattack"]}):
        with pytest.raises(ValueError):
            EvasionConfig(**bad)
    a = AdversarialTrainingConfig()
    assert a.adversarial == "none"
    with pytest.raises(ValueError, match="adversarial_eps"):
        AdversarialTrainingConfig(adversarial="pgd")
    with pytest.raises(ValueError):
        AdversarialTrainingConfig(adversarial="pgd", adversarial_eps=0.1, adversarial_fraction=1.5)


def test_immutable_by_name_or_index():
    names = ["age", "sex", "bp"]
    assert resolve_immutable(["age", 2], 3, names).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="evasion.immutable = 'bmi'"):
        resolve_immutable(["bmi"], 3, names)
    with pytest.raises(ValueError, match="only tabular"):
        domain_for("image", (1, 2, 2), immutable=[0])
    with pytest.raises(ValueError, match="feature_low"):
        domain_for("tabular", (3,))


def test_config_lists_the_registered_attacks():
    from fedmedsec.evasion import attacks, config

    assert tuple(sorted(config.ATTACK_NAMES)) == tuple(sorted(attacks.ATTACK_NAMES))
