"""Gradient inversion (DLG, iDLG, Inverting Gradients), label recovery, scores, pruning.

Each property comes from the papers' definitions: the closed form x = dW_i / db_i of a first
linear layer (checked against a per-row brute-force loop), the sign rule of iDLG, the bias
identity behind label counts, the unrolled local SGD against torch.optim.SGD, and the
defenses' effect (DP-SGD noise, pruning) measured against the baseline guess.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from skimage.metrics import peak_signal_noise_ratio
from torch import nn

from fedmedsec.models import MODELS, build_model
from fedmedsec.privacy.pruning import prune_update, prune_updates
from fedmedsec.privacy.reconstruction import (
    PSNR_CAP_DB,
    ReconstructionParams,
    client_update,
    closed_form_first_linear,
    correlation,
    idlg_label,
    label_counts,
    match_records,
    param_layout,
    psnr,
    reconstruct,
    reconstruction_audit,
    score_reconstruction,
    simulate_update,
    ssim,
    total_variation,
)
from fedmedsec.privacy.reconstruction._functional import frozen_copy
from fedmedsec.training import state_vector

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")

LR = 0.1


def mlp(d_in=10, classes=3, seed=0):
    return build_model("mlp", MODELS.get("mlp").params(hidden=[32, 16]), (d_in,), classes, seed=seed)


def small_cnn(seed=0):
    return build_model("cnn", MODELS.get("cnn").params(channels=[8], groups=2, pool=8, hidden=32),
                       (1, 16, 16), 2, seed=seed)


def small_cnn1d(seed=0):
    # the default widths [16, 32, 32, 32]: narrower nets (one or two blocks of 8-16) leave the
    # input unidentifiable from the cosine (IG matched 0.998 of the gradient direction with a
    # record of correlation -0.4)
    return build_model("cnn1d", MODELS.get("cnn1d").params(groups=2), (1, 48), 3, seed=seed)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def record(seed, d_in=10, label=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, d_in)).astype(np.float32), np.array([label])


def one_step(model, x, y, **kw):
    g = state_vector(model)
    return g, client_update(model, g, x, y, setting=kw.pop("setting", "fedsgd"), lr=LR,
                            generator=gen(0), **kw)


# ---------------------------------------------------------------- the closed form
def brute_force_rows(model, update, rel_tol=1e-2):
    """Reference: every row i of the first Linear with db_i != 0 gives x = dW_i / db_i. The
    update is a difference of float32 weights (error ~1e-8 per entry), so rows whose db_i is
    below rel_tol of the largest are too noisy to check."""
    first = model[1]
    w_sl, b_sl = param_layout(model).slices[:2]
    dw = update[w_sl].double().reshape(first.out_features, first.in_features)
    db = update[b_sl].double()
    tol = rel_tol * float(db.abs().max())
    return [dw[i] / db[i] for i in range(len(db)) if abs(float(db[i])) > tol]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), label=st.integers(0, 2))
def test_closed_form_is_exact_for_one_record_and_agrees_with_every_row(seed, label):
    model = mlp(seed=seed % 7)
    x, y = record(seed, label=label)
    _, u = one_step(model, x, y)
    x_cf = closed_form_first_linear(model, u, (10,))
    rows = brute_force_rows(model, u)
    assert rows, "some first-layer unit must be active"
    for r in rows:
        np.testing.assert_allclose(r.numpy(), x[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(x_cf.numpy(), x[0], rtol=1e-4, atol=1e-4)


def test_closed_form_survives_fedavg_steps_and_clipping_but_not_two_records():
    model = mlp()
    x, y = record(3)
    _, u = one_step(model, x, y, setting="fedavg", local_epochs=3, batch_size=1)
    np.testing.assert_allclose(closed_form_first_linear(model, u, (10,)).numpy(), x[0], atol=1e-4)
    # DP-SGD clipping without noise scales dW and db alike: still exact
    _, u = one_step(model, x, y, dp_noise_multiplier=0.0, dp_max_grad_norm=0.01)
    np.testing.assert_allclose(closed_form_first_linear(model, u, (10,)).numpy(), x[0], atol=1e-4)
    # two records: a mix, not either of them
    x2 = np.concatenate([x, record(4)[0]])
    _, u = one_step(model, x2, np.array([1, 2]))
    x_cf = closed_form_first_linear(model, u, (10,)).numpy()
    assert min(np.abs(x_cf - x2[0]).max(), np.abs(x_cf - x2[1]).max()) > 0.05


def test_closed_form_refuses_models_without_a_first_linear_with_bias():
    with pytest.raises(ValueError, match="first nn.Linear with bias"):
        closed_form_first_linear(small_cnn(), torch.zeros(param_layout(small_cnn()).d), (1, 16, 16))


# ---------------------------------------------------------------- the simulated update
def test_simulated_update_matches_torch_sgd_loop():
    """Reference: torch.optim.SGD over the batches in order, E epochs."""
    model = mlp()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((5, 10)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 1, 0])
    ref = frozen_copy(model).train()
    for p in ref.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(ref.parameters(), lr=LR)
    for _ in range(2):
        for s in range(0, 5, 2):
            opt.zero_grad()
            nn.functional.cross_entropy(ref(x[s:s + 2]), y[s:s + 2]).backward()
            opt.step()
    expected = state_vector(ref) - state_vector(model)
    net = frozen_copy(model)
    layout = param_layout(net)
    got = simulate_update(net, layout, layout.params(state_vector(model)), x, y, lr=LR,
                          local_epochs=2, batch_size=2, create_graph=False)
    torch.testing.assert_close(got, layout.flat(expected), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- labels
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 1000), label=st.integers(0, 2), which=st.sampled_from(["mlp", "cnn1d"]),
       setting=st.sampled_from(["fedsgd", "fedavg"]))
def test_idlg_sign_rule_recovers_the_label_of_one_record(seed, label, which, setting):
    if which == "mlp":
        model, (x, y) = mlp(seed=seed % 5), record(seed, label=label)
    else:
        model = small_cnn1d(seed % 5)
        x = np.random.default_rng(seed).standard_normal((1, 1, 48)).astype(np.float32)
        y = np.array([label])
    kw = {} if setting == "fedsgd" else dict(local_epochs=3, batch_size=1)
    _, u = one_step(model, x, y, setting=setting, **kw)
    assert idlg_label(model, param_layout(model), u, 3) == label


def test_label_counts_are_exact_with_the_true_mean_probabilities():
    """The bias identity n_c = N pbar_c - N g_c is exact when pbar is the records' own."""
    model = mlp()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 10)).astype(np.float32)
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    _, u = one_step(model, x, y)
    with torch.no_grad():
        pbar = torch.softmax(model(torch.from_numpy(x)), -1).mean(0)
    counts = label_counts(model, param_layout(model), u, num_classes=3, num_records=9, lr=LR,
                          local_epochs=1, batch_size=9, mean_probs=pbar)
    assert counts.tolist() == [4, 2, 3]


