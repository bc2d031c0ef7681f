"""DP-SGD (record level), DP-FedAvg (client level) and their accounting.

Properties checked against the definitions (Abadi et al. 2016; McMahan et al. 2018) and
against Opacus's own accountant, not just that the code runs.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from sklearn.datasets import load_breast_cancer
from torch import nn

from fedmedsec.privacy import (
    central_dp_epsilon_or_reason,
    central_epsilon,
    clip_updates,
    dp_fedavg,
    epsilon_of,
    make_private_compatible,
    noise_for_target_epsilon,
    steps_per_epoch,
    train_dp_sgd,
)

DELTA = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two torch threads on a busy 2-core machine are ~100x slower than one (spin waits).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


@pytest.fixture(scope="module")
def wdbc():
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return x[:320], y[:320].astype(np.int64)  # N = 320: batch 32 gives q = 0.1 exactly


def mlp(seed: int = 0, d_in: int = 30) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, 2))


def run(model, x, y, **kw):
    args = dict(epochs=1, batch_size=32, lr=0.1, momentum=0.0, noise_multiplier=1.0,
                max_grad_norm=1.0, history=[], generator=torch.Generator().manual_seed(0),
                delta=DELTA)
    args.update(kw)
    return train_dp_sgd(model, x, y, **args)


# ---------------------------------------------------------------- accounting


def test_epsilon_of_equals_opacus_rdp_accountant_stepped():
    acc = RDPAccountant()
    for _ in range(50):
        acc.step(noise_multiplier=1.1, sample_rate=0.02)
    for _ in range(30):
        acc.step(noise_multiplier=0.8, sample_rate=0.05)
    ours = epsilon_of([(1.1, 0.02, 20), (0.8, 0.05, 30), (1.1, 0.02, 30)], DELTA)
    assert ours == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-12)
    assert epsilon_of([], DELTA) == 0.0
    assert epsilon_of([(0.0, 0.1, 1)], DELTA) == math.inf


def test_rounds_accumulate_and_match_opacus(wdbc):
    x, y = wdbc
    model, hist, eps = mlp(), [], []
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        before = list(hist)
        res = run(model, x, y, epochs=2, history=hist, generator=gen)
        assert hist == before  # the caller's history is not mutated
        assert res.history == before + [(1.0, 0.1, 20)]
        assert res.steps == 2 * steps_per_epoch(320, 32) == 20
        hist = res.history
        eps.append(res.epsilon)
    assert eps[0] < eps[1] < eps[2]
    acc = RDPAccountant()
    acc.history = [(1.0, 0.1, 60)]
    assert eps[-1] == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-12)


def test_epsilon_equals_one_long_make_private_run(wdbc):
    """3 rounds x 2 epochs of ours == one PrivacyEngine run of 6 epochs (same q, sigma)."""
    x, y = wdbc
    ds = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="Secure RNG"):
        engine = PrivacyEngine(accountant="rdp")
    gm, opt, dl = engine.make_private(
        module=model, optimizer=opt, data_loader=torch.utils.data.DataLoader(ds, batch_size=32),
        noise_multiplier=1.0, max_grad_norm=1.0,
    )
    for _ in range(6):
        for xb, yb in dl:
            opt.zero_grad()
            out = gm(xb)
            (nn.functional.cross_entropy(out, yb) if len(yb) else out.sum() * 0).backward()
            opt.step()
    assert engine.accountant.history == [(1.0, 0.1, 60)]

    hist, gen, m2 = [], torch.Generator().manual_seed(0), mlp()
    for _ in range(3):
        hist = run(m2, x, y, epochs=2, history=hist, generator=gen).history
    assert epsilon_of(hist, DELTA) == pytest.approx(
        engine.get_epsilon(delta=DELTA), rel=1e-12
    )


def test_noise_for_target_epsilon_reaches_target():
    q, steps = 0.05, 400
    sigma = noise_for_target_epsilon(2.0, DELTA, q, steps)
    eps = epsilon_of([(sigma, q, steps)], DELTA)
    assert 2.0 - 0.01 <= eps <= 2.0
    assert noise_for_target_epsilon(1.0, DELTA, q, steps) > sigma
    with pytest.raises(ValueError, match="privacy.target_epsilon"):
        noise_for_target_epsilon(-1.0, DELTA, q, steps)


# ---------------------------------------------------------------- training


def test_model_trains_in_place_and_is_unwrapped(wdbc):
    x, y = wdbc
    model = mlp()
    keys = list(model.state_dict())
    w0 = [p.detach().clone() for p in model.parameters()]
    model.eval()
    res = run(model, x, y, epochs=3, noise_multiplier=0.5)
    assert list(model.state_dict()) == keys  # no "_module." prefix
    assert not model.training  # mode restored
    assert all(not torch.equal(a, b) for a, b in zip(w0, model.parameters()))
    for mod in model.modules():
        assert not mod._forward_hooks and not mod._backward_hooks
    for p in model.parameters():
        assert not hasattr(p, "grad_sample") and p.grad is None
    with torch.no_grad():
        acc = (model(torch.tensor(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.85  # WDBC is easy; DP-SGD with sigma 0.5 still learns it
    assert math.isfinite(res.loss)


def test_noise_zero_full_batch_equals_plain_sgd(wdbc):
    """q = 1, sigma = 0, clip never active: the DP-SGD step is the plain SGD step."""
    x, y = wdbc
    a, b = mlp(3), mlp(3)
    run(a, x, y, batch_size=len(y), noise_multiplier=0.0, max_grad_norm=1e6, lr=0.5)
    opt = torch.optim.SGD(b.parameters(), lr=0.5)
    nn.functional.cross_entropy(b(torch.tensor(x)), torch.tensor(y)).backward()
    opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_clipping_is_per_record(wdbc):
    """sigma = 0, q = 1: the update is -lr * mean_i clip_C(g_i) (Abadi et al. 2016)."""
    x, y = wdbc[0][:40], wdbc[1][:40]
    a, b = mlp(4), mlp(4)
    C, lr = 0.05, 1.0
    run(a, x, y, batch_size=40, noise_multiplier=0.0, max_grad_norm=C, lr=lr)
    params = list(b.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(40):
        g = torch.autograd.grad(
            nn.functional.cross_entropy(b(torch.tensor(x[i : i + 1])), torch.tensor(y[i : i + 1])),
            params,
        )
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        assert norm > C  # clipping is active for the check to mean something
        for t, gi in zip(total, g):
            t += gi * min(1.0, C / (float(norm) + 1e-6))
    with torch.no_grad():
        for p, t in zip(params, total):
            p -= lr * t / 40
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_noise_std_is_sigma_c_over_batch(wdbc):
    """Same data, sigma 0 vs sigma 2: weight difference / lr ~ N(0, (sigma C / B)^2)."""
    x, y = wdbc
    a, b = mlp(5), mlp(5)
    kw = dict(batch_size=len(y), max_grad_norm=0.5, lr=1.0)
    run(a, x, y, noise_multiplier=0.0, **kw)
    run(b, x, y, noise_multiplier=2.0, **kw)
    diff = torch.cat([(p - q).detach().flatten() for p, q in zip(a.parameters(), b.parameters())])
    assert diff.numel() > 400
    assert float(diff.std()) == pytest.approx(2.0 * 0.5 / len(y), rel=0.1)


def test_same_generator_same_weights_and_empty_batches(wdbc):
    x, y = wdbc[0][:20], wdbc[1][:20]
    a, b = mlp(6), mlp(6)
    # q = 1/20: about a third of the Poisson batches are empty; they still step and count
    ra = run(a, x, y, batch_size=1, generator=torch.Generator().manual_seed(9))
    run(b, x, y, batch_size=1, generator=torch.Generator().manual_seed(9))
    assert ra.steps == 20 and ra.history == [(1.0, 0.05, 20)]
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q) and torch.isfinite(p).all()


def test_bad_parameters_name_the_key(wdbc):
    x, y = wdbc
    with pytest.raises(ValueError, match=r"privacy.noise_multiplier = -1.0"):
        run(mlp(), x, y, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match=r"privacy.max_grad_norm = 0"):
        run(mlp(), x, y, max_grad_norm=0)
    with pytest.raises(ValueError, match=r"privacy.delta"):
        run(mlp(), x, y, delta=1.5)


def test_make_private_compatible_replaces_batchnorm(wdbc, monkeypatch):
    bn = nn.Sequential(nn.Linear(30, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="make_private_compatible"):
        run(bn, *wdbc)
    bn.eval()
    fixed = make_private_compatible(bn)
    assert any(isinstance(m, nn.BatchNorm1d) for m in bn.modules())  # input untouched
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fixed.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in fixed.modules())
    assert not fixed.training  # mode kept
    run(fixed, *wdbc)  # trains

    from opacus.validators import ModuleValidator

    monkeypatch.setattr(ModuleValidator, "fix", staticmethod(lambda m, **k: m))
    with pytest.raises(ValueError, match="not DP-SGD compatible"):
        make_private_compatible(bn)


def test_import_leaves_root_and_flwr_loggers_alone():
    src = Path(__file__).resolve().parents[1] / "src"
    code = (
        "import logging, sys\n"
        "logging.getLogger('flwr').setLevel(logging.INFO)\n"
        "root = logging.getLogger(); before = (root.level, list(root.handlers))\n"
        "import fedmedsec.privacy\n"
        "assert (root.level, list(root.handlers)) == before, (root.level, root.handlers)\n"
        "assert logging.getLogger('flwr').level == logging.INFO\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- central DP


def test_clip_updates_bounds_norms_and_keeps_small_rows():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(20, 50, generator=g) * torch.linspace(0.01, 3, 20)[:, None]
    u[0] = 0.0
    u_copy = u.clone()
    S = 1.0
    c = clip_updates(u, S)
    assert torch.equal(u, u_copy)
    norms, cnorms = u.norm(dim=1), c.norm(dim=1)
    assert (cnorms <= S * (1 + 1e-6)).all()
    small = norms <= S
    assert small.any() and (~small).any()
    assert torch.equal(c[small], u[small])
    torch.testing.assert_close(cnorms[~small], torch.full_like(cnorms[~small], S))
    cos = nn.functional.cosine_similarity(c[~small], u[~small], dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))
    with pytest.raises(ValueError, match="clip_norm"):
        clip_updates(u, 0.0)


def test_dp_fedavg_mean_and_noise_std():
    n, d, S, z = 8, 200_000, 0.5, 1.3
    g = torch.Generator().manual_seed(0)
    u = torch.randn(n, d, generator=g, dtype=torch.float64) * 1e-4  # all rows inside S
    no_noise = dp_fedavg(u, S, 0.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(no_noise, u.mean(0))
    noisy = dp_fedavg(u, S, z, torch.Generator().manual_seed(1))
    std = float((noisy - u.mean(0)).std())
    assert std == pytest.approx(z * S / n, rel=0.01)
    big = torch.full((4, 3), 100.0)  # clipped before averaging: |mean| <= S
    assert float(dp_fedavg(big, S, 0.0, g).norm()) == pytest.approx(S)


def test_central_epsilon_monotone_and_matches_opacus():
    e = [central_epsilon(z, 0.1, 100, DELTA) for z in (0.8, 1.0, 2.0)]
    assert e[0] > e[1] > e[2] > 0
    r = [central_epsilon(1.0, 0.1, t, DELTA) for t in (10, 100, 500)]
    assert r[0] < r[1] < r[2]
    acc = RDPAccountant()
    for _ in range(100):
        acc.step(noise_multiplier=1.0, sample_rate=0.1)
    assert e[1] == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-12)


def _mean_sensitivity(rule: str) -> bool:
    from fedmedsec.aggregators import AGGREGATORS

    return bool(AGGREGATORS.get(rule).meta.get("mean_sensitivity"))


def test_central_dp_refuses_robust_rules():
    eps, why = central_dp_epsilon_or_reason("fedavg", 1.0, 0.1, 100, DELTA,
                                            mean_sensitivity=_mean_sensitivity("fedavg"))
    assert why is None and eps == pytest.approx(central_epsilon(1.0, 0.1, 100, DELTA))
    eps, why = central_dp_epsilon_or_reason("krum", 1.0, 0.1, 100, DELTA,
                                            mean_sensitivity=_mean_sensitivity("krum"))
    assert eps is None and "krum" in why and "sensitivity" in why
    eps, why = central_dp_epsilon_or_reason("fedavg", 1.0, 0.1, 100, DELTA, mean_sensitivity=True,
                                            weighted=True)
    assert eps is None and "num-examples" in why
    eps, why = central_dp_epsilon_or_reason("fedavg", 1.0, 0.1, 100, DELTA, mean_sensitivity=True,
                                            pre_steps=True)
    assert eps is None and "defense.pre" in why


def test_only_the_mean_declares_the_mean_sensitivity():
    from fedmedsec.aggregators import AGGREGATORS

    assert [e.name for e in AGGREGATORS if e.meta.get("mean_sensitivity")] == ["fedavg"]


def test_server_central_dp_is_dp_fedavg():
    """One DP-FedAvg implementation: the round loop's central DP under fedavg gives exactly
    ``dp_fedavg`` of the round's updates with the round's aggregation stream."""
    from fedmedsec.config import load_config
    from fedmedsec.experiment import build_setup
    from fedmedsec.rounds import ClientReply
    from fedmedsec.server import Coordinator
    from fedmedsec.streams import Stream

    cfg = load_config(raw={}, overrides=["privacy.mode=central", "privacy.clip_norm=0.5",
                                         "privacy.noise_multiplier=1.3", "data.num_hospitals=4"])
    co = Coordinator(build_setup(cfg))
    g = co.global_vec.clone()
    ups = torch.randn(4, g.numel(), generator=torch.Generator().manual_seed(3))
    co.sample(1, [0, 1, 2, 3])
    co.aggregate(1, [ClientReply(i, g + ups[i], 10) for i in range(4)])
    expected = dp_fedavg(ups, 0.5, 1.3, co.setup.generator(Stream.AGGREGATION, 1))
    torch.testing.assert_close(co.global_vec, g + expected)
