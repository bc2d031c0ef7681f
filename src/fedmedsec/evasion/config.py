"""Config sections for evasion (proposed ``[evasion]``) and adversarial training (keys of
``[train]``). extra = "forbid": an unknown key is an error naming it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the registered evasion attacks (``attacks.EVASION_ATTACKS``; a test keeps them equal), listed
#: here so that validating a config does not import torch
ATTACK_NAMES = ("apgd", "apgd-dlr", "autoattack", "fgsm", "pgd")

__all__ = ["EvasionConfig", "AdversarialTrainingConfig", "DEFAULT_EPS", "DEFAULT_ADVERSARIAL_EPS"]

#: proposed L-inf budgets per modality (image pixels in [0, 1]; ECG and tabular in
#: standardised units). Measured on centrally trained models (fedmedsec.evasion.measure):
#: PGD-10 cuts accuracy by >= 0.2 at the middle value for images (BreastMNIST 0.81 -> 0.37 at
#: 2/255) and ECG (synthetic, 0.99 -> 0.75 at 0.2), and at the largest for tabular (WDBC
#: 0.98 -> 0.80 at 0.25, -> 0.43 at 0.5).
DEFAULT_EPS = {"image": [1 / 255, 2 / 255, 4 / 255], "ecg": [0.1, 0.2, 0.3], "tabular": [0.1, 0.25, 0.5]}
#: proposed train.adversarial_eps per modality (the budget the measurements trained at)
DEFAULT_ADVERSARIAL_EPS = {"image": 2 / 255, "ecg": 0.2, "tabular": 0.25}


class EvasionConfig(BaseModel):
    """``[evasion]``: robustness of the final (or every k-th) global model at each hospital.

    attacks: subset of fgsm, pgd, apgd (APGD-CE), apgd-dlr (>= 3 classes), autoattack
        (torchattacks' AutoAttack standard: >= 4 classes, images only, slow on CPU).
    eps: budgets in the modality's units (empty = off). norm: linf or l2.
    steps: iterations of PGD and APGD. targeted + target_label: targeted mode (e.g.
    BreastMNIST malignant 0 -> benign 1: target_label = 1). positive_label: the class whose
    sensitivity is reported. every: evaluate every k rounds (0 = the final model only).
    immutable: tabular features never perturbed (names or indices). detector:
    feature_squeezing or none; detector_fpr its clean false-positive rate. max_records: cap
    of evaluated test records per hospital (cost)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    attacks: list[str] = Field(default_factory=lambda: ["fgsm", "pgd", "apgd"])
    eps: list[float] = Field(default_factory=list, max_length=32, description="budgets; empty = evasion off")
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(10, ge=1, le=1000)
    targeted: bool = False
    target_label: int | None = Field(None, ge=0)
    positive_label: int | None = Field(None, ge=0, description="default: data.positive_class")
    every: int = Field(0, ge=0, description="every k rounds; 0 = final model only")
    immutable: list[str | int] = Field(default_factory=list)
    detector: Literal["feature_squeezing", "none"] = "none"
    detector_fpr: float = Field(0.05, gt=0.0, lt=1.0)
    max_records: int | None = Field(200, ge=1, le=1_000_000)

    @field_validator("attacks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ATTACK_NAMES]
        if bad:
            raise ValueError(f"unknown attack {bad[0]!r}; choose from {', '.join(ATTACK_NAMES)}")
        if len(set(v)) != len(v):
            raise ValueError("an attack is listed twice")
        return v

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        if any(not (0.0 <= e < float("inf")) for e in v):
            raise ValueError("every eps must be finite and >= 0")
        return v

    @model_validator(mode="after")
    def _target(self) -> EvasionConfig:
        if self.targeted and self.target_label is None:
            raise ValueError("evasion.targeted = true needs evasion.target_label")
        if self.targeted and "autoattack" in self.attacks:
            raise ValueError("evasion.attacks: autoattack has no targeted mode")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.eps) and bool(self.attacks)


class AdversarialTrainingConfig(BaseModel):
    """Keys for ``[train]`` (mount by inheriting or copying the fields): local PGD
    adversarial training (Madry et al. 2018) at every hospital (Zizzo et al. 2020)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    adversarial: Literal["none", "pgd"] = "none"
    adversarial_eps: float = Field(0.0, ge=0.0, description="budget in the modality's units")
    adversarial_steps: int = Field(5, ge=1, le=100)
    adversarial_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of each batch")
    adversarial_norm: Literal["linf", "l2"] = "linf"

    @model_validator(mode="after")
    def _eps_needed(self) -> AdversarialTrainingConfig:
        if self.adversarial == "pgd" and not self.adversarial_eps > 0:
            raise ValueError("train.adversarial = 'pgd' needs train.adversarial_eps > 0")
        return self
