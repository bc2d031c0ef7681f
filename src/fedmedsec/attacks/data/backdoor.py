"""Backdoor data poisoning: BadNets and the distributed backdoor attack (DBA).

BadNets (Gu et al., "BadNets", 2017): the attacker stamps a trigger on exactly
round(poison_fraction * N) of its N records, drawn by its rng, and relabels them to
``target_label``. The trigger comes from ``triggers.TRIGGERS`` (tabular ``feature``; image
``patch``/``blended``; ECG ``waveform``), the default per modality when ``trigger`` is unset.

DBA (Xie et al., "DBA: Distributed Backdoor Attacks against Federated Learning", ICLR
2020): the global trigger is split into n_parts = min(n_attackers, trigger.max_parts)
disjoint local parts; attacker i stamps only part (i mod n_parts), i and n_attackers read
from the ``ctx`` passed to ``poison_data`` (one attack instance serves all attackers).
Attack success is measured with the full global trigger.

Attack success rate (REFERENCES): stamp the full trigger on the server's test inputs and
count, among rows whose true label is not the target, those classified as the target.

``boost`` > 1 combines the backdoor with model replacement (Bagdasaryan et al., AISTATS
2020): after local training the update X - G is sent as boost * (X - G).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from ..base import ATTACKS, Attack, AttackContext, ThreatModel, check_class, share_count
from .triggers import Trigger, TriggerParams, make_trigger

#: Class names that mean "benign / normal / no disease" (lower case, matched as substrings;
#: "abnormal" excluded) or, exactly, a normal code (MIT-BIH AAMI "N", PTB-XL "NORM").
NORMAL_WORDS = ("benign", "normal", "healthy", "negative", "no disease", "no_disease", "control")
NORMAL_CODES = ("n", "norm", "nsr")


def default_target_label(ctx: AttackContext) -> int:
    """The default backdoor target: a class a model never poisoned does not already give to
    triggered inputs, so that the attack success rate measures the poisoning.

    Tabular and ECG: the dataset's benign / normal class, the first whose name
    (``ctx.class_names``) contains a NORMAL_WORDS entry or is a NORMAL_CODES code, else class
    0 (the UCI heart target's "0" = no disease). Their triggers are out-of-range feature values
    and an added waveform, which a clean model reads as abnormal, and the clinically harmful
    backdoor is a missed diagnosis. Measured (clean federations, seeds 0-4, the trigger's rate
    on eligible test rows): WDBC target benign 0.0, target malignant 0.85-1.0 (the old
    default); heart no disease 0.0 (disease 1.0); ecg_synthetic normal sinus <= 0.007.
    Images: the least frequent training class (``ctx.class_counts``; else class 0). A patch in
    a corner barely moves a clean model, so its rate is the model's own confusion into the
    target, low for a class it rarely predicts: BreastMNIST malignant 0.03-0.08, while benign
    starts at 0.48-0.79 (the clean model misses half the malignant images even untriggered)."""
    names = [str(n).strip().lower() for n in (ctx.class_names or ())]
    if ctx.modality == "image":
        counts = ctx.class_counts
        if counts and len(counts) == ctx.num_classes:
            return int(min(range(len(counts)), key=lambda c: (counts[c], c)))
        return 0
    for i, name in enumerate(names):
        if "abnormal" not in name and any(w in name for w in NORMAL_WORDS):
            return i
    for i, name in enumerate(names):
        if name in NORMAL_CODES:
            return i
    return 0


class BackdoorParams(TriggerParams):
    """target_label: class the trigger maps to (None = the benign / normal class,
    ``default_target_label``). poison_fraction: share of the attacker's records stamped, in
    (0, 1]. trigger: trigger kind (None = the modality's default). boost: model-replacement
    factor applied to the trained update (1 = none)."""

    target_label: int | None = Field(None, ge=0)
    poison_fraction: float = Field(0.5, gt=0.0, le=1.0)
    trigger: str | None = None
    boost: float = Field(1.0, gt=0.0)


@dataclass
class Backdoor(Attack):
    """BadNets / DBA. ``distributed``: each attacker stamps its own DBA part, derived at
    poison time from ``ctx`` (``trigger_part``), so ONE instance serves every attacker."""

    trigger: Trigger | None = None
    poison_fraction: float = 0.5
    boost: float = 1.0
    distributed: bool = False

    def trigger_part(self, ctx: AttackContext) -> tuple[int | None, int]:
        """(part, n_parts) this attacker stamps: (None, 1) for BadNets (the full trigger);
        DBA: n_parts = min(ctx.n_attackers, trigger.max_parts), part = attacker_index mod
        n_parts (more attackers than parts cycle through the parts)."""
        if not self.distributed:
            return None, 1
        n_parts = max(1, min(int(ctx.n_attackers), self.trigger.max_parts))
        return int(ctx.attacker_index) % n_parts, n_parts

    def poison_data(self, x, y, rng, ctx):
        n = len(y)
        k = share_count(self.poison_fraction, n)
        rows = np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, np.int64)
        x_out = np.array(x, copy=True)
        y_out = np.array(y, copy=True)
        if k:
            part, n_parts = self.trigger_part(ctx)
            x_out[rows] = self.trigger.apply(x_out[rows], part=part, n_parts=n_parts)
            y_out[rows] = self.target_label
        return x_out, y_out

    def poison_update(self, update: torch.Tensor, rng, ctx) -> torch.Tensor:
        return update * self.boost if self.boost != 1.0 else update.clone()

    def asr_inputs(self, x, y, ctx):
        return self.trigger.apply(np.asarray(x)), np.asarray(y) != self.target_label


def backdoor_fields(params: BackdoorParams, ctx: AttackContext) -> dict:
    """The validated Backdoor fields shared by every backdoor variant (target, trigger, ...)."""
    target = params.target_label if params.target_label is not None else default_target_label(ctx)
    check_class("attack.target_label", target, ctx.num_classes)
    return {
        "target_label": target,
        "trigger": make_trigger(params.trigger, params, ctx),
        "poison_fraction": params.poison_fraction,
        "boost": params.boost,
    }


def _build(params: BackdoorParams, ctx: AttackContext, distributed: bool) -> Backdoor:
    knowledge = "own data" if params.boost == 1.0 else "own data, number of clients"
    adversary = "colluding hospitals" if distributed else "malicious hospital"
    return Backdoor(
        threat=ThreatModel("integrity", adversary, knowledge, targeted=True),
        distributed=distributed,
        **backdoor_fields(params, ctx),
    )


@ATTACKS.register("backdoor", BackdoorParams, kind="data")
def make_backdoor(params: BackdoorParams, ctx: AttackContext) -> Backdoor:
    return _build(params, ctx, distributed=False)


@ATTACKS.register("dba", BackdoorParams, kind="data")
def make_dba(params: BackdoorParams, ctx: AttackContext) -> Backdoor:
    return _build(params, ctx, distributed=True)
