"""Defense-aware backdoor: projected gradient descent onto the defense's norm ball (Sun et
al., "Can you really backdoor federated learning?", 2019; Wang et al., "Attack of the Tails",
NeurIPS 2020, Sec. 4 "PGD with model replacement").

The BadNets data poisoning of ``backdoor.py``, trained so the update u = w - g (w the local
parameters, g the round's global ones) always satisfies the defense's bound: after every
local step w <- g + P(w - g), P the Euclidean projection onto

    C = {u : ||u|| <= max_norm / boost}  (and, with ``min_cosine`` c in [0, 1),
                                          cos(u, b) >= c for the observed benign direction b)

so that the sent update boost * u has norm <= max_norm (boost > 1 is Wang et al.'s PGD with
model replacement). b is the change of the global model between the last two rounds the
attacker saw (``history``); without one yet (its first round) only the ball applies. The
cosine set is the circular cone K of half-angle arccos(c) around b; for a closed convex cone
P_{K and ball}(u) = P_ball(P_K(u)): first the cone, in the plane of (b, u): inside if
cos(u, b) >= c, 0 if u is in the polar cone (s <= 0 below), else the nearest point of the
boundary ray, s * (c b + sqrt(1 - c^2) w / ||w||) with u = a b + w, w _|_ b, s = c a +
sqrt(1 - c^2) ||w||; then the ball, u * min(1, r / ||u||). The sent update is clipped to
max_norm once more over the whole state vector (buffers included).

max_norm None = the server's bound when it is public and fixed: ``defense.name =
"norm_bounding"`` with ``defense.max_norm`` set (its median-norm default is not known to the
attacker before the round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field

from ...training import TrainHooks
from ..base import ATTACKS, AttackContext, ThreatModel
from .backdoor import Backdoor, BackdoorParams, backdoor_fields
from .history import observe_global, observed_direction, parameter_slices
from .neurotoxin import clip_to


def project_update(
    u: torch.Tensor, radius: float, direction: torch.Tensor | None = None,
    min_cosine: float | None = None,
) -> torch.Tensor:
    """Euclidean projection of Tensor[P] u onto {||v|| <= radius} (and {cos(v, direction) >=
    min_cosine} when both are given and direction != 0; min_cosine in [0, 1)). float64 math,
    result in u's dtype. See the module docstring."""
    v = u.to(torch.float64)
    if direction is not None and min_cosine is not None:
        b = direction.reshape(-1).to(torch.float64)
        bn = float(b.norm())
        if bn > 0:
            b = b / bn
            a = float(v @ b)
            w = v - a * b
            wn = float(w.norm())
            c, sn = float(min_cosine), math.sqrt(1.0 - float(min_cosine) ** 2)
            if a < c * math.sqrt(a * a + wn * wn):  # outside the cone
                s = c * a + sn * wn
                if s <= 0:
                    v = torch.zeros_like(v)
                else:
                    v = s * (c * b + (sn / wn) * w) if wn > 0 else s * c * b
    norm = float(v.norm())
    if norm > radius:
        v = v * (radius / norm)
    return v.to(u.dtype)


class PgdBackdoorParams(BackdoorParams):
    """max_norm: the defense's L2 bound on the sent update (None = the deployed
    norm_bounding's defense.max_norm). min_cosine: keep cos(update, observed benign
    direction) >= this, in [0, 1) (None = off)."""

    max_norm: float | None = Field(None, gt=0.0)
    min_cosine: float | None = Field(None, ge=0.0, lt=1.0)


@dataclass
class PgdBackdoor(Backdoor):
    max_norm: float = 1.0
    min_cosine: float | None = None

    def observe(self, global_vec, state, ctx):
        observe_global(global_vec, state, ctx.round)

    def train_hooks(self, global_vec, state, ctx):
        self.observe(global_vec, state, ctx)
        direction = observed_direction(state) if self.min_cosine is not None else None
        g0 = global_vec.detach().to(torch.float32)
        radius = self.max_norm / self.boost
        d = g0.numel()
        cache: list = []

        def items(model):
            if not cache:
                for p, a, b in parameter_slices(model, d):
                    db = None if direction is None else direction[a:b].reshape(-1)
                    cache.append((p, g0[a:b].reshape(p.shape).to(p.device, p.dtype), db))
            return cache

        @torch.no_grad()
        def after_step(model):
            its = items(model)
            u = torch.cat([(p - g).reshape(-1) for p, g, _ in its])
            dirn = None if direction is None else torch.cat([db for _, _, db in its])
            v = project_update(u, radius, dirn, self.min_cosine)
            i = 0
            for p, g, _ in its:
                n = p.numel()
                p.copy_(g + v[i:i + n].reshape(p.shape).to(p.dtype))
                i += n

        return TrainHooks(after_step=after_step)

    def poison_update(self, update, rng, ctx):
        return clip_to(super().poison_update(update, rng, ctx), self.max_norm)


@ATTACKS.register("backdoor_pgd", PgdBackdoorParams, kind="data")
def make_backdoor_pgd(params: PgdBackdoorParams, ctx: AttackContext) -> PgdBackdoor:
    max_norm = params.max_norm
    if max_norm is None:
        bound = None
        if ctx.defense_rule == "norm_bounding":
            bound = dict(ctx.defense_params or {}).get("max_norm")
        if bound is None:
            raise ValueError(
                "attack.max_norm: required unless defense.name = 'norm_bounding' with a fixed "
                "defense.max_norm"
            )
        max_norm = float(bound)
    return PgdBackdoor(
        threat=ThreatModel("integrity", "malicious hospital", "own data, defense norm bound",
                           targeted=True),
        max_norm=max_norm,
        min_cosine=params.min_cosine,
        **backdoor_fields(params, ctx),
    )
