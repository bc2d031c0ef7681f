"""Neurotoxin (Zhang et al., "Neurotoxin: Durable Backdoors in Federated Learning", ICML 2022).

A backdoor (the BadNets data poisoning of ``backdoor.py``: trigger, target_label,
poison_fraction, boost) whose local training only moves the coordinates the benign updates
change least, so the honest clients' later updates do not overwrite it (durability).

Mask (Alg. 1): with b the benign direction the attacker observes, here the change of the
global model between the last two rounds it saw (``history.observed_direction``), exclude the
k = round(top_k_ratio * P) parameter coordinates with the LARGEST |b_j| (P: trainable
parameter coordinates, ties broken by the lower index) and keep the other (1 - top_k_ratio)
share. Every local step projects the gradient onto the kept coordinates (``before_step``
zeroes the rest; with DP-SGD it sees the privatised gradient). ``after_step`` then resets the
excluded coordinates to the round's global values: a no-op for plain SGD with or without
momentum, and what keeps the update exactly zero there under weight decay (SGD adds wd * w to
every gradient). The first round the attacker sees has no direction yet: it trains WITHOUT a
mask (the paper's attacker also needs one observed round; the global's magnitude is no benign
direction). The final update is optionally norm-clipped to ``clip_norm`` (after ``boost``).

top_k_ratio default 0.1, the FLPoison setting (REFERENCES); the paper sweeps the masked
share per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import Field

from ...training import TrainHooks
from ..base import ATTACKS, AttackContext, ThreatModel, share_count
from .backdoor import Backdoor, BackdoorParams, backdoor_fields
from .history import observe_global, observed_direction, parameter_slices


def neurotoxin_mask(
    direction: torch.Tensor, top_k_ratio: float, eligible: torch.Tensor | None = None
) -> torch.Tensor:
    """Tensor[d] bool, True where the attacker may train: among the ``eligible`` coordinates
    (default all; P of them) all but the k = round(top_k_ratio * P) with the largest
    |direction| (ties: the lower index is excluded first). Not eligible -> False."""
    d = direction.numel()
    eligible = torch.ones(d, dtype=torch.bool) if eligible is None else eligible.reshape(-1)
    idx = torch.nonzero(eligible).reshape(-1)
    k = share_count(top_k_ratio, idx.numel())
    mag = direction.reshape(-1)[idx].abs().to(torch.float64)
    order = torch.sort(mag, descending=True, stable=True).indices
    keep = eligible.clone()
    keep[idx[order[:k]]] = False
    return keep


def clip_to(update: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """update * min(1, max_norm / ||update||) (a copy; None = no clipping)."""
    if max_norm is None:
        return update.clone()
    norm = float(torch.linalg.vector_norm(update.to(torch.float64)))
    return update * (max_norm / norm) if norm > max_norm else update.clone()


class NeurotoxinParams(BackdoorParams):
    """top_k_ratio: share of the trainable coordinates (largest observed benign change)
    the attacker leaves alone, in [0, 1). clip_norm: L2 bound of the sent update (None = off)."""

    top_k_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    clip_norm: float | None = Field(None, gt=0.0)


@dataclass
class Neurotoxin(Backdoor):
    top_k_ratio: float = 0.1
    clip_norm: float | None = None
    last_mask: torch.Tensor | None = field(default=None, repr=False)  # latest round, Tensor[d] bool

    def observe(self, global_vec, state, ctx):
        observe_global(global_vec, state, ctx.round)

    def train_hooks(self, global_vec, state, ctx):
        self.observe(global_vec, state, ctx)
        direction = observed_direction(state)
        self.last_mask = None
        if direction is None or direction.numel() != global_vec.numel():
            return None  # first round seen: no benign direction yet, train unmasked
        g0 = global_vec.detach().to(torch.float32)
        d = g0.numel()
        cache: list = []

        def items(model):
            if not cache:
                slices = parameter_slices(model, d)
                eligible = torch.zeros(d, dtype=torch.bool)
                for _, a, b in slices:
                    eligible[a:b] = True
                keep = neurotoxin_mask(direction, self.top_k_ratio, eligible)
                self.last_mask = keep
                for p, a, b in slices:
                    k = keep[a:b].reshape(p.shape).to(p.device)
                    g = g0[a:b].reshape(p.shape).to(p.device, p.dtype)
                    cache.append((p, k, k.to(p.dtype), g))
            return cache

        def before_step(model):
            for p, _, kf, _ in items(model):
                if p.grad is not None:
                    p.grad.mul_(kf)

        @torch.no_grad()
        def after_step(model):
            for p, k, _, g in items(model):
                p.copy_(torch.where(k, p, g))

        return TrainHooks(before_step=before_step, after_step=after_step)

    def poison_update(self, update, rng, ctx):
        return clip_to(super().poison_update(update, rng, ctx), self.clip_norm)


@ATTACKS.register("neurotoxin", NeurotoxinParams, kind="data")
def make_neurotoxin(params: NeurotoxinParams, ctx: AttackContext) -> Neurotoxin:
    return Neurotoxin(
        threat=ThreatModel("integrity", "malicious hospital", "own data, global models seen",
                           targeted=True),
        top_k_ratio=params.top_k_ratio,
        clip_norm=params.clip_norm,
        **backdoor_fields(params, ctx),
    )
