"""Record-level DP-SGD for one hospital's local training in one round (Opacus 1.6).

DP-SGD (Abadi et al., CCS 2016), as Opacus implements it: each step draws a Poisson batch
B (every record independently with probability q = batch_size / N), computes per-record
gradients g_i, clips them to norm C, and updates with

    g~ = ( sum_{i in B} g_i * min(1, C / ||g_i||)  +  N(0, sigma^2 C^2 I) ) / (q N)

(the denominator is the *expected* batch size; Opacus ``loss_reduction="mean"``). Each step
is one sampled Gaussian mechanism on the hospital's records, so after T steps in total over
all rounds the hospital's data is (epsilon, delta)-DP with epsilon from the RDP accountant
of the history [(sigma, q, steps) per round]. Record-level DP survives any server rule
(post-processing), so unlike DP-FedAvg its epsilon stays valid under robust aggregation.

Why Opacus's parts and not ``PrivacyEngine.make_private``: its Poisson sampler draws from
the global torch RNG unless ``secure_mode`` (we need the caller's generator), it sets
q = 1 / len(loader) rather than batch_size / N, and a fresh engine per round forgets the
accountant history. We assemble the same objects it would (``GradSampleModule``,
``DPDataLoader``, ``DPOptimizer``, ``RDPAccountant`` hook) with explicit generator, q and
history. The model is trained in place; the Opacus hooks and per-sample attributes are
removed afterwards, so ``model.state_dict()`` has the original keys (no ``_module.``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..training import TrainHooks
from .accounting import (
    History,
    epsilon_of,
    import_opacus,
    noise_for_target_epsilon,
    rdp_accountant,
    validate_history,
)

import_opacus()
from opacus import GradSampleModule  # noqa: E402
from opacus.data_loader import DPDataLoader  # noqa: E402
from opacus.optimizers import DPOptimizer  # noqa: E402
from opacus.validators import ModuleValidator  # noqa: E402

__all__ = [
    "DPTrainResult",
    "train_dp_sgd",
    "make_private_compatible",
    "steps_per_epoch",
    "epsilon_of",
    "noise_for_target_epsilon",
]


@dataclass(frozen=True)
class DPTrainResult:
    """loss: mean training loss over the records of the last epoch (nan if all its Poisson
    batches were empty).
    steps: optimizer steps this round (= epochs * int(1/q); empty Poisson batches count,
    as they do in the accountant). history: previous history + [(sigma, q, steps)].
    epsilon: cumulative epsilon of the whole ``history`` at ``delta`` (RDP).
    sample_rate: q = batch_size / N.
    """

    loss: float
    steps: int
    history: History
    epsilon: float
    sample_rate: float


def steps_per_epoch(n_records: int, batch_size: int) -> int:
    """Steps Opacus's Poisson sampler makes per epoch: int(1 / q), q = batch_size / N."""
    return int(1 / (min(batch_size, n_records) / n_records))


def make_private_compatible(model: nn.Module) -> nn.Module:
    """Return an Opacus-compatible copy of ``model`` (BatchNorm -> GroupNorm, ...).

    Uses ``ModuleValidator.fix`` then ``ModuleValidator.validate``; the input is not
    modified (``fix`` deep-copies). Raises ValueError listing what cannot be fixed.
    """
    try:
        fixed = ModuleValidator.fix(model)
    except Exception as e:  # noqa: BLE001 - Opacus raises various types
        raise ValueError(
            f"model {type(model).__name__} cannot be made DP-SGD compatible: {e}"
        ) from None
    was_training = fixed.training
    fixed.train()  # Opacus validates the training-mode module (eval mode is an "error")
    errors = ModuleValidator.validate(fixed, strict=False)
    fixed.train(was_training)
    if errors:
        msgs = "; ".join(str(e) for e in errors)
        raise ValueError(
            f"model {type(model).__name__} is not DP-SGD compatible after ModuleValidator.fix: "
            f"{msgs}"
        )
    return fixed


def _check(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"privacy.{name} = {value!r}: {allowed}")


