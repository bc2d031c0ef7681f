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
from .mia import histogram_of, lira_offline, roc_from_histograms, roc_summary

if TYPE_CHECKING:
    from ..experiment import Setup


def membership_audit(setup: Setup, model: nn.Module, audits: dict[int, dict]) -> dict[str, Any] | None:
    """The run's membership-inference result from the hospitals' own audits
    (``mia.hospital_audit``: each hospital attacks the final global model with its training
    records as members and its test split as non-members, on its own machine): overall AUC
    and TPR at 1% FPR from the merged loss histograms, the same per hospital, and offline
    LiRA when asked for and the records are in this process (simulation), overall and per
    hospital (``lira.per_hospital``). None when ``experiment.mia`` is off or no hospital
    reported."""
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
        "per_hospital_n": {str(p): [int(good[p][0].sum()), int(good[p][1].sum())] for p in sorted(good)},
    }
    d = setup.data
    if cfg.experiment.mia_lira_shadows and all(len(h.y_train) for h in d.hospitals):
        nonmembers = (np.concatenate([d.x_test] + [h.x_test for h in d.hospitals]),
                      np.concatenate([d.y_test] + [h.y_test for h in d.hospitals]))
        # the hospital of each member / non-member record (-1: the server's test set)
        member_of = np.concatenate([np.full(len(h.y_train), h.id) for h in d.hospitals])
        nonmember_of = np.concatenate([np.full(len(d.y_test), -1)] + [np.full(len(h.y_test), h.id)
                                                                       for h in d.hospitals])
        out["lira"] = lira_audit(setup, model, d.pooled_train, nonmembers, (member_of, nonmember_of))
    return out


#: fewest members and non-members of one hospital among LiRA's targets for its own AUC / TPR
MIN_PER_HOSPITAL = 5


def lira_audit(setup: Setup, model: nn.Module, members, nonmembers,
               hospital_of: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Offline LiRA (Carlini et al. 2022) with K shadow models. The attacker holds half of
    the held-out records (its population, from which each shadow model trains on a random
    half with the hospitals' recipe: rounds x local_epochs epochs of local SGD); the other
    half are the non-member targets, balanced with as many members.

    hospital_of: (hospital id of each member record, of each non-member record; -1 for
    none): adds ``per_hospital`` {id: {auc, tpr_at_1pct_fpr, n_members, n_nonmembers}}, the
    hospital's own member targets against its own non-member targets (its test split), the
    same scores as the overall attack; None where a side has fewer than MIN_PER_HOSPITAL."""
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

    res, scores = lira_offline(model, x_t, y_t, is_member, len(pop), train_shadow, rng,
                               k=cfg.experiment.mia_lira_shadows)
    out = {"attack": "lira_offline", "auc": res.auc, "tpr_at_1pct_fpr": res.tpr_at_1pct_fpr,
           "shadows": cfg.experiment.mia_lira_shadows, "n": int(len(tgt))}
    if hospital_of is not None:
        owner = np.concatenate([np.asarray(hospital_of[0])[mi], np.asarray(hospital_of[1])[tgt]])
        out["per_hospital"] = {}
        for h in setup.data.hospitals:
            sm, sn = scores[is_member & (owner == h.id)], scores[~is_member & (owner == h.id)]
            entry = {"auc": None, "tpr_at_1pct_fpr": None, "n_members": int(len(sm)), "n_nonmembers": int(len(sn))}
            if min(len(sm), len(sn)) >= MIN_PER_HOSPITAL:
                r = roc_summary(sm, sn, attack="lira_offline")
                entry.update(auc=r.auc, tpr_at_1pct_fpr=r.tpr_at_1pct_fpr)
            out["per_hospital"][str(h.id)] = entry
    return out
