"""Experiment configuration: TOML file + ``-s dotted.key=value`` overrides, validated.

Every section has defaults, so a config file lists only what it changes. Sections with a
``name`` (data, model, attack, defense) take the component's own keys, validated by the
parameter model the component registered (``registry.Entry.params``): unknown keys are
errors everywhere. Every error is a ``ConfigError`` whose message is one line naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

COMMON_KEYS = {
    "data": {"name", "num_hospitals", "partition", "alpha", "classes_per_hospital",
             "min_records", "test_fraction", "local_test_fraction", "quantity_sigma"},
    "model": {"name"},
    "attack": {"name", "fraction", "hospitals", "start_round", "end_round"},
    "defense": {"name", "f", "pre", "weighted", "root_size", "max_update_norm"},
}


class ConfigError(ValueError):
    """A user mistake in the configuration; ``str(e)`` is the one line to print."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Named(BaseModel):
    """A section whose ``name`` picks a registered component; other keys are its params."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def component_params(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class ExperimentConfig(_Section):
    name: str = "experiment"
    seed: int = Field(0, ge=0)
    rounds: int = Field(20, ge=1, le=100_000)
    mode: Literal["federated", "centralized"] = "federated"
    eval_every: int = Field(1, ge=1, description="per-hospital evaluation every k rounds")
    fraction_train: float = Field(1.0, gt=0.0, le=1.0, description="hospitals sampled per round")
    round_timeout: float = Field(600.0, gt=0, description="seconds to wait for replies")
    min_hospitals: int = Field(1, ge=1, description="replies a round needs to aggregate")
    mia: bool = Field(True, description="membership inference on the final model")
    mia_lira_shadows: int = Field(
        0, ge=0, le=256, description="also run offline LiRA with this many shadow models (0: off)")


class DataConfig(_Named):
    name: str = "wdbc"
    num_hospitals: int = Field(10, ge=1, le=10_000)
    partition: Literal["iid", "dirichlet", "quantity", "pathological", "natural"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (label skew)")
    quantity_sigma: float = Field(1.0, gt=0, description="log-normal sigma of sizes")
    classes_per_hospital: int = Field(1, ge=1, description="pathological: classes each")
    min_records: int = Field(2, ge=1, description="fewest training records per hospital")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out at the server")
    local_test_fraction: float = Field(0.25, gt=0, lt=1, description="each hospital's test")


class ModelConfig(_Named):
    name: str = "mlp"


class TrainConfig(_Section):
    """Local training (``training.train_kwargs`` turns it into ``train_local``'s keywords;
    ``training.lr_at`` gives the learning rate of a round). DP-SGD uses only local_epochs,
    batch_size, the round's lr and momentum (plain SGD inside Opacus)."""

    local_epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.05, gt=0, description="peak learning rate (after warm-up)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0, description="L2 (sgd, adam) or decoupled (adamw)")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="fresh every round")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate over rounds (after warm-up)")
    warmup_rounds: int = Field(0, ge=0, description="linear warm-up over the first rounds")
    final_lr_fraction: float = Field(
        0.0, ge=0, le=1, description="cosine: decays towards final_lr_fraction * lr")
    augment: bool = Field(False, description="images: flips and shifts; ECG: time shifts")
    augment_flip: bool = Field(True, description="images: random horizontal flips")
    augment_shift: float = Field(
        0.1, ge=0, le=0.5, description="largest shift, fraction of the image side / record length")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: loss weights n / (k n_c) from the hospital's labels")


class AttackConfig(_Named):
    name: str = "none"
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    hospitals: list[int] | None = None
    start_round: int = Field(1, ge=1)
    end_round: int | None = Field(None, ge=1)


class DefenseConfig(_Named):
    name: str = "fedavg"
    f: int = Field(0, ge=0, description="Byzantine clients the defender assumes")
    pre: list[str] = Field(default_factory=list)
    weighted: bool = Field(False, description="weight by reported num-examples")
    root_size: int = Field(20, ge=1, description="FLTrust: server's clean root set size")
    max_update_norm: float = Field(1e6, gt=0, description="replies above this norm are dropped")


class PrivacyConfig(_Section):
    mode: Literal["none", "dp_sgd", "central"] = "none"
    noise_multiplier: float | None = Field(None, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="DP-SGD per-example clip")
    target_epsilon: float | None = Field(None, gt=0)
    target_delta: float = Field(1e-5, gt=0, lt=1)
    clip_norm: float = Field(1.0, gt=0, description="central DP: per-update clip S")

    @model_validator(mode="after")
    def _noise_given(self) -> "PrivacyConfig":
        if self.mode == "dp_sgd" and self.noise_multiplier is None and self.target_epsilon is None:
            self.noise_multiplier = 1.0
        if self.mode == "central" and self.noise_multiplier is None:
            self.noise_multiplier = 1.0
        return self


