"""Gradient inversion: recover a hospital's records from the update it sends the server.

Threat model: an honest-but-curious server (it runs the protocol as specified) that knows
the global model it sent (``global_vec``), the client's training recipe (lr, local epochs,
batch size; the server sets them) and the number of records N behind the update, and sees
the target's update ``observed_update = w_local - w_global`` (Tensor[d], the layout of
``training.state_vector``). In FedSGD (one step on the whole batch) the update is -lr * grad,
so the server knows the gradient; in FedAvg it is the result of several local SGD steps.

Methods (all optimise dummy records x^ so that the update they would produce matches the
observed one):

- DLG (Zhu et al., "Deep Leakage from Gradients", NeurIPS 2019): squared L2 distance between
  the dummy and observed gradients, L-BFGS jointly over dummy inputs and dummy soft labels
  softmax(l^), L-BFGS as in the paper (lr = 1, no line search; a diverging run keeps its
  last finite iterate); images are clamped into [0, 1] only at the end.
- iDLG (Zhao et al., "iDLG: Improved Deep Leakage from Gradients", 2020): the label is read
  from the sign of the classifier's gradient (:func:`labels.idlg_label`, exact for B = 1),
  then DLG on the inputs only.
- Inverting Gradients, IG (Geiping et al., NeurIPS 2020): 1 - cosine similarity of the two
  gradients (all parameters as one vector) + tv_weight * TV(x^) (anisotropic total
  variation, mean |neighbour differences|: 2-D for images, along time for ECG; none for
  tables, where an optional l2_weight * mean(x^2) prior is offered instead). Adam (step
  size 0.1) on the SIGN of the gradient w.r.t. x^ (the paper's signed gradients), the step
  size divided by 10 at 3/8, 5/8 and 7/8 of the iterations, images projected onto [0, 1]
  after every step, several random restarts keeping the one with the lowest final objective.
  For FedAvg the local SGD steps are unrolled differentiably (``_functional.simulate_update``)
  and the simulated parameter difference is matched (Geiping et al., Sec. 5).

Labels: with ``labels`` given, the known-label setting (Geiping et al.'s default). Otherwise
iDLG's sign rule for N = 1, and for N > 1 the bias-based count estimate
(:func:`labels.label_counts`) with the server's mean prediction on ``proxy_x`` (its own
public records; uniform if None); DLG without known labels optimises soft labels instead.

The closed form :func:`closed_form_first_linear` needs no optimisation: for a first
``nn.Linear`` with bias and ONE record, dL/dW = delta x^T and dL/db = delta, so x =
dW_i / db_i for every row i with db_i != 0. Plain SGD steps on one record sum such terms,
so the ratio survives FedAvg (and per-record clipping, which scales both alike).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._functional import Layout, frozen_copy, param_layout, simulate_update
from .labels import idlg_label, label_counts, labels_from_counts

METHODS = ("ig", "dlg", "idlg")
SETTINGS = ("fedsgd", "fedavg")
MODALITIES = ("image", "ecg", "tabular")


@dataclass(frozen=True)
class ReconstructionResult:
    """x_hat: [N, *input_shape] reconstructed records; y_hat: int64 [N] their labels (given,
    recovered or DLG's argmax of soft labels); loss: the best restart's final objective;
    restart_losses: each restart's; seconds: wall time of the attack."""

    x_hat: torch.Tensor
    y_hat: torch.Tensor
    loss: float
    restart_losses: tuple[float, ...] = field(default_factory=tuple)
    seconds: float = 0.0


def closed_form_first_linear(model: nn.Module, update: torch.Tensor,
                             input_shape: tuple[int, ...]) -> torch.Tensor:
    """The one record [*input_shape] behind ``update`` (Tensor[d]) of a model whose first
    parametrised module is an nn.Linear with bias (the ``mlp``): the least-squares ratio
    x = sum_i Delta_b_i Delta_W_i / sum_i Delta_b_i^2, which equals Delta_W_i / Delta_b_i for
    every row i when one record produced the update (Phong et al. 2017; REFERENCES.md).
    With B > 1 records it is a weighted mix of them; with noise it is noise."""
    first = next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)
    if not isinstance(first, nn.Linear) or first.bias is None:
        raise ValueError("reconstruction: the closed form needs a first nn.Linear with bias")
    layout = param_layout(model)
    where = dict(zip(layout.names, layout.slices))
    name = next(n for n, m in model.named_modules() if m is first)
    prefix = f"{name}." if name else ""
    upd = update.double()
    dw = upd[where[prefix + "weight"]].reshape(first.out_features, first.in_features)
    db = upd[where[prefix + "bias"]]
    den = float(db @ db)
    if den == 0.0:
        raise ValueError("reconstruction: the first layer's bias update is zero (no record signal)")
    return ((db @ dw) / den).float().reshape(input_shape)


