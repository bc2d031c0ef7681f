"""Everything both sides of the federation derive from a config: data, model, attackers.

The server and every client build the same ``Setup`` from the same resolved config (the
server sends it in each message), so no state has to be shipped besides model arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from . import streams
from .attacks import ATTACKS, Attack, AttackContext
from .attacks.selection import choose_attackers, is_active
from .config import Config, ConfigError, config_from_dict
from .data.pipeline import FederatedData, build_federated_data
from .models import MODELS, build_model
from .streams import Stream


@dataclass
class Setup:
    cfg: Config
    data: FederatedData
    attackers: tuple[int, ...]
    dp_fix: bool = False  # the model needs Opacus's ModuleValidator.fix for DP-SGD
    #: a deployment node crafts colluding attacks itself from its own update (partial
    #: knowledge); in simulation the server-side adversary hook does it
    collude_locally: bool = False

    @property
    def n(self) -> int:
        return len(self.data.hospitals)

    def new_model(self) -> nn.Module:
        """The initial global model (same seed, same weights on every side)."""
        model = build_model(
            self.cfg.model.name, self.cfg.params("model"), self.data.input_shape,
            self.data.num_classes, seed=self.cfg.experiment.seed,
        )
        if self.dp_fix:
            from .privacy import make_private_compatible

            model = make_private_compatible(model)
        return model

    def attack_context(self, partition_id: int | None = None, server_round: int = 1,
                       n_clients: int | None = None) -> AttackContext:
        idx = self.attackers.index(partition_id) if partition_id in self.attackers else 0
        d = self.data
        return AttackContext(
            modality=d.modality, num_classes=d.num_classes,
            input_shape=d.input_shape, n_clients=n_clients or self.n,
            n_attackers=max(len(self.attackers), 1), attacker_index=idx,
            f=self.cfg.defense.f, round=server_round,
            feature_low=d.feature_low, feature_high=d.feature_high,
            defense_rule=self.cfg.defense.name, defense_params=self.cfg.params("defense"),
            knowledge=self.cfg.attack.knowledge,
            class_names=tuple(d.class_names) if d.class_names else None,
            class_counts=tuple(int(c) for c in d.class_counts) if d.class_counts is not None else None,
        )

    @cached_property
    def attack(self) -> Attack | None:
        """The configured attack, or None for ``attack.name = "none"``."""
        if self.cfg.attack.name == "none":
            return None
        entry = ATTACKS.get(self.cfg.attack.name)
        try:
            return entry.obj(self.cfg.params("attack"), self.attack_context())
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def is_malicious(self, partition_id: int) -> bool:
        return partition_id in self.attackers and self.attack is not None

    def attack_active(self, partition_id: int, server_round: int, role: bool | None = None) -> bool:
        """Does this hospital attack in this round? ``role`` (a deployment node's
        ``role``) overrides the config's choice of attackers; the window and the schedule
        (``attacks.selection.is_active``) still apply."""
        malicious = self.is_malicious(partition_id) if role is None else (role and self.attack is not None)
        return malicious and self.attack_round(server_round)

    def evasion_round(self, server_round: int) -> bool:
        """Is the global model attacked at test time after this round (``[evasion]``)?"""
        ev, rounds = self.cfg.evasion, self.cfg.experiment.rounds
        return ev.enabled and (server_round == rounds or (ev.every > 0 and server_round % ev.every == 0))

    def attack_round(self, server_round: int) -> bool:
        """Is the attack scheduled in this round (for whoever is malicious)?"""
        a, e = self.cfg.attack, self.cfg.experiment
        return is_active(server_round, a.start_round, a.end_round or max(e.rounds, a.start_round), a.schedule, a.every,
                         a.at_round, a.round_fraction, e.seed)

    def training_hooks(self, server_round: int, partition_id: int):
        """Hooks every hospital's local training gets: PGD adversarial training when
        ``train.adversarial = "pgd"`` (Madry et al. 2018 inside each hospital, the federated
        setting of Zizzo et al. 2020), else None."""
        t = self.cfg.train
        if t.adversarial != "pgd":
            return None
        from .evasion.adversarial import adversarial_training_hooks

        return adversarial_training_hooks(
            eps=t.adversarial_eps, steps=t.adversarial_steps, fraction=t.adversarial_fraction,
            norm=t.adversarial_norm, domain=self.input_domain,
            generator=self.generator(Stream.ADVERSARIAL_TRAINING, server_round, partition_id))

    @cached_property
    def input_domain(self):
        """The valid inputs of the modality (``evasion.domain``): images in [0, 1], ECG in
        the signal's range, tabular features in their observed ranges with immutable
        columns (``evasion.immutable``) never perturbed."""
        from .evasion.domain import domain_for

        d = self.data
        try:
            return domain_for(d.modality, d.input_shape, d.feature_low, d.feature_high,
                              self.cfg.evasion.immutable or None, d.feature_names)
        except ValueError as e:
            raise ConfigError(str(e), key="evasion.immutable") from None

    def generator(self, stream: Stream, *key: int) -> torch.Generator:
        """The torch generator of ``stream`` keyed by ``key`` (e.g. round, partition id)."""
        return streams.generator(self.cfg.experiment.seed, stream, *key)

    def rng(self, stream: Stream, *key: int) -> np.random.Generator:
        """The numpy generator of ``stream`` keyed by ``key``."""
        return streams.rng(self.cfg.experiment.seed, stream, *key)


def build_setup(cfg: Config) -> Setup:
    """The data, model and attackers of ``cfg``, with every check that needs the data."""
    return setup_from_data(cfg, build_federated_data(cfg))


def setup_from_data(cfg: Config, data: FederatedData, collude_locally: bool = False) -> Setup:
    """The Setup of ``cfg`` over ``data`` (built here, or a deployment's hospital-local or
    data-free view of the federation, ``deployment.py``)."""
    n = len(data.hospitals)
    model_entry = MODELS.get(cfg.model.name)
    allowed = model_entry.meta.get("modalities")
    if allowed and data.modality not in allowed:
        raise ConfigError(
            f"model.name = {cfg.model.name!r}: made for {'/'.join(allowed)} data, but "
            f"data.name = {cfg.data.name!r} is {data.modality}", key="model.name"
        )
    _check_against_hospitals(cfg, n)
    from .aggregators import AGGREGATORS

    if AGGREGATORS.get(cfg.defense.name).meta.get("needs_reference") and data.root_x is None:
        raise ConfigError(f"defense.name = {cfg.defense.name!r} needs a clean root set at the server: give "
                          "data.server_test (the hospitals hold the training data)", key="defense.name")
    a = cfg.attack
    attackers: tuple[int, ...] = ()
    if a.name != "none":
        try:
            attackers = tuple(choose_attackers(n, a.fraction, a.hospitals, cfg.experiment.seed))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    setup = Setup(cfg=cfg, data=data, attackers=attackers, collude_locally=collude_locally)
    try:  # the model must fit the data's shape (e.g. a CNN's pooling blocks on tiny images)
        setup.new_model()
    except (ValueError, RuntimeError, MemoryError, OverflowError) as e:  # torch: negative or huge widths
        text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        msg = text if text.startswith("model.") else f"model.name = {cfg.model.name!r} cannot be built: {text}"
        raise ConfigError(msg, key="model.name") from None
    _ = setup.attack  # validate the attack against the data now
    _check_evasion(setup)
    if cfg.privacy.mode == "dp_sgd":
        _check_dp_compatible(setup)
    return setup


def _check_evasion(setup: Setup) -> None:
    ev, d = setup.cfg.evasion, setup.data
    if not ev.enabled and setup.cfg.train.adversarial == "none":
        return
    _ = setup.input_domain
    for key, label in (("evasion.target_label", ev.target_label), ("evasion.positive_label", ev.positive_label)):
        if label is not None and not 0 <= label < d.num_classes:
            raise ConfigError(f"{key} = {label}: the data has classes 0..{d.num_classes - 1}", key=key)
    if ev.enabled:
        from .evasion.attacks import check_attacks

        try:
            check_attacks(ev.attacks, num_classes=d.num_classes, domain=setup.input_domain, targeted=ev.targeted)
        except ValueError as e:
            raise ConfigError(str(e), key="evasion.attacks") from None


def _check_against_hospitals(cfg: Config, n: int) -> None:
    a = cfg.attack
    if a.hospitals is not None:
        bad = [h for h in a.hospitals if not 0 <= h < n]
        if bad:
            raise ConfigError(f"attack.hospitals = {a.hospitals}: ids must be in 0..{n - 1} ({n} hospitals)",
                              key="attack.hospitals")
    if "f" in cfg.defense.model_fields_set and cfg.defense.f >= n:
        raise ConfigError(f"defense.f = {cfg.defense.f}: must be smaller than the {n} hospitals",
                          key="defense.f")
    if cfg.experiment.min_hospitals > n:
        raise ConfigError(f"experiment.min_hospitals = {cfg.experiment.min_hospitals}: must be <= the "
                          f"{n} hospitals", key="experiment.min_hospitals")
    per_round = max(1, int(round(n * cfg.experiment.fraction_train)))
    if cfg.experiment.min_hospitals > per_round:
        raise ConfigError(
            f"experiment.min_hospitals = {cfg.experiment.min_hospitals}: a round samples only {per_round} "
            f"hospitals (experiment.fraction_train = {cfg.experiment.fraction_train} of {n}), so no round "
            "could ever aggregate", key="experiment.min_hospitals")


def _check_dp_compatible(setup: Setup) -> None:
    """DP-SGD needs per-example gradients: refuse a model Opacus cannot handle, and
    remember to apply ``ModuleValidator.fix`` (BatchNorm -> GroupNorm) when it can."""
    from opacus.validators import ModuleValidator

    from .privacy import make_private_compatible

    model = setup.new_model()
    model.train()
    if ModuleValidator.validate(model, strict=False):
        try:
            make_private_compatible(model)
        except ValueError as e:
            raise ConfigError(f"privacy.mode = 'dp_sgd': model.name = {setup.cfg.model.name!r}: {e}") from None
        setup.dp_fix = True


_SETUPS: dict[str, Setup] = {}


def setup_from_toml(text: str) -> Setup:
    """Client side: the Setup for a resolved config sent by the server (cached by hash)."""
    import tomllib

    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _SETUPS:
        if len(_SETUPS) >= 4:
            _SETUPS.pop(next(iter(_SETUPS)))
        _SETUPS[key] = build_setup(config_from_dict(tomllib.loads(text)))
    return _SETUPS[key]