def train_dp_sgd(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    noise_multiplier: float,
    max_grad_norm: float,
    history: list[tuple[float, float, int]],
    generator: torch.Generator,
    delta: float,
    hooks: TrainHooks | None = None,
) -> DPTrainResult:
    """Train ``model`` in place with DP-SGD on (x, y) for ``epochs`` epochs.

    x: [N, *input_shape] float features; y: [N] int class labels. The optimizer is SGD
    (lr, momentum) wrapped by Opacus's DPOptimizer (flat clipping at ``max_grad_norm``,
    noise std ``noise_multiplier * max_grad_norm``, mean over the expected batch size).
    Poisson sampling at q = batch_size / N and the noise both draw from ``generator``.
    ``history`` (not modified) is the accountant history of the previous rounds; the
    result's history appends this round's ``(noise_multiplier, q, steps)`` and its epsilon
    is over the whole history. ``model`` must pass ``ModuleValidator.validate`` (use
    :func:`make_private_compatible` once when building it). ``hooks``
    (``training.TrainHooks``) change batches (adversarial examples: the DP guarantee then
    covers the perturbed records each step clips, which are functions of one record each)
    and steps, as in ``training.train_local``.
    """
    ints = (int, np.integer)
    _check("epochs", epochs, isinstance(epochs, ints) and epochs >= 1, "must be an int >= 1")
    _check("batch_size", batch_size, isinstance(batch_size, ints) and batch_size >= 1,
           "must be an int >= 1")
    _check("lr", lr, lr > 0 and math.isfinite(lr), "must be > 0")
    _check("momentum", momentum, 0.0 <= momentum < 1.0, "must be in [0, 1)")
    _check("noise_multiplier", noise_multiplier,
           noise_multiplier >= 0 and math.isfinite(noise_multiplier), "must be >= 0")
    _check("max_grad_norm", max_grad_norm,
           max_grad_norm > 0 and math.isfinite(max_grad_norm), "must be > 0")
    _check("delta", delta, 0.0 < delta < 1.0, "must be in (0, 1)")
    past = validate_history(history)

    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    n = int(xt.shape[0])
    if n == 0 or yt.shape[0] != n:
        raise ValueError(f"DP-SGD needs x and y with the same number (> 0) of records, "
                         f"got {n} and {yt.shape[0]}")
    was_training = model.training
    model.train()
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        model.train(was_training)
        raise ValueError(
            f"model is not DP-SGD compatible ({'; '.join(map(str, errors))}); "
            "build it through make_private_compatible"
        )

    expected_bs = min(batch_size, n)
    q = expected_bs / n
    dataset = torch.utils.data.TensorDataset(xt, yt)
    loader = DPDataLoader(dataset, sample_rate=q, generator=generator)

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    accountant = rdp_accountant([])  # this round's steps only; merged below
    try:
        optimizer = DPOptimizer(
            torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_bs,
            loss_reduction="mean",
            generator=generator,
        )
        optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=q))
        criterion = nn.CrossEntropyLoss()
        gsm.train()
        loss_sum, seen, steps = 0.0, 0, 0
        with warnings.catch_warnings():
            # Opacus hooks the first layer, whose input needs no grad: harmless notice.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(epochs):
                loss_sum, seen = 0.0, 0  # report the last epoch, like training.train_local
                for xb, yb in loader:
                    if hooks is not None and hooks.batch is not None and xb.shape[0] > 0:
                        xb, yb = hooks.batch(model, xb, yb)
                        gsm.train()
                    optimizer.zero_grad(set_to_none=True)
                    out = gsm(xb)
                    if xb.shape[0] > 0:
                        loss = criterion(out, yb)
                        loss_sum += float(loss.detach()) * xb.shape[0]
                        seen += int(xb.shape[0])
                    else:
                        # Empty Poisson batch: the step still happens (noise only) and is
                        # accounted; a zero loss keeps the graph without producing NaN.
                        loss = out.sum() * 0.0
                    loss.backward()
                    if hooks is not None and hooks.before_step is not None:
                        # clip, noise and account first (DPOptimizer.pre_step), then the
                        # hook sees the privatised gradient: post-processing keeps the DP
                        if optimizer.pre_step():
                            hooks.before_step(model)
                            optimizer.original_optimizer.step()
                    else:
                        optimizer.step()
                    if hooks is not None and hooks.after_step is not None:
                        hooks.after_step(model)
                    steps += 1
            optimizer.zero_grad(set_to_none=True)
    finally:
        gsm._close()  # remove hooks and grad_sample attributes; model keeps trained weights
        for p in model.parameters():
            p.grad = None
        model.train(was_training)

    # Steps counted by Opacus's accountant hook must equal the loop's (sanity, not privacy).
    counted = sum(s for _, _, s in accountant.history)
    if counted != steps:
        raise RuntimeError(f"accountant counted {counted} steps, training made {steps}")
    new_history = past + [(float(noise_multiplier), float(q), int(steps))]
    return DPTrainResult(
        loss=loss_sum / seen if seen else float("nan"),
        steps=steps,
        history=new_history,
        epsilon=epsilon_of(new_history, delta),
        sample_rate=q,
    )
