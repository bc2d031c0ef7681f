"""The run's membership-inference audit of the final global model (what an
honest-but-curious party learns about who trained it).

Each hospital runs the loss-threshold attack (Yeom et al. 2018) against its own records
(``mia.hospital_audit``); ``membership_audit`` merges what they report, and adds offline
LiRA (Carlini et al. 2022) when shadow models are asked for; the attacks themselves are in
:mod:`fedmedsec.privacy.mia`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from ..streams import Stream
from ..training import train_kwargs, train_local
from .mia import histogram_of, lira_offline, roc_from_histograms

if TYPE_CHECKING:
    from ..experiment import Setup


def membership_audit(setup: Setup, model: nn.Module, audits: dict[int, dict]) -> dict[str, Any] | None:
    """The run's membership-inference result from the hospitals' own audits
    (``mia.hospital_audit``: each hospital attacks the final global model with its training
    records as members and its test split as non-members, on its own machine): overall AUC
    and TPR at 1% FPR from the merged loss histograms, the same per hospital, and offline
    LiRA when asked for and the records are in this process (simulation). None when
    ``experiment.mia`` is off or no hospital reported."""
    cfg = setup.cfg
    if not cfg.experiment.mia or not audits:
        return None
    good = {}
    for pid, a in audits.items():
        try:
            good[pid] = (histogram_of(a, "members"), histogram_of(a, "nonmembers"))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed audit from one hospital is left out
    audits = {p: audits[p] for p in good}
    if not good:
        return None
    hm = sum(h[0] for h in good.values())
    hn = sum(h[1] for h in good.values())
    try:
        res = roc_from_histograms(hm, hn)
    except ValueError:
        return None
    out: dict[str, Any] = {
        "attack": "loss_threshold", "auc": res.auc, "tpr_at_1pct_fpr": res.tpr_at_1pct_fpr,
        "n_members": res.n_members, "n_nonmembers": res.n_nonmembers, "evaluated_on": "hospitals",
        "per_hospital_auc": {str(p): a["auc"] for p, a in sorted(audits.items()) if a["auc"] is not None},
        "per_hospital_tpr_at_1pct_fpr": {str(p): a["tpr_at_1pct_fpr"] for p, a in sorted(audits.items())
                                         if a["tpr_at_1pct_fpr"] is not None},
    }
    d = setup.data
    if cfg.experiment.mia_lira_shadows and all(len(h.y_train) for h in d.hospitals):
        nonmembers = (np.concatenate([d.x_test] + [h.x_test for h in d.hospitals]),
                      np.concatenate([d.y_test] + [h.y_test for h in d.hospitals]))
        out["lira"] = lira_audit(setup, model, d.pooled_train, nonmembers)
    return out


def lira_audit(setup: Setup, model: nn.Module, members, nonmembers) -> dict[str, Any]:
    """Offline LiRA (Carlini et al. 2022) with K shadow models. The attacker holds half of
    the held-out records (its population, from which each shadow model trains on a random
    half with the hospitals' recipe: rounds x local_epochs epochs of local SGD); the other
    half are the non-member targets, balanced with as many members."""
    cfg = setup.cfg
    rng = setup.rng(Stream.LIRA)
    xn, yn = nonmembers
    perm = rng.permutation(len(yn))
    pop, tgt = perm[: len(perm) // 2], perm[len(perm) // 2:]
    mi = rng.choice(len(members[1]), size=min(len(tgt), len(members[1])), replace=False)
    x_t = np.concatenate([members[0][mi], xn[tgt]])
    y_t = np.concatenate([members[1][mi], yn[tgt]])
    is_member = np.concatenate([np.ones(len(mi), bool), np.zeros(len(tgt), bool)])
    t = cfg.train
    shadows_trained = [0]

    def train_shadow(idx: np.ndarray) -> nn.Module:
        shadow = setup.new_model()
        # the hospitals' recipe over the whole run: rounds x local_epochs epochs, one optimiser
        kw = train_kwargs(t, setup.data.modality)
        kw["epochs"] = cfg.experiment.rounds * t.local_epochs
        train_local(shadow, xn[pop][idx], yn[pop][idx], **kw,
                    generator=setup.generator(Stream.LIRA_SHADOW, shadows_trained[0]))
        shadows_trained[0] += 1
        return shadow

    res, _ = lira_offline(model, x_t, y_t, is_member, len(pop), train_shadow, rng,
                          k=cfg.experiment.mia_lira_shadows)
    return {"attack": "lira_offline", "auc": res.auc, "tpr_at_1pct_fpr": res.tpr_at_1pct_fpr,
            "shadows": cfg.experiment.mia_lira_shadows, "n": int(len(tgt))}
