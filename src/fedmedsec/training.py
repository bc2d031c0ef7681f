"""Local training and evaluation in plain PyTorch (no Flower)."""

from __future__ import annotations

import os

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


def set_torch_threads() -> None:
    """One intra-op thread per process unless FEDMEDSEC_TORCH_THREADS says otherwise: the
    models are small and clients run in parallel, so more threads only contend (measured
    here: 16 ms per MLP step with 2 threads on 2 busy cores against 0.5 ms with one)."""
    torch.set_num_threads(int(os.environ.get("FEDMEDSEC_TORCH_THREADS", "1")))


@dataclass(frozen=True)
class TrainHooks:
    """Optional per-step changes to local training, shared by plain SGD and DP-SGD.

    batch(model, xb, yb) -> (xb, yb): replace a mini-batch before the forward pass
        (adversarial training puts PGD examples here).
    before_step(model): after backward, before ``optimizer.step`` (gradient masks, e.g.
        Neurotoxin keeps only coordinates the benign updates change least).
    after_step(model): after ``optimizer.step`` (projections, e.g. a defense-aware
        backdoor projecting the model back into the defense's norm ball).
    Each hook may be None. Hooks must draw randomness only from generators they own.
    """

    batch: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    before_step: Callable[[nn.Module], None] | None = None
    after_step: Callable[[nn.Module], None] | None = None


def chain_hooks(*hooks: "TrainHooks | None") -> "TrainHooks | None":
    """One TrainHooks running each given hook in order (None entries skipped)."""
    hs = [h for h in hooks if h is not None]
    if not hs:
        return None
    if len(hs) == 1:
        return hs[0]

    def batch(model, xb, yb):
        for h in hs:
            if h.batch is not None:
                xb, yb = h.batch(model, xb, yb)
        return xb, yb

    def step(attr):
        fns = [getattr(h, attr) for h in hs if getattr(h, attr) is not None]
        if not fns:
            return None

        def run(model):
            for fn in fns:
                fn(model)
        return run

    has_batch = any(h.batch is not None for h in hs)
    return TrainHooks(batch if has_batch else None, step("before_step"), step("after_step"))


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean training loss of the last epoch
    steps: int  # optimiser steps taken


def state_vector(model: nn.Module) -> torch.Tensor:
    """All floating-point state (parameters and buffers) as one flat float32 Tensor[d]."""
    return torch.cat([t.detach().reshape(-1).float() for t in model.state_dict().values()])


def load_state_vector(model: nn.Module, vec: torch.Tensor) -> None:
    """Inverse of ``state_vector``: copy Tensor[d] into the model's state in place."""
    sd = model.state_dict()
    out, i = {}, 0
    for k, t in sd.items():
        n = t.numel()
        out[k] = vec[i : i + n].reshape(t.shape).to(t.dtype)
        i += n
    if i != vec.numel():
        raise ValueError(f"state vector has {vec.numel()} values, the model needs {i}")
    model.load_state_dict(out)


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    generator: torch.Generator,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Mini-batch SGD on (x [N, ...], y [N]) for ``epochs`` passes, shuffled by ``generator``;
    ``hooks`` change batches and steps (adversarial training, gradient masks, projections)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    n, steps, last = len(yt), 0, float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        total, count = 0.0, 0
        for s in range(0, n, batch_size):
            b = perm[s : s + batch_size]
            xb, yb = xt[b], yt[b]
            if hooks is not None and hooks.batch is not None:
                xb, yb = hooks.batch(model, xb, yb)
                model.train()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if hooks is not None and hooks.before_step is not None:
                hooks.before_step(model)
            opt.step()
            if hooks is not None and hooks.after_step is not None:
                hooks.after_step(model)
            total += loss.item() * len(b)
            count += len(b)
            steps += 1
        last = total / max(count, 1)
    return TrainResult(loss=last, steps=steps)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits float32 [N, C]."""
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    outs = [model(xt[s : s + batch_size]) for s in range(0, len(xt), batch_size)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) on (x, y); (nan, nan) when empty."""
    if len(y) == 0:
        return float("nan"), float("nan")
    logits = torch.from_numpy(predict(model, x))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    loss = float(nn.functional.cross_entropy(logits, yt))
    acc = float((logits.argmax(1) == yt).float().mean())
    return loss, acc
