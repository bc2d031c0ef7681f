"""Local training and evaluation in plain PyTorch (no Flower)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

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


def chain_hooks(*hooks: TrainHooks | None) -> TrainHooks | None:
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
    optimizer: str = "sgd",
    class_weights: str = "none",
    augment: Augment | None = None,
) -> TrainResult:
    """Mini-batch training on (x [N, ...], y [N]) for ``epochs`` passes, shuffled by
    ``generator``; ``hooks`` change batches and steps (adversarial training, gradient
    masks, projections).

    optimizer: "sgd" (``momentum``, L2 ``weight_decay``), "adam" (L2 ``weight_decay``) or
    "adamw" (decoupled ``weight_decay``, Loshchilov & Hutter, ICLR 2019); a fresh optimiser
    per call (FedAvg: per round), so Adam's moments restart every round.
    class_weights: "none" or "balanced" (cross-entropy weight n / (C n_c) from the labels
    ``y`` given here, i.e. the hospital's own; absent classes weigh 0).
    augment: an ``Augment`` applied to each mini-batch before ``hooks.batch``, drawing
    from ``generator``. The defaults ("sgd", "none", None) are the plain SGD of before,
    bit for bit (no extra draws from ``generator``)."""
    model.train()
    opt = make_optimizer(model, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    loss_fn = _loss_fn(class_weights, yt)
    n, steps, last = len(yt), 0, float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        total, count = 0.0, 0
        for s in range(0, n, batch_size):
            b = perm[s : s + batch_size]
            xb, yb = xt[b], yt[b]
            if augment is not None:
                xb = augment(xb, generator)
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


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")


def make_optimizer(
    model: nn.Module, name: str, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``train.optimizer``: "sgd" (heavy-ball ``momentum``, L2 ``weight_decay``), "adam"
    (Kingma & Ba 2015, betas (0.9, 0.999), L2 ``weight_decay``; ``momentum`` unused) or
    "adamw" (Adam with decoupled weight decay, Loshchilov & Hutter 2019)."""
    params = model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"train.optimizer = {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def balanced_class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float32 [num_classes]: w_c = n / (k n_c) for the k classes present in ``y`` [n]
    (King & Zeng 2001; scikit-learn's "balanced"), 0 for absent classes. With
    ``cross_entropy(weight=w)`` (mean reduction divides by sum_i w_{y_i}) each present
    class then contributes equally to the loss, whatever its count."""
    counts = torch.bincount(y.long(), minlength=num_classes)[:num_classes].double()
    present = counts > 0
    k = int(present.sum())
    w = torch.where(present, len(y) / (max(k, 1) * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.float()


def _loss_fn(class_weights: str, y: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if class_weights == "none":
        return nn.CrossEntropyLoss()
    if class_weights != "balanced":
        raise ValueError(
            f"train.class_weights = {class_weights!r}: choose one of {', '.join(CLASS_WEIGHTS)}"
        )
    cache: dict[int, torch.Tensor] = {}

    def loss(logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        if c not in cache:  # weights from all local labels, not the mini-batch
            cache[c] = balanced_class_weights(y, c).to(logits.dtype)
        return nn.functional.cross_entropy(logits, yb, weight=cache[c])

    return loss


@dataclass(frozen=True)
class Augment:
    """Light label-preserving augmentation of one mini-batch, all draws from the
    generator given at call time (per-example, so two records never share a draw).

    modality "image", x [B, C, H, W]: a horizontal flip with probability 1/2 (``flip``),
    then a translation by (dy, dx) uniform in {-k..k}^2, k = round(``shift`` * H), the
    border filled by replicating the edge pixels (values stay inside the input's range, so
    images in [0, 1] stay in [0, 1]). Mirror-invariant tasks only: ultrasound, dermoscopy,
    pathology, X-ray organs with laterality excepted (set ``flip = False`` there).
    modality "ecg", x [B, leads, T]: a circular shift in time by s uniform in {-k..k},
    k = round(``shift`` * T) (rhythms are stationary; ``flip`` is unused: reversing time
    changes P-QRS-T morphology).
    Returns a new tensor; the input is not modified.
    """

    modality: str
    flip: bool = True
    shift: float = 0.1

    def __post_init__(self) -> None:
        if self.modality not in ("image", "ecg"):
            raise ValueError(
                f"train.augment = true: no augmentation for {self.modality} data; "
                "set train.augment = false"
            )
        if not 0.0 <= self.shift <= 0.5:
            raise ValueError(f"train.augment_shift = {self.shift}: must be in [0, 0.5]")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        if self.modality == "ecg":
            k = int(round(self.shift * x.shape[-1]))
            if k == 0 or b == 0:
                return x.clone()
            s = torch.randint(-k, k + 1, (b,), generator=generator)
            return torch.stack([torch.roll(x[i], int(s[i]), dims=-1) for i in range(b)])
        out = x
        if self.flip:
            f = torch.rand(b, generator=generator) < 0.5
            out = torch.where(f.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        k = int(round(self.shift * x.shape[-2]))
        if k == 0 or b == 0:
            return out.clone() if out is x else out
        h, w = x.shape[-2:]
        d = torch.randint(0, 2 * k + 1, (b, 2), generator=generator)
        padded = nn.functional.pad(out, (k, k, k, k), mode="replicate")
        return torch.stack(
            [padded[i, :, d[i, 0] : d[i, 0] + h, d[i, 1] : d[i, 1] + w] for i in range(b)]
        )


def lr_at(server_round: int, total_rounds: int, train) -> float:
    """The learning rate of round ``server_round`` (1-based) of ``total_rounds``.

    ``train`` is a ``TrainConfig`` (lr, schedule, warmup_rounds, final_lr_fraction). Each
    round starts a fresh local optimiser, so the schedule runs over rounds, not steps:
      warm-up (Goyal et al. 2017), r <= w = warmup_rounds: lr * r / w (linear, lr at r = w);
      then "constant": lr; "cosine" (SGDR without restarts, Loshchilov & Hutter 2017):
      lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2 with t = r - w - 1, T = total - w,
      lr_min = final_lr_fraction * lr, so the first round after warm-up gets lr and the
      last one is just above lr_min (the PyTorch CosineAnnealingLR convention; it never
      spends a round at lr_min = 0). Centralized training uses the same rounds.
    """
    if server_round < 1:
        raise ValueError(f"server round {server_round}: rounds are numbered from 1")
    lr, w = float(train.lr), int(train.warmup_rounds)
    if server_round <= w:
        return lr * server_round / w
    if train.schedule == "constant":
        return lr
    if train.schedule != "cosine":
        raise ValueError(f"train.schedule = {train.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    t, big_t = server_round - w - 1, max(total_rounds - w, 1)
    lo = float(train.final_lr_fraction) * lr
    return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * min(t, big_t) / big_t))


def train_kwargs(train, modality: str, server_round: int = 1, total_rounds: int = 1) -> dict:
    """Every keyword of ``train_local`` but ``generator`` and ``hooks``, from a
    ``TrainConfig`` ``train`` and the data's modality ("image", "ecg", "tabular"), with the
    learning rate of round ``server_round`` of ``total_rounds`` (``lr_at``):

        train_local(model, x, y, **train_kwargs(cfg.train, data.modality, r, R), generator=g)

    The defaults give exactly the keywords of before (SGD, constant lr, no augmentation,
    unweighted loss). Raises ValueError (naming the key) for augmentation on tabular data."""
    return {
        "epochs": train.local_epochs,
        "batch_size": train.batch_size,
        "lr": lr_at(server_round, total_rounds, train),
        "momentum": train.momentum,
        "weight_decay": train.weight_decay,
        "optimizer": train.optimizer,
        "class_weights": train.class_weights,
        "augment": (Augment(modality, flip=train.augment_flip, shift=train.augment_shift)
                    if train.augment else None),
    }


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