# ---------------------------------------------------------------- the attacks
@pytest.mark.parametrize("method,iterations", [("ig", 300), ("dlg", 100), ("idlg", 100)])
def test_attacks_recover_one_tabular_record_nearly_exactly(method, iterations):
    model = mlp()
    x, y = record(0, label=2)
    g, u = one_step(model, x, y)
    res = reconstruct(model, g, u, setting="fedsgd", lr=LR, num_records=1, input_shape=(10,),
                      num_classes=3, modality="tabular", generator=gen(0), method=method,
                      iterations=iterations, restarts=2)
    s = score_reconstruction(x, y, res.x_hat, res.y_hat, np.zeros(10, np.float32), "tabular")
    assert s["mse"] < 1e-3 * s["baseline_mse"]
    assert s["correlation"] > 0.999
    assert s["label_accuracy"] == 1.0
    assert res.loss == min(res.restart_losses) and len(res.restart_losses) == 2


def test_ig_fedavg_recovers_two_records_from_local_steps():
    model = mlp()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 10)).astype(np.float32)
    y = np.array([2, 0])
    g = state_vector(model)
    # E = 1, b = 1: the client's shuffle is a permutation of exchangeable dummies
    u = client_update(model, g, x, y, setting="fedavg", lr=LR, local_epochs=1, batch_size=1,
                      generator=gen(3))
    res = reconstruct(model, g, u, setting="fedavg", lr=LR, local_epochs=1, batch_size=1,
                      num_records=2, input_shape=(10,), num_classes=3, modality="tabular",
                      generator=gen(1), iterations=400, restarts=2, labels=torch.tensor([0, 2]))
    s = score_reconstruction(x, y, res.x_hat, res.y_hat, np.zeros(10), "tabular")
    assert s["correlation"] > 0.99 and s["label_accuracy"] == 1.0


