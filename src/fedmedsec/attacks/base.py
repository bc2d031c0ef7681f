"""The attack interface shared by data poisoning and model poisoning.

An attack is built from its validated parameters by a registered factory. The Flower
plumbing calls it at three points, all optional:

1. ``poison_data`` on the malicious hospital's local training data, before training;
2. ``train_hooks`` into the hospital's own local training loop (``training.TrainHooks``:
   Neurotoxin's gradient mask, the defense-aware backdoor's norm-ball projection), after
   ``observe`` has shown it the round's global model;
3. ``poison_update`` on the hospital's own update ``Tensor[d]`` after training (knowledge:
   own update only);
4. ``collude`` on the server side in simulation, for attacks whose threat model needs benign
   statistics (ALIE, IPM, min-max, min-sum, Fang, AGR-tailored). With ``knowledge = "full"``
   the reference rows are the round's honest updates (the omniscient, colluding adversary of
   those papers); with ``"partial"`` they are the attackers' own benign updates, all a real
   red-team hospital has (Shejwalkar and Houmansadr, NDSS 2021, Sec. III-B).

Every attack declares its ``ThreatModel`` (SoK: Security and Privacy Risks of Healthcare
AI, arXiv 2409.07415): goal, adversary and knowledge; it goes into the results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pydantic
import torch

from ..registry import Registry

if TYPE_CHECKING:
    from ..training import TrainHooks

Goal = Literal["integrity", "availability", "confidentiality"]
Knowledge = Literal["full", "partial"]

#: What a colluding attack knows about the benign updates, per knowledge level; the
#: ThreatModel's ``knowledge`` text of a colluding attack contains exactly one of them.
BENIGN_KNOWLEDGE = {"full": "honest updates", "partial": "own benign updates"}


@dataclass(frozen=True)
class ThreatModel:
    goal: Goal
    adversary: str  # e.g. "malicious hospital", "colluding hospitals"
    knowledge: str  # e.g. "own data", "own update", "honest updates"
    targeted: bool = False  # a target class exists, so attack success rate is defined


#: The threat model of the "none" attack (a clean run): no adversary, no knowledge.
NO_THREAT = ThreatModel(goal="integrity", adversary="none", knowledge="none")


@dataclass(frozen=True)
class AttackContext:
    """What the attacker knows about the setup.

    modality: "tabular" | "image" | "ecg". num_classes: C. input_shape: one record's shape.
    n_clients: hospitals in the round. n_attackers: malicious hospitals.
    attacker_index: this hospital's index among the attackers (0..n_attackers-1, for DBA).
    f: the defender's assumed f (public in these papers' threat models).
    round: the server round. feature_low / feature_high: per-feature min/max of the
    (preprocessed) training data, np.ndarray[input_shape] (tabular triggers use them).
    defense_rule / defense_params: the server's ``defense.name`` and the rule's own keys
    (e.g. ``{"beta": 0.1}`` for trimmed_mean), for attacks tailored to the deployed rule.
    knowledge: "full" (collude sees the round's honest updates) or "partial" (only the
    attackers' own benign updates; n_clients is still the round's n).
    class_names: the dataset's class names, or None; class_counts: training records per
    class (pooled over the hospitals, a count per class), or None. Both choose the default
    backdoor target (``data.backdoor.default_target_label``).
    """

    modality: str
    num_classes: int
    input_shape: tuple[int, ...]
    n_clients: int = 1
    n_attackers: int = 1
    attacker_index: int = 0
    f: int = 0
    round: int = 1
    feature_low: np.ndarray | None = None
    feature_high: np.ndarray | None = None
    defense_rule: str | None = None
    defense_params: Mapping[str, Any] = field(default_factory=dict)
    knowledge: Knowledge = "full"
    class_names: tuple[str, ...] | None = None
    class_counts: tuple[int, ...] | None = None


@dataclass
class Attack:
    """Base attack: identity at every hook. Subclasses override what they poison."""

    threat: ThreatModel = field(
        default_factory=lambda: ThreatModel("integrity", "malicious hospital", "own data")
    )
    target_label: int | None = None
    needs_honest_updates: bool = False

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, ctx: AttackContext
    ) -> tuple[np.ndarray, np.ndarray]:
        """x: [N, *input_shape] float32, y: [N] int64 -> poisoned copies (never in place)."""
        return x, y

    def poison_update(
        self, update: torch.Tensor, rng: torch.Generator, ctx: AttackContext
    ) -> torch.Tensor:
        """update: Tensor[d] (local model minus global) -> malicious Tensor[d]."""
        return update

    def collude(
        self, reference: torch.Tensor, malicious: torch.Tensor, rng: torch.Generator,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """reference: Tensor[n_ref, d] the benign updates the attackers know (full knowledge:
        the round's n_h honest updates; partial: their own m benign updates, then equal to
        ``malicious``), malicious: Tensor[m, d] (what the attackers trained)
        -> Tensor[m, d] the attackers send. Called only if ``needs_honest_updates``."""
        return malicious

    def threat_for(self, knowledge: Knowledge) -> ThreatModel:
        """The threat model at a knowledge level: a colluding attack's ``knowledge`` text
        names "honest updates" (full) or "own benign updates" (partial); others unchanged."""
        if knowledge not in BENIGN_KNOWLEDGE:
            raise ValueError(f"attack.knowledge = {knowledge!r}: choose one of full, partial")
        if not self.needs_honest_updates:
            return self.threat
        text = self.threat.knowledge
        for words in BENIGN_KNOWLEDGE.values():
            if words in text:
                new = text.replace(words, BENIGN_KNOWLEDGE[knowledge])
                return replace(self.threat, knowledge=new)
        return self.threat

    def observe(self, global_vec: torch.Tensor, state: dict[str, Any], ctx: AttackContext) -> None:
        """Show the attacker the round's global model Tensor[d] (every round this malicious
        hospital takes part in, attacking or not, before ``train_hooks``). Attacks that learn
        from the global model's history (Neurotoxin's benign direction) keep it in ``state``;
        calling it twice in one round (ctx.round) must not change anything."""

    def train_hooks(
        self, global_vec: torch.Tensor, state: dict[str, Any], ctx: AttackContext
    ) -> TrainHooks | None:
        """Hooks into the attacker's own local training (``training.TrainHooks``): e.g.
        Neurotoxin's gradient mask or a defense-aware projection onto the norm ball.
        global_vec: Tensor[d] the round's global model (``training.state_vector`` layout);
        state: this hospital's dict kept across rounds (e.g. the last global it saw).
        None (the default) trains normally."""
        return None

    def asr_inputs(
        self, x: np.ndarray, y: np.ndarray, ctx: AttackContext
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Inputs for the attack success rate on the server's test set, or None for an
        untargeted attack. Returns (x_eval [N, ...], eligible [N] bool): a backdoor stamps
        the full global trigger and marks rows whose true label is not ``target_label``;
        a targeted label flip returns x unchanged and marks rows of the source class.
        ASR = mean over eligible rows of [model(x_eval) == target_label]."""
        return None