class SimulationConfig(_Section):
    num_cpus_per_client: float = Field(1.0, gt=0)
    num_gpus_per_client: float = Field(0.0, ge=0)
    ray_address: str | None = None
    backend: Literal["ray", "inprocess"] = Field(
        "ray", description="ray: Flower simulation on Ray; inprocess: same logic, one process")


class Config(_Section):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    _params: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def params(self, section: str) -> BaseModel:
        """The validated parameter model of the component a named section picks."""
        if section not in self._params:
            self._params[section] = _validate_section(self, section)
        return self._params[section]

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# --------------------------------------------------------------------------- loading


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value; fall back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to the nested dict ``raw`` in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected dotted.key=value")
    key, _, text = assignment.partition("=")
    key = key.strip()
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {assignment!r}: key must be section.key, e.g. attack.name")
    set_dotted(raw, key, parse_value(text.strip()))


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw["a"]["b"]["c"] = value`` for ``key = "a.b.c"``, creating sections."""
    parts = key.split(".")
    node = raw
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key!r}: {p} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not a UTF-8 text file") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
) -> Config:
    """Load a config file (or a dict), apply overrides, validate everything."""
    data = copy.deepcopy(raw) if raw is not None else {}
    if path is not None:
        data = read_toml(path)
    for o in overrides:
        apply_override(data, o)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, data)) from None
    validate_components(cfg)
    return cfg


def _lookup(data: Any, loc: tuple) -> Any:
    for k in loc:
        if isinstance(data, dict) and k in data:
            data = data[k]
        elif isinstance(data, list) and isinstance(k, int) and k < len(data):
            data = data[k]
        else:
            return None
    return data


def _format_validation_error(e: ValidationError, data: dict[str, Any], prefix: str = "") -> str:
    err = e.errors()[0]
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    key = prefix + ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r}" + _allowed_hint(prefix, loc)
    value = _lookup(data, loc)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{key} = {value!r}: {msg[0].lower() + msg[1:]}"


def _allowed_hint(prefix: str, loc: tuple) -> str:
    if not prefix and len(loc) == 1:
        return f"; sections are {', '.join(Config.model_fields)}"
    if not prefix and len(loc) == 2 and loc[0] in Config.model_fields:
        fields = Config.model_fields[loc[0]].annotation.model_fields  # type: ignore[union-attr]
        return f"; {loc[0]} takes {', '.join(fields)}"
    return ""


# --------------------------------------------------------------------------- components

def _registry(section: str):
    from . import components

    return components.registry_for(section)


def _validate_section(cfg: Config, section: str) -> BaseModel:
    sec: _Named = getattr(cfg, section)
    reg = _registry(section)
    if sec.name not in reg:
        raise ConfigError(
            f"{section}.name = {sec.name!r}: unknown {section}; choose one of {', '.join(reg.names())}"
        )
    entry = reg.get(sec.name)
    extra = sec.component_params()
    try:
        return entry.params.model_validate(extra)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "extra_forbidden":
            k = ".".join(str(x) for x in err["loc"])
            allowed = sorted(set(entry.params.model_fields) | COMMON_KEYS.get(section, set()))
            raise ConfigError(
                f"unknown key '{section}.{k}' for {section}.name = {sec.name!r}; "
                f"allowed: {', '.join(allowed)}"
            ) from None
        raise ConfigError(_format_validation_error(e, extra, prefix=f"{section}.")) from None


def validate_components(cfg: Config) -> None:
    """Validate each named section's own keys and cross-section constraints."""
    for section in ("data", "model", "attack", "defense"):
        cfg.params(section)
    from . import components

    for name in cfg.defense.pre:
        if name not in components.registry_for("defense.pre"):
            raise ConfigError(
                f"defense.pre = {cfg.defense.pre}: unknown step {name!r}; choose from "
                f"{', '.join(components.registry_for('defense.pre').names())}"
            )
    a = cfg.attack
    if a.end_round is not None and a.end_round < a.start_round:
        raise ConfigError(
            f"attack.end_round = {a.end_round}: must be >= attack.start_round ({a.start_round})"
        )
    n = cfg.data.num_hospitals
    if a.hospitals is not None:
        bad = [h for h in a.hospitals if not 0 <= h < n]
        if bad:
            raise ConfigError(
                f"attack.hospitals = {a.hospitals}: ids must be in 0..{n - 1} "
                f"(data.num_hospitals = {n})"
            )
    if cfg.defense.f >= n and cfg.defense.name != "fedavg":
        raise ConfigError(
            f"defense.f = {cfg.defense.f}: must be smaller than data.num_hospitals ({n})"
        )
    if cfg.experiment.min_hospitals > n:
        raise ConfigError(
            f"experiment.min_hospitals = {cfg.experiment.min_hospitals}: "
            f"must be <= data.num_hospitals ({n})"
        )