def test_ig_on_an_image_cnn_beats_the_baseline_and_stays_in_the_box():
    # a smooth image: a bright blob on a dark background; the baseline is its mean grey
    yy, xx = np.mgrid[:16, :16]
    img = np.exp(-((yy - 5.0) ** 2 + (xx - 10.0) ** 2) / 10.0).astype(np.float32)[None, None]
    base = np.full((1, 16, 16), float(img.mean()), np.float32)
    model = small_cnn()
    g, u = one_step(model, img, np.array([1]))
    res = reconstruct(model, g, u, setting="fedsgd", lr=LR, num_records=1, input_shape=(1, 16, 16),
                      num_classes=2, modality="image", generator=gen(0), iterations=300,
                      tv_weight=1e-2)
    assert float(res.x_hat.min()) >= 0.0 and float(res.x_hat.max()) <= 1.0
    s = score_reconstruction(img, [1], res.x_hat, res.y_hat, base, "image")
    assert s["psnr"] > s["baseline_psnr"] + 10.0
    assert s["ssim"] > 0.9 > s["baseline_ssim"] + 0.5
    assert s["label_accuracy"] == 1.0


def test_ig_on_ecg_beats_the_baseline():
    t = np.linspace(0, 4 * np.pi, 48)
    sig = (np.sin(t) + 0.5 * np.sin(3 * t)).astype(np.float32)
    sig = ((sig - sig.mean()) / sig.std())[None, None]
    model = small_cnn1d()
    g, u = one_step(model, sig, np.array([0]))
    res = reconstruct(model, g, u, setting="fedsgd", lr=LR, num_records=1, input_shape=(1, 48),
                      num_classes=3, modality="ecg", generator=gen(0), iterations=300, tv_weight=1e-2)
    s = score_reconstruction(sig, [0], res.x_hat, res.y_hat, np.zeros((1, 48)), "ecg")
    assert s["correlation"] > 0.8 > s["baseline_correlation"]
    assert s["mse"] < 0.5 * s["baseline_mse"]


# ---------------------------------------------------------------- defenses
def _ig(model, g, u, seed=1):
    return reconstruct(model, g, u, setting="fedsgd", lr=LR, num_records=1, input_shape=(10,),
                       num_classes=3, modality="tabular", generator=gen(seed), iterations=300)


@pytest.fixture(scope="module")
def tabular_pool():
    rng = np.random.default_rng(0)
    return rng.standard_normal((200, 10)).astype(np.float32)