def share_count(share: float, n: int) -> int:
    """How many of ``n`` items a ``share`` in [0, 1] selects: ``round(share * n)`` (Python's
    round, half to even), clipped to 0..n. Used for every fraction in the attacks."""
    return min(n, max(0, int(round(share * n))))


def check_class(key: str, value: int, num_classes: int) -> None:
    """Raise the one-line error for a class label outside 0..C-1."""
    if not 0 <= value < num_classes:
        raise ValueError(f"{key} = {value}: the data has classes 0..{num_classes - 1}")


#: name -> factory(params, ctx: AttackContext) -> Attack. Validate fit (modality, labels)
#: in the factory and raise ValueError with a one-line message naming the key.
ATTACKS: Registry = Registry("attack")


def format_validation_error(exc: pydantic.ValidationError, prefix: str = "attack") -> str:
    """One line for the user from a pydantic error: ``attack.flip_rate = 1.5: <message>``.

    Only the first error is shown (the user fixes one key at a time)."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in (prefix, *err.get("loc", ())))
    if err.get("type") == "extra_forbidden":
        return f"{key}: unknown key"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{key} = {err.get('input')!r}: {msg}"


def make_attack(
    name: str, params: Mapping[str, Any], ctx: AttackContext, prefix: str = "attack"
) -> Attack:
    """Build the attack registered as ``name`` from its raw parameters.

    ``params`` must already be stripped of the keys the lead handles (name, fraction,
    hospitals, start_round, end_round, schedule, every, at_round, round_fraction,
    knowledge). Every user mistake (unknown attack, unknown key, value out of range, misfit
    to the data) becomes a ``ValueError`` with a one-line message naming the key."""
    if name not in ATTACKS:
        choices = ", ".join(ATTACKS.names())
        raise ValueError(f"{prefix}.name = {name!r}: unknown attack; choose one of {choices}")
    entry = ATTACKS.get(name)
    try:
        validated = entry.params.model_validate(dict(params))
    except pydantic.ValidationError as exc:
        raise ValueError(format_validation_error(exc, prefix)) from None
    return entry.obj(validated, ctx)