def total_variation(x: torch.Tensor, modality: str) -> torch.Tensor:
    """Anisotropic TV: mean |x[h+1] - x[h]| + mean |x[w+1] - x[w]| for images [N, C, H, W];
    mean |x[t+1] - x[t]| for ECG [N, L, T]; 0 for tables."""
    if modality == "image":
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()
    if modality == "ecg":
        return (x[..., 1:] - x[..., :-1]).abs().mean()
    return x.new_zeros(())


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - (a @ b) / (a.norm() * b.norm()).clamp_min(1e-12)


def _check(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"reconstruction.{key} = {value!r}: {allowed}")


def _init(shape, modality: str, generator: torch.Generator) -> torch.Tensor:
    # images: uniform in the valid box; standardised ECG/tables: standard normal
    if modality == "image":
        return torch.rand(shape, generator=generator)
    return torch.randn(shape, generator=generator)


def reconstruct(
    model: nn.Module,
    global_vec: torch.Tensor,
    observed_update: torch.Tensor,
    *,
    setting: str,
    lr: float,
    num_records: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: str,
    generator: torch.Generator,
    local_epochs: int | None = None,
    batch_size: int | None = None,
    method: str = "ig",
    iterations: int = 300,
    restarts: int = 1,
    tv_weight: float = 1e-2,
    l2_weight: float = 0.0,
    step_size: float = 0.1,
    labels: torch.Tensor | None = None,
    proxy_x: torch.Tensor | None = None,
) -> ReconstructionResult:
    """Reconstruct the ``num_records`` records behind ``observed_update`` (Tensor[d]).

    model: the architecture (its weights are replaced by ``global_vec`` in a copy; the input
    is not modified). setting: "fedsgd" (one step of lr on all N records; local_epochs and
    batch_size must be None or 1 and N) or "fedavg" (local_epochs of SGD, lr, batch_size,
    no momentum). method: "ig" | "dlg" | "idlg" (module docstring). iterations: optimiser
    iterations per restart; restarts: random initialisations (best final objective kept).
    tv_weight: IG's total-variation weight (images, ECG); l2_weight: IG's L2 prior (any
    modality, 0 = none). step_size: IG's Adam step size. labels: int64 [N] if known (else
    recovered, see module docstring). proxy_x: [M, *input_shape] server-held records for the
    label-count prior. generator draws the initialisations.
    """
    _check("method", method, method in METHODS, f"must be one of {', '.join(METHODS)}")
    _check("setting", setting, setting in SETTINGS, f"must be one of {', '.join(SETTINGS)}")
    _check("modality", modality, modality in MODALITIES, f"must be one of {', '.join(MODALITIES)}")
    _check("batch_size", num_records, isinstance(num_records, int) and num_records >= 1,
           "records in the update must be an int >= 1")
    _check("iterations", iterations, isinstance(iterations, int) and iterations >= 1, "must be an int >= 1")
    _check("restarts", restarts, isinstance(restarts, int) and restarts >= 1, "must be an int >= 1")
    _check("tv_weight", tv_weight, tv_weight >= 0 and math.isfinite(tv_weight), "must be >= 0")
    _check("l2_weight", l2_weight, l2_weight >= 0 and math.isfinite(l2_weight), "must be >= 0")
    _check("lr", step_size, step_size > 0 and math.isfinite(step_size), "attack step size must be > 0")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"train.lr = {lr!r}: the client learning rate must be > 0")
    if setting == "fedsgd":
        if local_epochs not in (None, 1) or batch_size not in (None, num_records):
            raise ValueError(
                f"reconstruction.setting = 'fedsgd': one step on all {num_records} records; "
                f"got local_epochs={local_epochs}, batch_size={batch_size}"
            )
        local_epochs, batch_size = 1, num_records
    else:
        if not (isinstance(local_epochs, int) and local_epochs >= 1):
            raise ValueError(f"train.local_epochs = {local_epochs!r}: fedavg needs an int >= 1")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"train.batch_size = {batch_size!r}: fedavg needs an int >= 1")

    t0 = time.perf_counter()
    net = frozen_copy(model)
    layout = param_layout(net)
    gvec = torch.as_tensor(global_vec, dtype=torch.float32).detach()
    upd = torch.as_tensor(observed_update, dtype=torch.float32).detach()
    for v, what in ((gvec, "global_vec"), (upd, "observed_update")):
        if v.shape != (layout.d,):
            raise ValueError(f"reconstruction: {what} has shape {tuple(v.shape)}, the model needs ({layout.d},)")
    params0 = layout.params(gvec)
    # in gradient units: FedSGD's gradient, FedAvg's sum of step gradients
    target = -layout.flat(upd) / lr
    shape = (num_records, *input_shape)
    steps_kw = dict(lr=lr, local_epochs=local_epochs, batch_size=batch_size)

    def simulated(x, y):
        return -simulate_update(net, layout, params0, x, y, create_graph=True, **steps_kw) / lr

    y_fixed = _labels(net, layout, upd, labels, method, num_records, num_classes, proxy_x,
                      params0, **steps_kw)

    best = None
    losses = []
    for _ in range(restarts):
        x0 = _init(shape, modality, generator)
        if method == "ig":
            x, y, loss = _ig(simulated, target, x0, y_fixed, iterations=iterations,
                             tv_weight=tv_weight, l2_weight=l2_weight, step_size=step_size,
                             modality=modality)
        else:
            l0 = torch.randn((num_records, num_classes), generator=generator) if y_fixed is None else None
            x, y, loss = _dlg(simulated, target, x0, y_fixed, l0, iterations=iterations)
            if modality == "image":
                x = x.clamp(0.0, 1.0)
        losses.append(loss)
        if best is None or loss < best[2]:
            best = (x, y, loss)
    x, y, loss = best
    return ReconstructionResult(x.detach(), y.detach(), float(loss), tuple(losses),
                                time.perf_counter() - t0)


