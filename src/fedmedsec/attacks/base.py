"""The attack interface shared by data poisoning and model poisoning.

An attack is built from its validated parameters by a registered factory. The Flower
plumbing calls it at three points, all optional:

1. ``poison_data`` on the malicious hospital's local training data, before training;
2. ``poison_update`` on the hospital's own update ``Tensor[d]`` after training (knowledge:
   own update only);
3. ``collude`` on the server side in simulation, for attacks whose threat model needs the
   honest updates of the round (ALIE, IPM, min-max, min-sum, Fang): the omniscient,
   colluding adversary of those papers.

Every attack declares its ``ThreatModel`` (SoK: Security and Privacy Risks of Healthcare
AI, arXiv 2409.07415): goal, adversary and knowledge; it goes into the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np
import pydantic
import torch

from ..registry import Registry

if TYPE_CHECKING:
    from ..training import TrainHooks

Goal = Literal["integrity", "availability", "confidentiality"]


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
        self, honest: torch.Tensor, malicious: torch.Tensor, rng: torch.Generator, ctx: AttackContext
    ) -> torch.Tensor:
        """honest: Tensor[n_h, d], malicious: Tensor[m, d] (what the attackers trained)
        -> Tensor[m, d] the attackers send. Called only if ``needs_honest_updates``."""
        return malicious

    def train_hooks(
        self, global_vec: torch.Tensor, state: dict[str, Any], ctx: AttackContext
    ) -> "TrainHooks | None":
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
    hospitals, start_round, end_round). Every user mistake (unknown attack, unknown key, value
    out of range, misfit to the data) becomes a ``ValueError`` with a one-line message naming
    the key."""
    if name not in ATTACKS:
        choices = ", ".join(ATTACKS.names())
        raise ValueError(f"{prefix}.name = {name!r}: unknown attack; choose one of {choices}")
    entry = ATTACKS.get(name)
    try:
        validated = entry.params.model_validate(dict(params))
    except pydantic.ValidationError as exc:
        raise ValueError(format_validation_error(exc, prefix)) from None
    return entry.obj(validated, ctx)
