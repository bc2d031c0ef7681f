"""FoolsGold (Fung, Yoon and Beschastnikh, RAID 2020): down-weight sybils, whose historical
updates are more similar to each other than honest clients' are."""

from __future__ import annotations

import torch
from pydantic import Field

from ..registry import Params
from ._common import combine, cosine_matrix, guarded
from .base import AGGREGATORS, AggregationContext, AggregationResult


class FoolsGoldParams(Params):
    """kappa: confidence parameter of the logit (paper default 1)."""

    kappa: float = Field(default=1.0, gt=0.0)


def foolsgold_weights(H: torch.Tensor | list[torch.Tensor], kappa: float) -> torch.Tensor:
    """Learning rates alpha: Tensor[n] float64 from the historical updates H: Tensor[n, d] or a
    list of n Tensor[d] (Fung et al. 2020, Algorithm 1):

    cs_ij = cos(H_i, H_j) for i != j and cs_ii = 0;
    v_i = max_j cs_ij over ALL j, the zero diagonal included, so v_i = max(0, max_{j != i}
        cs_ij) >= 0 (the authors' code, DistributedML/FoolsGold, takes the max of cos - I;
        a max over j != i only is negative for a client anti-correlated with everyone, and
        pardoning by v_i / v_j then flips signs and inverts the weights);
    pardoning: cs_ij <- cs_ij v_i / v_j for j != i with v_j > v_i;
    alpha_i = 1 - max_j cs_ij (diagonal included) clipped to [0, 1]; alpha <- alpha / max(alpha);
    alpha_i <- kappa (ln(alpha_i / (1 - alpha_i)) + 0.5) clipped to [0, 1] (alpha_i = 1 -> 1,
    as the authors' code sets it to 0.99 first).

    If every alpha_i is 0 before normalisation (all histories pairwise parallel) no client can be
    told apart from the others; the paper's formula is undefined (0/0) and all clients get
    weight 1 (this is a choice of ours, not the paper's).
    """
    n = len(H)
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    cs = cosine_matrix(H)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values  # >= 0: the diagonal's 0 is in the max
    pardon = v[None, :] > v[:, None]  # v_j > v_i (then v_j > 0)
    pardon.fill_diagonal_(False)
    ratio = v[:, None] / torch.where(pardon, v[None, :], torch.ones_like(cs))
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if top <= 0:
        return torch.ones(n, dtype=torch.float64)
    alpha = alpha / top
    one = alpha >= 1.0
    a = alpha.clamp(max=0.99)
    logit = kappa * (torch.log(a / (1.0 - a)) + 0.5)  # -inf at alpha = 0
    out = torch.nan_to_num(logit, neginf=0.0).clamp(0.0, 1.0)
    out[one] = 1.0
    return out


@AGGREGATORS.register(
    "foolsgold", FoolsGoldParams, requirement=None,
    filters=True, needs_reference=False, mean_sensitivity=False, sum_only=False,
)
def make_foolsgold(params: FoolsGoldParams):
    """FoolsGold. History: ctx.state["history"] maps client id -> Tensor[d] float64, the sum of
    that client's updates over the rounds it took part in (rows keyed by ctx.client_ids, or by
    row index when those are empty; float64 so that sums of float32 rows near the top of the
    range do not overflow). agg = sum_i alpha_i x_i / sum_i alpha_i (zero if all alpha are 0;
    Algorithm 1 writes sum_i alpha_i x_i, the normalisation is ours so equal rows give that
    row). weights: alpha_i / sum_j alpha_j. No requirement on (n, f): FoolsGold does not bound
    the number of sybils (Fung et al.: it does not assume a number of attackers and ignores f).
    Mutates ctx.state by design; never the updates."""

    @guarded("foolsgold", params)
    def foolsgold(updates: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
        n, d = updates.shape
        ids = tuple(ctx.client_ids) if ctx.client_ids else tuple(range(n))
        if len(ids) != n:
            raise ValueError(f"ctx.client_ids has {len(ids)} ids for n={n} updates")
        hist: dict = ctx.state.setdefault("history", {})
        rows = []
        for i, cid in enumerate(ids):
            prev = hist.get(cid)
            x = updates[i].detach().to(torch.float64, copy=True)
            h = x if prev is None else prev.double() + x
            hist[cid] = h
            rows.append(h)
        alpha = foolsgold_weights(rows, params.kappa)  # no n x d float64 stack
        total = alpha.sum()
        if total <= 0:
            return AggregationResult(
                torch.zeros(d, dtype=updates.dtype), torch.zeros(n, dtype=updates.dtype)
            )
        share = alpha / total
        return AggregationResult(combine(share, updates), share.to(updates.dtype))

    return foolsgold