def test_dp_sgd_noise_brings_the_reconstruction_to_the_baseline(tabular_pool):
    """One Opacus DP-SGD step on B = 1 at sigma = 1 (C = 1): the leak is gone; at sigma = 0
    (clipping only) it is intact, so the noise, not the clipping, is what defends."""
    model = mlp()
    base = tabular_pool.mean(0)
    x, y = record(11, label=1)
    for sigma, leaks in ((0.0, True), (1.0, False)):
        g, u = one_step(model, x, y, dp_noise_multiplier=sigma, dp_max_grad_norm=1.0)
        s = score_reconstruction(x, y, _ig(model, g, u).x_hat, [1], base, "tabular")
        cf = score_reconstruction(x, y, closed_form_first_linear(model, u, (10,))[None], y, base, "tabular")
        if leaks:
            assert s["mse"] < 1e-3 * s["baseline_mse"] and cf["mse"] < 1e-6
        else:
            assert s["mse"] > 0.5 * s["baseline_mse"] and abs(s["correlation"]) < 0.5
            assert cf["mse"] > 0.5 * cf["baseline_mse"] and abs(cf["correlation"]) < 0.5


def test_high_pruning_ratio_degrades_the_reconstruction(tabular_pool):
    model = mlp()
    base = tabular_pool.mean(0)
    x, y = record(0, label=1)
    g, u = one_step(model, x, y)
    clean = score_reconstruction(x, y, _ig(model, g, u).x_hat, y, base, "tabular")
    pruned = score_reconstruction(x, y, _ig(model, g, prune_update(u, 0.99)).x_hat, y, base, "tabular")
    assert clean["mse"] < 1e-3 * clean["baseline_mse"]
    # 99% pruning (9 of 931 coordinates kept) costs the attack three orders of magnitude in
    # MSE; it is no full defense: the kept first-layer entries still carry ratios x_j / x_k
    # (measured over 5 records: MSE 0.4-0.8 of the baseline's, correlation 0.47-0.91)
    assert pruned["mse"] > 0.25 * pruned["baseline_mse"]
    assert pruned["mse"] > 1000 * clean["mse"] and pruned["correlation"] < clean["correlation"] - 0.05


def brute_force_prune(u: list[float], ratio: float) -> list[float]:
    k = math.floor(ratio * len(u))
    order = sorted(range(len(u)), key=lambda j: (abs(u[j]), j))
    drop = set(order[:k])
    return [0.0 if j in drop else v for j, v in enumerate(u)]


@settings(max_examples=60, deadline=None)
@given(u=st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=40),
       ratio=st.floats(0.0, 0.999))
def test_pruning_zeroes_exactly_the_smallest_magnitudes(u, ratio):
    t = torch.tensor(u, dtype=torch.float32)
    before = t.clone()
    out = prune_update(t, ratio)
    assert out.tolist() == brute_force_prune(t.tolist(), ratio)
    assert torch.equal(t, before)  # input untouched
    k = math.floor(ratio * len(u))
    kept = out != 0
    if k and kept.any():
        assert float(before.abs()[~kept].max()) <= float(before.abs()[kept].min())


def test_prune_rows_and_bad_ratio():
    u = torch.tensor([[3.0, -1.0, 2.0, 0.5], [0.1, 0.2, -0.3, 0.4]])
    assert prune_updates(u, 0.5).tolist() == [[3.0, 0.0, 2.0, 0.0], [0.0, 0.0, -0.30000001192092896, 0.4000000059604645]]
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="privacy.prune_ratio"):
            prune_update(u[0], bad)


# ---------------------------------------------------------------- metrics
def test_metrics_on_known_pairs():
    rng = np.random.default_rng(0)
    a = rng.random((1, 16, 16))
    assert psnr(a, a) == PSNR_CAP_DB  # identical: capped, not inf
    assert ssim(a, a) == pytest.approx(1.0)
    assert correlation(a, a) == pytest.approx(1.0)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0))
    assert psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)) == pytest.approx(20.0)
    assert ssim(a, b) < 1.0
    assert correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert correlation(a, -a) == pytest.approx(-1.0)
    assert correlation(a, np.ones_like(a)) == 0.0


