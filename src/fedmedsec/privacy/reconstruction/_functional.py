"""The model as a pure function of its parameters, and the client update an attacker simulates.

``state_vector(model)`` (``fedmedsec.training``) flattens the whole state dict (parameters and
buffers, in state-dict order); an update Tensor[d] lives in that layout. The attacker needs
the parameter entries only: :func:`param_layout` gives each parameter's slice of Tensor[d].
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class Layout:
    """Named parameters of a model and their positions in ``state_vector(model)``.

    names[k], slices[k], shapes[k] describe parameter k; ``d`` is the state vector's length
    (parameters plus buffers)."""

    names: tuple[str, ...]
    slices: tuple[slice, ...]
    shapes: tuple[torch.Size, ...]
    d: int

    def params(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor[d] -> {name: parameter tensor} (views of ``vec``)."""
        return {n: vec[s].reshape(sh) for n, s, sh in zip(self.names, self.slices, self.shapes)}

    def flat(self, vec: torch.Tensor) -> torch.Tensor:
        """Tensor[d] -> Tensor[p]: the parameter entries only, in layout order."""
        return torch.cat([vec[s] for s in self.slices])

    def flat_of(self, tensors) -> torch.Tensor:
        """Per-parameter tensors (layout order) -> Tensor[p]."""
        return torch.cat([t.reshape(-1) for t in tensors])


def param_layout(model: nn.Module) -> Layout:
    """Where each named parameter sits in ``state_vector(model)`` (state-dict order)."""
    params = dict(model.named_parameters())
    names, slices, shapes, i = [], [], [], 0
    for k, t in model.state_dict().items():
        n = t.numel()
        if k in params:
            names.append(k)
            slices.append(slice(i, i + n))
            shapes.append(t.shape)
        i += n
    return Layout(tuple(names), tuple(slices), tuple(shapes), i)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with parameters not requiring grad (the input is untouched).

    Eval mode makes the forward deterministic; the fedmedsec models have no dropout by
    default and GroupNorm behaves the same in both modes, so this equals the client's
    training-mode forward."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def batch_loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` with ``params`` on x [B, ...]; y [B] int or [B, C]
    class probabilities (soft labels, DLG)."""
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def simulate_update(
    model: nn.Module,
    layout: Layout,
    params0: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    local_epochs: int,
    batch_size: int,
    create_graph: bool,
) -> torch.Tensor:
    """Parameter update Tensor[p] of ``local_epochs`` epochs of plain SGD (no momentum) on
    (x [N, ...], y) with mini-batches ``x[s:s+batch_size]`` in a fixed order, differentiable
    in x and y when ``create_graph`` (Geiping et al. 2020, Sec. 5: the attacker unrolls the
    local steps). FedSGD is local_epochs = 1, batch_size = N: the update is -lr * grad.

    The order is fixed because the attacker cannot know the client's shuffle: with one epoch
    (or one batch) this is exact, the dummy records being exchangeable; with several epochs
    of several batches it is the attacker's approximation."""
    params0 = {k: v if v.requires_grad else v.detach().requires_grad_(True)
               for k, v in params0.items()}
    p = dict(params0)
    n = x.shape[0]
    for _ in range(local_epochs):
        for s in range(0, n, batch_size):
            loss = batch_loss(model, p, x[s : s + batch_size], y[s : s + batch_size])
            g = torch.autograd.grad(loss, list(p.values()), create_graph=create_graph)
            p = {k: v - lr * gk for (k, v), gk in zip(p.items(), g)}
    return layout.flat_of([p[k] - params0[k] for k in layout.names])


def num_local_steps(num_records: int, local_epochs: int, batch_size: int) -> int:
    """Optimizer steps of ``simulate_update`` (and ``training.train_local``)."""
    return local_epochs * -(-num_records // batch_size)