def _labels(net, layout: Layout, upd, labels, method, n, num_classes, proxy_x, params0,
            *, lr, local_epochs, batch_size):
    if labels is not None:
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if y.shape != (n,):
            raise ValueError(f"reconstruction: {y.numel()} known labels for {n} records")
        return y
    if method == "dlg":
        return None  # DLG optimises soft labels
    if n == 1:
        return torch.tensor([idlg_label(net, layout, upd, num_classes)])
    if proxy_x is not None and len(proxy_x) > 0:
        with torch.no_grad():
            from torch.func import functional_call

            probs = F.softmax(functional_call(net, params0, (torch.as_tensor(proxy_x),)), -1).mean(0)
    else:
        probs = torch.full((num_classes,), 1.0 / num_classes)
    counts = label_counts(net, layout, upd, num_classes=num_classes, num_records=n, lr=lr,
                          local_epochs=local_epochs, batch_size=batch_size, mean_probs=probs)
    return labels_from_counts(counts)


def _ig(simulated, target, x0, y, *, iterations, tv_weight, l2_weight, step_size, modality):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=step_size)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)

    def objective(xv):
        obj = _cosine_distance(simulated(xv, y), target)
        if tv_weight and modality != "tabular":
            obj = obj + tv_weight * total_variation(xv, modality)
        if l2_weight:
            obj = obj + l2_weight * xv.pow(2).mean()
        return obj

    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        obj = objective(x)
        (g,) = torch.autograd.grad(obj, [x])
        x.grad = g.sign()
        opt.step()
        sched.step()
        if modality == "image":
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    xf = x.detach()
    with torch.enable_grad():
        final = float(objective(xf.clone()).detach())
    return xf, y, final if math.isfinite(final) else math.inf


def _dlg(simulated, target, x0, y_fixed, l0, *, iterations):
    x = x0.clone().requires_grad_(True)
    variables = [x]
    logits = None
    if y_fixed is None:
        logits = l0.clone().requires_grad_(True)
        variables.append(logits)
    # The paper's L-BFGS: lr = 1, no line search, 20 iterations per step() call.
    # (max_iter=1 per call would also cap max_eval at 1: the optimiser would stall.)
    opt = torch.optim.LBFGS(variables, lr=1.0, max_iter=20, history_size=100)

    def labels_now():
        return y_fixed if logits is None else F.softmax(logits, -1)

    def closure():
        d = (simulated(x, labels_now()) - target).pow(2).sum()
        for v, g in zip(variables, torch.autograd.grad(d, variables)):
            v.grad = g
        return d.detach()

    def snapshot():
        return x.detach().clone(), None if logits is None else logits.detach().clone()

    # step() returns the objective at the point it started from: keep the best such point
    # (DLG without line search can jump away or diverge), and the final one.
    best = (math.inf, snapshot())
    done = 0
    while done < iterations:
        start = snapshot()
        opt.param_groups[0]["max_iter"] = min(20, iterations - done)
        opt.param_groups[0]["max_eval"] = opt.param_groups[0]["max_iter"] * 5 // 4
        loss = float(opt.step(closure))
        done += opt.param_groups[0]["max_iter"]
        if math.isfinite(loss) and loss < best[0]:
            best = (loss, start)
        if not all(torch.isfinite(v).all() for v in variables) or loss < 1e-14:
            break
    candidates = [best[1]] + ([snapshot()] if all(torch.isfinite(v).all() for v in variables) else [])
    scored = []
    for xf, lf in candidates:
        with torch.enable_grad():
            y_soft = y_fixed if lf is None else F.softmax(lf, -1)
            val = float((simulated(xf.clone(), y_soft) - target).pow(2).sum().detach())
        scored.append((val if math.isfinite(val) else math.inf, xf, lf))
    final, xf, lf = min(scored, key=lambda t: t[0])
    y_hat = y_fixed if lf is None else lf.argmax(-1)
    return xf, y_hat, final if math.isfinite(final) else math.inf
