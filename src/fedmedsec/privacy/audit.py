"""The run's membership-inference audit of the final global model (what an
honest-but-curious party learns about who trained it).

``membership_audit`` runs the loss-threshold attack (Yeom et al. 2018) overall and per
hospital, and offline LiRA (Carlini et al. 2022) when shadow models are asked for; the
attacks themselves are in :mod:`fedmedsec.privacy.mia`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from ..streams import Stream
from ..training import train_local
from .mia import lira_offline, mia_evaluate

if TYPE_CHECKING:
    from ..experiment import Setup


def membership_audit(setup: Setup, model: nn.Module) -> dict[str, Any] | None:
    """Loss-threshold membership inference on ``model``: members are the hospitals'
    training records, non-members every held-out record of the same distribution (the
    server's test set and the hospitals' test splits), balanced by subsampling the larger
    side; per hospital against its own test split where both sides have >= 5 records.
    None when ``experiment.mia`` is off."""
    cfg = setup.cfg
    if not cfg.experiment.mia:
        return None
    d = setup.data
    members = d.pooled_train
    nonmembers = (np.concatenate([d.x_test] + [h.x_test for h in d.hospitals]),
                  np.concatenate([d.y_test] + [h.y_test for h in d.hospitals]))
    res = mia_evaluate(model, members, nonmembers, setup.rng(Stream.MEMBERSHIP_INFERENCE))
    per: dict[str, float] = {}
    for h in d.hospitals:
        if min(len(h.y_train), len(h.y_test)) >= 5:
            r = mia_evaluate(model, (h.x_train, h.y_train), (h.x_test, h.y_test),
                             setup.rng(Stream.MEMBERSHIP_INFERENCE, h.id))
            per[str(h.id)] = r["auc"]
    out = {**res, "per_hospital_auc": per}
    if cfg.experiment.mia_lira_shadows:
        out["lira"] = lira_audit(setup, model, members, nonmembers)
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
        train_local(shadow, xn[pop][idx], yn[pop][idx],
                    epochs=cfg.experiment.rounds * t.local_epochs, batch_size=t.batch_size,
                    lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                    generator=setup.generator(Stream.LIRA_SHADOW, shadows_trained[0]))
        shadows_trained[0] += 1
        return shadow

    res, _ = lira_offline(model, x_t, y_t, is_member, len(pop), train_shadow, rng,
                          k=cfg.experiment.mia_lira_shadows)
    return {"attack": "lira_offline", "auc": res.auc, "tpr_at_1pct_fpr": res.tpr_at_1pct_fpr,
            "shadows": cfg.experiment.mia_lira_shadows, "n": int(len(tgt))}
