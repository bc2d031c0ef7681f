"""cnn / cnn1d / resnet / resnet1d: forward shapes for the sizes the data produce,
GroupNorm-only (Opacus ModuleValidator finds nothing to fix), per-sample gradients through
Opacus, seeded init; resnet blocks start as the identity (zero-init residual)."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from pydantic import ValidationError

from fedmedsec.models import MODELS, build_model


def _model(name, shape, classes=3, seed=0, **kw):
    return build_model(name, MODELS.get(name).params(**kw), shape, classes, seed)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (1, 64, 64), (3, 64, 64), (1, 32, 32)])
def test_cnn_forward_shape(shape):
    net = _model("cnn", shape, classes=5)
    assert net(torch.rand(4, *shape)).shape == (4, 5)


@pytest.mark.parametrize("shape", [(1, 500), (1, 1000), (12, 1000), (2, 256), (1, 37)])
def test_cnn1d_forward_shape_any_length(shape):
    net = _model("cnn1d", shape, classes=4)
    assert net(torch.randn(3, *shape)).shape == (3, 4)


def test_cnn1d_output_independent_of_length_for_periodic_input():
    """Global average pooling: a periodic signal repeated twice gives (almost) the same logits."""
    net = _model("cnn1d", (1, 400)).eval()
    period = torch.sin(torch.linspace(0, 8 * torch.pi, 200))
    x1 = period.repeat(4).view(1, 1, -1)
    x2 = period.repeat(8).view(1, 1, -1)
    with torch.no_grad():
        assert torch.allclose(net(x1), net(x2), atol=0.05)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (1, 64, 64), (3, 32, 32), (1, 8, 8)])
@pytest.mark.parametrize("kw", [{}, {"channels": [8, 16, 32], "blocks": 2, "dropout": 0.2}])
def test_resnet_forward_shape(shape, kw):
    net = _model("resnet", shape, classes=5, **kw)
    assert net(torch.rand(4, *shape)).shape == (4, 5)


@pytest.mark.parametrize("shape", [(1, 500), (12, 1000), (2, 64), (1, 37)])
def test_resnet1d_forward_shape_any_length(shape):
    net = _model("resnet1d", shape, classes=8, channels=[8, 16, 32])
    assert net(torch.randn(3, *shape)).shape == (3, 8)


def test_resnet_blocks_start_as_identity():
    """Zero-init residual (Goyal et al. 2017): at initialisation a block with an identity
    skip returns relu(x); a projecting block returns relu(skip(x))."""
    from fedmedsec.models.resnet import _Block

    torch.manual_seed(0)
    same = _Block(torch.nn.Conv2d, 8, 8, 1, 4, 3)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(same(x), torch.relu(x))
    proj = _Block(torch.nn.Conv1d, 4, 8, 2, 4, 7)
    z = torch.randn(2, 4, 20)
    assert torch.equal(proj(z), torch.relu(proj.skip(z)))
    assert proj(z).shape == (2, 8, 10)  # stride 2 halves the length


@pytest.mark.parametrize("name,shape", [("cnn", (1, 28, 28)), ("cnn", (3, 64, 64)), ("cnn1d", (12, 500)),
                                        ("resnet", (1, 28, 28)), ("resnet", (3, 28, 28)),
                                        ("resnet1d", (1, 500))])
def test_opacus_compatible(name, shape):
    net = _model(name, shape)
    assert ModuleValidator.validate(net, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    gsm = GradSampleModule(net)
    x = torch.randn(5, *shape)
    torch.nn.functional.cross_entropy(gsm(x), torch.tensor([0, 1, 2, 0, 1])).backward()
    for p in net.parameters():
        assert p.grad_sample.shape == (5, *p.shape)  # one gradient per example (DP-SGD)


@pytest.mark.parametrize("name,shape", [("cnn1d", (1, 100)), ("resnet", (1, 28, 28)), ("resnet1d", (1, 100))])
def test_same_seed_same_weights(name, shape):
    a, b, c = (_model(name, shape, seed=s) for s in (1, 1, 2))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    x = torch.rand(2, *shape)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_bad_params_and_shapes():
    with pytest.raises(ValidationError, match="model.groups = 5"):
        MODELS.get("cnn").params(channels=[16, 32], groups=5)
    with pytest.raises(ValidationError, match="model.groups"):
        MODELS.get("cnn1d").params(channels=[16, 20], groups=8)
    with pytest.raises(ValueError, match=r"needs image input \[C, H, W\]"):
        _model("cnn", (1, 500))
    with pytest.raises(ValueError, match=r"needs ECG input \[leads, T\]"):
        _model("cnn1d", (1, 28, 28))
    with pytest.raises(ValueError, match="at least 8 pixels"):
        _model("cnn", (1, 4, 4), channels=[8, 8, 8])
    with pytest.raises(ValidationError, match="model.groups = 8"):
        MODELS.get("resnet").params(channels=[8, 12])
    with pytest.raises(ValueError, match=r"'resnet': needs image input \[C, H, W\]"):
        _model("resnet", (1, 500))
    with pytest.raises(ValueError, match=r"'resnet1d': needs ECG input \[leads, T\]"):
        _model("resnet1d", (1, 28, 28))
    with pytest.raises(ValueError, match="at least 4 pixels"):
        _model("resnet", (1, 2, 2))
    with pytest.raises(ValueError, match="at least 8 samples"):
        _model("resnet1d", (1, 6))
    assert MODELS.get("resnet").meta["modalities"] == ("image",)
    assert MODELS.get("resnet1d").meta["modalities"] == ("ecg",)
    assert MODELS.get("cnn").meta["modalities"] == ("image",)
    assert MODELS.get("cnn1d").meta["modalities"] == ("ecg",)


@pytest.mark.parametrize("name,shape", [("resnet", (1, 12, 12)), ("resnet1d", (2, 40))])
def test_opacus_per_sample_gradients_match_one_by_one(name, shape):
    """Opacus's per-example gradients through the residual blocks and GroupNorm equal the
    gradients of each example's loss computed alone (the brute-force definition)."""
    import copy

    net = _model(name, shape, channels=[8, 16])
    for m in net.modules():  # leave the zero-init: make every block's branch active
        if isinstance(m, torch.nn.GroupNorm):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    ref = copy.deepcopy(net)
    gsm = GradSampleModule(net, loss_reduction="sum")
    x, y = torch.randn(4, *shape), torch.tensor([0, 1, 2, 1])
    torch.nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    for i in range(4):
        ref.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[i : i + 1]), y[i : i + 1]).backward()
        for p, q in zip(net.parameters(), ref.parameters()):
            assert torch.allclose(p.grad_sample[i], q.grad, atol=1e-5)
