"""IPM, inner product manipulation (Xie, Koyejo and Gupta, "Fall of Empires", UAI 2019)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ...registry import Params
from ..base import ATTACKS, Attack, AttackContext
from ._common import COLLUDING, check_reference, send_same, with_knowledge


def ipm(reference: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Crafted update -epsilon * mean_i(reference_i): Tensor[n_ref, d] -> Tensor[d].

    Makes the inner product of the aggregate with the true gradient negative; a small
    epsilon (0.1) stays close enough to pass median and Krum (Xie et al. 2019). The
    reference is the honest updates (full knowledge) or the attackers' own (partial)."""
    check_reference(reference)
    return (-epsilon * reference.to(torch.float64).mean(dim=0)).to(reference.dtype)


class IpmParams(Params):
    epsilon: float = Field(0.1, gt=0.0)


@dataclass
class Ipm(Attack):
    epsilon: float = 0.1

    def collude(self, reference, malicious, rng, ctx):
        return send_same(ipm(reference, self.epsilon), malicious)


@ATTACKS.register("ipm", IpmParams, kind="model")
def make_ipm(params: IpmParams, ctx: AttackContext) -> Ipm:
    atk = Ipm(threat=COLLUDING, needs_honest_updates=True, epsilon=params.epsilon)
    return with_knowledge(atk, ctx)