def test_scores_match_records_by_the_best_assignment_and_use_the_baseline():
    rng = np.random.default_rng(1)
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    x_hat = x[perm]
    assert match_records(x, x_hat).tolist() == np.argsort(perm).tolist()
    y = np.array([0, 1, 1, 0])
    base = x.mean(0)
    s = score_reconstruction(x, y, x_hat, y[perm], base, "image")
    assert s["psnr"] == PSNR_CAP_DB and s["ssim"] == pytest.approx(1.0)
    assert s["mse"] == 0.0 and s["label_accuracy"] == 1.0 and s["label_count_accuracy"] == 1.0
    assert s["baseline_psnr"] == pytest.approx(np.mean([psnr(xi, base) for xi in x]))
    assert s["baseline_mse"] > 0 and s["baseline_ssim"] < 1
    t = score_reconstruction(x[:, 0, 0], y, x_hat[:, 0, 0], y[perm], base[0, 0], "tabular")
    assert t["psnr"] is None and t["ssim"] is None and t["correlation"] == pytest.approx(1.0)


def test_total_variation_definition():
    img = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # vertical diffs: |1-0|, |1-1| -> mean 0.5; horizontal: |1-0|, |1-1| -> mean 0.5
    assert float(total_variation(img, "image")) == pytest.approx(1.0)
    assert float(total_variation(torch.tensor([[[0.0, 2.0, 1.0]]]), "ecg")) == pytest.approx(1.5)


# ---------------------------------------------------------------- the audit and its config
def test_audit_with_secure_aggregation_reports_the_target_against_the_baseline(tabular_pool):
    model = mlp()
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((4, 1, 10)).astype(np.float32)
    params = ReconstructionParams(enabled=True, iterations=300, batch_size=1)
    common = dict(params=params, modality="tabular", num_classes=3, train_lr=LR, local_epochs=1,
                  local_batch_size=1, baseline=tabular_pool.mean(0))
    alone = reconstruction_audit(model, state_vector(model), (xs[0], np.array([1])),
                                 generator=gen(0), **common)
    summed = reconstruction_audit(model, state_vector(model), (xs[0], np.array([1])),
                                  others=[(xs[i], np.array([i % 3])) for i in (1, 2, 3)],
                                  secure_aggregation=True, generator=gen(0), proxy_x=tabular_pool, **common)
    assert alone["observed"] == "update" and summed["observed"] == "secure_sum"
    assert summed["hospitals_in_sum"] == 4 and "all_records" in summed
    for k in ("psnr", "baseline_psnr", "ssim", "baseline_ssim"):
        assert alone[k] is None
    assert alone["mse"] < 1e-3 * alone["baseline_mse"]
    assert summed["mse"] > 100 * alone["mse"]


def test_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        ReconstructionParams(enabled=True, strength=3)
    with pytest.raises(ValidationError, match="method"):
        ReconstructionParams(method="gan")
    model = mlp()
    g = state_vector(model)
    kw = dict(setting="fedsgd", lr=LR, num_records=1, input_shape=(10,), num_classes=3,
              modality="tabular", generator=gen(0))
    with pytest.raises(ValueError, match="reconstruction.method"):
        reconstruct(model, g, g * 0, **{**kw, "method": "gan"})
    with pytest.raises(ValueError, match="reconstruction.setting"):
        reconstruct(model, g, g * 0, **{**kw, "setting": "fedprox"})
    with pytest.raises(ValueError, match="fedsgd"):
        reconstruct(model, g, g * 0, **kw, local_epochs=2)
    with pytest.raises(ValueError, match="observed_update"):
        reconstruct(model, g, g[:-1], **kw)


def test_reconstruct_does_not_modify_its_inputs():
    model = mlp()
    g = state_vector(model)
    x, y = record(0)
    _, u = one_step(model, x, y)
    g0, u0, w0 = g.clone(), u.clone(), state_vector(model)
    reconstruct(model, g + 0.0, u, setting="fedsgd", lr=LR, num_records=1, input_shape=(10,),
                num_classes=3, modality="tabular", generator=gen(0), iterations=5)
    assert torch.equal(u, u0) and torch.equal(g, g0) and torch.equal(state_vector(model), w0)
    assert all(p.requires_grad for p in model.parameters())
