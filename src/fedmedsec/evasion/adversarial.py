"""Federated adversarial training: PGD examples inside each hospital's local training.

Madry et al. (ICLR 2018) train on min_theta E[max_{x' in S(x)} L(f_theta(x'), y)], the inner
max approximated by PGD; Zizzo et al. ("FAT: Federated Adversarial Training", NeurIPS 2020
SpicyFL workshop) run it at every client of FedAvg, mixing a fraction of adversarial
examples into each local batch. :func:`adversarial_training_hooks` returns the
``training.TrainHooks(batch=...)`` that does this in both ``training.train_local`` and
``privacy.dp_sgd.train_dp_sgd``: on every mini-batch, a random ``fraction`` of its rows
(chosen by the hook's generator) is replaced by PGD examples at ``eps`` with ``steps``
steps (step 2.5 eps / steps, random start), inside the modality's domain (box, immutable
features); labels are unchanged.

The attack runs with the model in eval mode, computes only the input's gradient
(``torch.autograd.grad``; no parameter's ``.grad`` is touched) and switches off Opacus's
per-sample-gradient hooks while it runs, so under DP-SGD it leaves no activations and no
``grad_sample``; the model is put back in the mode it had (train mode in both loops).

Differential privacy. Each replaced row is x'_i = A(x_i, y_i, theta_t, r): a function of
one record, the current model (itself a DP release of earlier steps, i.e. post-processing)
and randomness independent of the data. DP-SGD clips the gradient of each row to C, so one
record still changes the noisy sum by at most C per step, and the Poisson sampling is that
of the original records. The sampled Gaussian mechanism, the accountant's history
(sigma, q, steps) and therefore epsilon are unchanged; the guarantee covers the hospital's
records (the perturbed rows are derived from them), as for the clean training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..training import TrainHooks
from .attacks import Norm, _check_eps, _check_norm, pgd
from .domain import InputDomain

__all__ = ["adversarial_training_hooks", "adversarial_batch"]


def adversarial_batch(
    model: nn.Module, xb: Tensor, yb: Tensor, *, eps: float, steps: int, fraction: float,
    domain: InputDomain, generator: torch.Generator, norm: Norm = "linf",
    step_size: float | None = None,
) -> tuple[Tensor, Tensor]:
    """(xb', yb): round(fraction * B) rows of xb [B, ...], drawn from ``generator``, replaced
    by PGD examples against ``model``; the other rows and yb are unchanged. The inputs are
    not modified."""
    b = int(xb.shape[0])
    k = int(round(float(fraction) * b))
    if k == 0 or eps == 0.0:
        return xb, yb
    rows = torch.randperm(b, generator=generator)[:k]
    was_training = model.training
    try:
        adv = pgd(model, xb[rows], yb[rows], eps=eps, norm=norm, steps=steps, step_size=step_size,
                  domain=domain, random_start=True, generator=generator)
    finally:
        model.train(was_training)
    out = xb.detach().clone()
    out[rows] = adv.to(out.dtype)
    return out, yb


def adversarial_training_hooks(
    *, eps: float, steps: int, fraction: float, domain: InputDomain,
    generator: torch.Generator, norm: Norm = "linf", step_size: float | None = None,
) -> TrainHooks:
    """TrainHooks whose ``batch`` replaces ``fraction`` of every mini-batch with PGD examples
    (``train.adversarial = "pgd"`` with ``adversarial_eps``, ``adversarial_steps``,
    ``adversarial_fraction``). All randomness (rows, random starts) from ``generator``."""
    _check_norm(norm)
    _check_eps(eps)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"train.adversarial_fraction = {fraction!r}: must be in [0, 1]")
    if int(steps) < 1:
        raise ValueError(f"train.adversarial_steps = {steps!r}: must be an int >= 1")

    def batch(model: nn.Module, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        return adversarial_batch(model, xb, yb, eps=eps, steps=steps, fraction=fraction,
                                 domain=domain, generator=generator, norm=norm, step_size=step_size)

    return TrainHooks(batch=batch)
