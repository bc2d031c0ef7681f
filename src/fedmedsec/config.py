"""Experiment configuration: TOML file + ``-s dotted.key=value`` overrides, validated.

Every section has defaults, so a config file lists only what it changes. Types are strict
(``rounds = true`` is not 1, ``mia = "yes"`` is not true) and numbers are finite unless a
key says otherwise. Sections whose ``name`` (or ``mode``) picks a component are
discriminated unions:

- ``privacy`` is one of three models by ``mode`` (``none``, ``dp_sgd``, ``central``), so
  ``privacy.clip_norm`` under ``dp_sgd`` is an unknown key, not silently ignored;
- ``data``, ``model``, ``attack`` and ``defense`` take the component's own keys, validated by
  the parameter model the component registered (``registry.Entry.params``), and the section's
  common keys only where the component declares it uses them (registry capabilities:
  ``data.alpha`` only for ``partition = "dirichlet"``, ``defense.root_size`` only for a rule
  that ``needs_reference``, ``attack.fraction`` not for ``attack.name = "none"``).

Every error is a ``ConfigError`` whose message is one line naming the key, the value and
what is allowed; ``ConfigError.key`` names the key and ``.inapplicable`` says the key is
valid elsewhere but does not apply to this point (sweeps drop such keys per point).
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .evasion.config import EvasionConfig
from .results.tracking import TrackingConfig

#: keys of the named sections that are not component parameters
COMMON_KEYS = {
    "data": {"name", "num_hospitals", "partition", "min_records", "test_fraction",
             "local_test_fraction", "positive_class", "preprocess", "server_test"},
    "model": {"name"},
    "attack": {"name", "fraction", "hospitals", "start_round", "end_round", "knowledge", "schedule",
               "every", "at_round", "round_fraction"},
    "defense": {"name", "f", "pre", "weighted", "root_size", "max_update_norm"},
    "detection": {"name"},
}
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A user mistake in the configuration; ``str(e)`` is the one line to print.

    key: the dotted key at fault, when there is one. inapplicable: the key exists but does
    not apply to the chosen component or mode."""

    def __init__(self, message: str, key: str | None = None, inapplicable: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.inapplicable = inapplicable


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                              allow_inf_nan=False)


class _Named(BaseModel):
    """A section whose ``name`` picks a registered component; other keys are its params."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, strict=True,
                              allow_inf_nan=False)

    def component_params(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


class ExperimentConfig(_Section):
    name: str = Field("experiment", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$",
                      description="run name; it becomes a directory name, so letters, digits, . _ -")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    rounds: int = Field(20, ge=1, le=100_000)
    mode: Literal["federated", "centralized"] = "federated"
    eval_every: int = Field(1, ge=1, le=100_000, description="per-hospital evaluation every k rounds")
    fraction_train: float = Field(1.0, gt=0.0, le=1.0, description="hospitals sampled per round")
    round_timeout: float = Field(600.0, gt=0, le=86_400, description="seconds to wait for replies")
    min_hospitals: int = Field(1, ge=1, le=100_000, description="replies a round needs to aggregate")
    mia: bool = Field(True, description="membership inference on the final model")
    mia_lira_shadows: int = Field(
        0, ge=0, le=256, description="also run offline LiRA with this many shadow models (0: off)")
    init_model: str | None = Field(
        None, min_length=1, max_length=4096,
        description="start from a saved global model (a run's final_model.pt), e.g. to attack after convergence")
    lifespan_threshold: float = Field(
        0.1, ge=0.0, le=1.0, description="a backdoor is gone once its success lift over the clean twin "
                                          "falls below this (backdoor_lifespan)")
    clean_twin: bool = Field(
        True, description="targeted attacks: also train the same config without the attack and "
                          "report the trigger's success on it (attack_success_rate_clean)")

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.mia_lira_shadows and not self.mia:
            raise ValueError("experiment.mia_lira_shadows needs experiment.mia = true")
        if self.mia_lira_shadows == 1:
            raise ValueError("experiment.mia_lira_shadows = 1: LiRA needs >= 2 shadow models (0 turns it off)")
        return self


class DataConfig(_Named):
    name: str = "wdbc"
    num_hospitals: int | None = Field(
        None, ge=1, le=100_000,
        description="hospitals (default 10; the natural split takes it from the data)")
    partition: Literal["iid", "dirichlet", "quantity", "pathological", "natural"] = "iid"
    min_records: int = Field(2, ge=1, le=1_000_000, description="fewest training records per hospital")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out at the server")
    local_test_fraction: float = Field(0.25, gt=0, lt=1, description="each hospital's test")
    preprocess: Literal["federated", "local"] = Field(
        "federated", description="tabular imputation/standardisation from all hospitals' statistics "
                                 "(sums, counts) or each hospital's own")
    server_test: str | None = Field(
        None, min_length=1, max_length=4096,
        description="one file per hospital: a test file the coordinator holds (public data)")
    positive_class: int | str | None = Field(
        None, description="class whose sensitivity is reported (name or index; default: the "
                          "dataset's, e.g. wdbc 'malignant')")


class ModelConfig(_Named):
    name: str = "mlp"


class TrainConfig(_Section):
    """Local training (``training.train_kwargs`` turns it into ``train_local``'s keywords;
    ``training.lr_at`` gives the learning rate of a round). DP-SGD uses only local_epochs,
    batch_size, the round's lr and momentum (plain SGD inside Opacus)."""

    local_epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=1_000_000)
    lr: float = Field(0.05, gt=0, le=100, description="peak learning rate (after warm-up)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0, le=100, description="L2 (sgd, adam) or decoupled (adamw)")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="fresh every round")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate over rounds (after warm-up)")
    warmup_rounds: int = Field(0, ge=0, le=100_000, description="linear warm-up over the first rounds")
    final_lr_fraction: float = Field(
        0.0, ge=0, le=1, description="cosine: decays towards final_lr_fraction * lr")
    augment: bool = Field(False, description="images: flips and shifts; ECG: time shifts")
    augment_flip: bool = Field(True, description="images: random horizontal flips")
    augment_shift: float = Field(
        0.1, ge=0, le=0.5, description="largest shift, fraction of the image side / record length")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: loss weights n / (k n_c) from the hospital's labels")
    # federated adversarial training (Madry et al. 2018 at each hospital; Zizzo et al. 2020)
    adversarial: Literal["none", "pgd"] = "none"
    adversarial_eps: float = Field(0.0, ge=0.0, le=1e3, description="budget in the modality's units")
    adversarial_steps: int = Field(5, ge=1, le=100)
    adversarial_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of each batch")
    adversarial_norm: Literal["linf", "l2"] = "linf"

    @model_validator(mode="after")
    def _adversarial(self) -> TrainConfig:
        if self.adversarial == "pgd" and not self.adversarial_eps > 0:
            raise ValueError("train.adversarial = 'pgd' needs train.adversarial_eps > 0")
        extra = {"adversarial_eps", "adversarial_steps", "adversarial_fraction", "adversarial_norm"}
        given = extra & self.model_fields_set
        if self.adversarial == "none" and given:
            raise ValueError(f"train.{sorted(given)[0]} does not apply to train.adversarial = 'none'")
        for key, needs in (("momentum", "sgd"),):
            if key in self.model_fields_set and self.optimizer != needs:
                raise ValueError(f"train.{key} does not apply to train.optimizer = {self.optimizer!r}")
        if "final_lr_fraction" in self.model_fields_set and self.schedule != "cosine":
            raise ValueError("train.final_lr_fraction does not apply to train.schedule = 'constant'")
        aug = {"augment_flip", "augment_shift"} & self.model_fields_set
        if aug and not self.augment:
            raise ValueError(f"train.{sorted(aug)[0]} does not apply to train.augment = false")
        return self


class AttackConfig(_Named):
    name: str = "none"
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    hospitals: list[int] | None = Field(None, max_length=100_000)
    start_round: int = Field(1, ge=1, le=100_000)
    end_round: int | None = Field(None, ge=1, le=100_000)
    knowledge: Literal["full", "partial"] = Field(
        "full", description="colluding attacks: the round's honest updates (full, simulation only) "
                            "or the attackers' own benign updates (partial)")
    schedule: Literal["every_round", "every_k", "single_shot", "random"] = "every_round"
    every: int = Field(1, ge=1, le=100_000, description="every_k: attack every k-th round of the window")
    at_round: int | None = Field(None, ge=1, le=100_000, description="single_shot: the round")
    round_fraction: float = Field(1.0, ge=0.0, le=1.0, description="random: share of the window's rounds")


class DefenseConfig(_Named):
    name: str = "fedavg"
    f: int = Field(0, ge=0, le=100_000, description="Byzantine clients the defender assumes")
    pre: list[str] = Field(default_factory=list, max_length=8)
    weighted: bool = Field(False, description="weight by reported num-examples")
    root_size: int = Field(20, ge=1, le=1_000_000, description="FLTrust: server's clean root set size")
    max_update_norm: float = Field(
        1e6, gt=0, description="replies above this norm are dropped (inf: no limit)",
        allow_inf_nan=True)

    @model_validator(mode="after")
    def _not_nan(self) -> DefenseConfig:
        if math.isnan(self.max_update_norm):
            raise ValueError("defense.max_update_norm must be a number > 0 (inf: no limit)")
        return self


class DetectionConfig(_Named):
    """Malicious-client detection apart from aggregation: flagged clients are excluded
    before the rule (``detectors/``)."""

    name: str = "none"


class _PrivacyBase(_Section):
    """Keys every privacy mode takes: what the server may see of the updates, and the
    clients' pruning (issue 16, "What a curious server can see"). Each mode narrows ``mode``
    to its own literal (the union's tag)."""

    mode: str
    secure_aggregation: bool = Field(
        False, description="the server sees only the sum of each round's updates (simulated in the "
                           "round loop; needs a sum_only rule, no detector, no defense.pre)")
    prune_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="each hospital zeroes this share of its update's "
                                         "smallest-magnitude entries before sending (Zhu et al. 2019)")


class PrivacyNone(_PrivacyBase):
    """No differential privacy."""

    mode: Literal["none"] = "none"


#: the smallest positive noise multiplier the RDP accountants evaluate without overflow
MIN_SIGMA = 1e-4


def _check_sigma(sigma: float | None) -> None:
    if sigma is not None and 0 < sigma < MIN_SIGMA:
        raise ValueError(f"privacy.noise_multiplier = {sigma!r}: use 0 (no noise, no guarantee) or at "
                         f"least {MIN_SIGMA} (smaller noise has no finite epsilon to report)")


class PrivacyDPSGD(_PrivacyBase):
    """Record-level DP-SGD in every hospital (Opacus). Give ``noise_multiplier`` or
    ``target_epsilon`` (sigma solved per hospital), not both; neither means sigma = 1."""

    mode: Literal["dp_sgd"]
    noise_multiplier: float | None = Field(None, ge=0, le=1000)
    target_epsilon: float | None = Field(None, ge=0.01, le=1000)
    target_delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="DP-SGD per-example clip")

    @model_validator(mode="after")
    def _one_noise(self) -> PrivacyDPSGD:
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError("give privacy.noise_multiplier or privacy.target_epsilon, not both")
        if self.noise_multiplier is None and self.target_epsilon is None:
            self.noise_multiplier = 1.0
        _check_sigma(self.noise_multiplier)
        return self


class PrivacyCentral(_PrivacyBase):
    """Client-level DP-FedAvg at the server: clip each update to ``clip_norm``, add noise."""

    mode: Literal["central"]
    noise_multiplier: float = Field(1.0, ge=0, le=1000)
    clip_norm: float = Field(1.0, gt=0, le=1e6, description="central DP: per-update clip S")
    target_delta: float = Field(1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _sigma(self) -> PrivacyCentral:
        _check_sigma(self.noise_multiplier)
        return self


PrivacyConfig = Annotated[PrivacyNone | PrivacyDPSGD | PrivacyCentral, Field(discriminator="mode")]
PRIVACY_MODELS = {"none": PrivacyNone, "dp_sgd": PrivacyDPSGD, "central": PrivacyCentral}


class ReconstructionConfig(_Section):
    """``[reconstruction]``: the honest-but-curious server inverts the target hospital's
    update of round ``round`` (or of the first later round it is sampled in) and scores what
    it recovers against a baseline guess (``privacy.reconstruction``; issue 16).

    batch_size: records behind the audited update (B; a tiny client, the worst case).
    setting: fedsgd (one step on the B records) or fedavg (train.local_epochs of SGD at
    train.batch_size). method: ig (Geiping et al. 2020), dlg (Zhu et al. 2019), idlg (Zhao
    et al. 2020). labels: recover (iDLG's sign rule / bias label counts) or known."""

    enabled: bool = False
    method: Literal["ig", "dlg", "idlg"] = "ig"
    setting: Literal["fedsgd", "fedavg"] = "fedsgd"
    batch_size: int = Field(1, ge=1, le=64, description="records behind the target's update (B)")
    target_hospital: int = Field(0, ge=0, le=100_000, description="partition id of the target")
    round: int = Field(1, ge=1, le=100_000, description="attack the update sent in this round (1 = initial model)")
    iterations: int = Field(300, ge=1, le=100_000, description="optimiser iterations per restart")
    restarts: int = Field(1, ge=1, le=100)
    tv_weight: float = Field(1e-2, ge=0.0, le=1e6, description="total-variation prior (images, ECG)")
    l2_weight: float = Field(0.0, ge=0.0, le=1e6, description="L2 prior on the records (tables)")
    lr: float = Field(0.1, gt=0.0, le=100.0, description="IG's Adam step size (DLG's L-BFGS uses 1)")
    labels: Literal["recover", "known"] = Field(
        "recover", description="recover: iDLG sign rule (B = 1) / bias label counts; known: given")


class SimulationConfig(_Section):
    num_cpus_per_client: float = Field(1.0, gt=0, le=1024)
    num_gpus_per_client: float = Field(0.0, ge=0, le=64)
    ray_address: str | None = Field(None, min_length=1, max_length=300)
    backend: Literal["ray", "inprocess"] = Field(
        "ray", description="ray: Flower simulation on Ray; inprocess: same logic, one process")


class Config(_Section):
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyNone)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    evasion: EvasionConfig = Field(default_factory=EvasionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    reconstruction: ReconstructionConfig = Field(default_factory=ReconstructionConfig)

    _params: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _dropped: list[str] = PrivateAttr(default_factory=list)

    @property
    def dropped(self) -> list[str]:
        """Keys of the config file an override made inapplicable (``load_config`` dropped them)."""
        return self._dropped

    @model_validator(mode="before")
    @classmethod
    def _privacy_mode_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("privacy"), dict) and "mode" not in data["privacy"]:
            data = {**data, "privacy": {"mode": "none", **data["privacy"]}}
        return data

    def params(self, section: str) -> BaseModel:
        """The validated parameter model of the component a named section picks
        (``"partition"``: the partitioner's own keys of the data section)."""
        if section not in self._params:
            self._params[section] = _validate_section(self, section)
        return self._params[section]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config: every key with its value, component keys included."""
        out = {}
        for name in type(self).model_fields:
            sec = getattr(self, name)
            if isinstance(sec, _Named):
                keep = applicable_common_keys(name, _registry(name).get(sec.name), self)
                d = {k: v for k, v in sec.model_dump(mode="json").items() if k in keep}
                d.update(self.params(name).model_dump(mode="json"))
                if name == "data":
                    d.update(self.params("partition").model_dump(mode="json"))
            else:
                d = sec.model_dump(mode="json")
                if name == "train":
                    skip = set()
                    if sec.adversarial == "none":
                        skip |= {k for k in d if k.startswith("adversarial_")}
                    if sec.optimizer != "sgd":
                        skip.add("momentum")
                    if sec.schedule != "cosine":
                        skip.add("final_lr_fraction")
                    if not sec.augment:
                        skip |= {"augment_flip", "augment_shift"}
                    d = {k: v for k, v in d.items() if k not in skip}
                if name == "simulation" and sec.backend == "inprocess":
                    d = {k: v for k, v in d.items() if k not in _RAY_ONLY}
            out[name] = d
        return _drop_none(out)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


#: simulation keys that only the Ray backend reads
_RAY_ONLY = ("ray_address", "num_cpus_per_client", "num_gpus_per_client")


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# --------------------------------------------------------------------------- loading

#: TOML nesting deeper than this is refused before parsing (no RecursionError)
MAX_DEPTH = 16


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML value; fall back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
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
            raise ConfigError(f"override {key!r}: {p} is a value, not a section", key=key)
        node = nxt
    node[parts[-1]] = value


def _nesting(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        if not p.is_file():
            raise ConfigError(f"config file {str(p)[:200]!r} does not exist")
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"config file {str(p)[:200]!r} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)[:200]!r} is not a UTF-8 text file") from None
    if _nesting(text) > MAX_DEPTH:
        raise ConfigError(f"config file {str(p)[:200]!r}: nested deeper than {MAX_DEPTH} levels")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(p)[:200]!r} is not valid TOML: {e}") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
) -> Config:
    """Load a config file (or a dict), apply overrides, validate everything.

    When an override switches a section's component or mode (e.g. ``-s data.partition=iid``
    on a file that sets ``data.alpha``), keys of the file that no longer apply are dropped
    and listed in ``cfg.dropped``; such a key given as an override is still an error."""
    data = copy.deepcopy(raw) if raw is not None else {}
    if path is not None:
        data = read_toml(path)
    given: set[str] = set()
    for o in overrides:
        apply_override(data, o)
        given.add(o.partition("=")[0].strip())
    sections = {k.split(".")[0] for k in given}
    dropped: list[str] = []
    while True:
        try:
            cfg = config_from_dict(data)
        except ConfigError as e:
            k = e.key
            if not (e.inapplicable and k and k not in given and k.split(".")[0] in sections):
                raise
            node = data
            parts = k.split(".")
            for part in parts[:-1]:
                node = node.get(part, {})
            if parts[-1] not in node:
                raise
            del node[parts[-1]]
            dropped.append(k)
            continue
        cfg._dropped = dropped
        return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table of sections")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise _config_error(e, data) from None
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _config_error(e: ValidationError, data: dict[str, Any], prefix: str = "") -> ConfigError:
    err = e.errors()[0]
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    if not prefix and len(loc) >= 2 and loc[0] == "privacy" and loc[1] in PRIVACY_MODELS:
        mode, loc = loc[1], ("privacy",) + loc[2:]  # the union's tag is not part of the key
        if err["type"] == "extra_forbidden":
            key = ".".join(str(x) for x in loc)
            allowed = ", ".join(PRIVACY_MODELS[mode].model_fields)
            return ConfigError(f"{key} does not apply to privacy.mode = {mode!r}; it takes {allowed}",
                               key=key, inapplicable=True)
    key = prefix + ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        return ConfigError(f"unknown key {key!r}" + _allowed_hint(prefix, loc), key=key)
    if err["type"] == "union_tag_invalid":
        return ConfigError(f"privacy.mode = {_short(_lookup(data, ('privacy', 'mode')))}: choose one of "
                           f"{', '.join(PRIVACY_MODELS)}", key="privacy.mode")
    value = _lookup(data, loc)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"].endswith("_type") or err["type"] in ("model_type", "dict_type"):
        msg = f"{msg} (got {type(value).__name__})"
    first = msg.split(" ", 1)[0]
    if "." in first and first.split(".", 1)[0] in Config.model_fields:
        # a section's own check that already names its key(s): print it as it is
        return ConfigError(msg, key=first.rstrip(":,"), inapplicable="does not apply" in msg)
    return ConfigError(f"{key} = {_short(value)}: {msg[0].lower() + msg[1:]}", key=key)


def _allowed_hint(prefix: str, loc: tuple) -> str:
    if not prefix and len(loc) == 1:
        return f"; sections are {', '.join(Config.model_fields)}"
    if not prefix and len(loc) == 2 and loc[0] in Config.model_fields and loc[0] != "privacy":
        fields = Config.model_fields[loc[0]].annotation.model_fields  # type: ignore[union-attr]
        return f"; {loc[0]} takes {', '.join(fields)}"
    return ""


# --------------------------------------------------------------------------- components

def _registry(section: str):
    from . import components

    return components.registry_for(section)


def _given(sec: BaseModel) -> set[str]:
    return set(sec.model_fields_set) - set(sec.__pydantic_extra__ or {})


def applicable_common_keys(section: str, entry, cfg: Config) -> set[str]:
    """The section's common keys that the chosen component uses (registry capabilities)."""
    keys = set(COMMON_KEYS[section])
    if section == "attack" and entry.meta.get("kind") == "none":
        keys = {"name"}
    if section == "attack":
        for k, schedule in (("every", "every_k"), ("at_round", "single_shot"), ("round_fraction", "random")):
            if cfg.attack.schedule != schedule:
                keys.discard(k)
    if section == "defense":
        if not entry.meta.get("needs_reference"):
            keys.discard("root_size")
        if not uses_f(entry):
            keys.discard("f")
    return keys


def uses_f(entry) -> bool:
    """Does a defense use ``defense.f``? Its registry entry says so (``uses_f``), or it has
    a precondition in terms of f (``requirement``)."""
    return bool(entry.meta.get("uses_f", "requirement" in entry.meta))


def _validate_section(cfg: Config, section: str) -> BaseModel:
    if section == "partition":
        entry = _registry("data.partition").get(cfg.data.partition)
        extra = {k: v for k, v in cfg.data.component_params().items() if k in entry.params.model_fields}
        return _validate_params(entry, extra, "data", f"data.partition = {cfg.data.partition!r}")
    sec: _Named = getattr(cfg, section)
    reg = _registry(section)
    if sec.name not in reg:
        raise ConfigError(
            f"{section}.name = {_short(sec.name)}: unknown {section}; choose one of {', '.join(reg.names())}",
            key=f"{section}.name")
    entry = reg.get(sec.name)
    for k in sorted(_given(sec) - applicable_common_keys(section, entry, cfg)):
        raise ConfigError(f"{section}.{k} does not apply to {section}.name = {sec.name!r}",
                          key=f"{section}.{k}", inapplicable=True)
    extra = sec.component_params()
    if section == "data":  # the partitioner's own keys are validated by it
        part = _registry("data.partition")
        part_keys = {k for e in part for k in e.params.model_fields}
        own = set(part.get(cfg.data.partition).params.model_fields)
        for k in sorted(set(extra) & part_keys - own):
            raise ConfigError(f"data.{k} does not apply to data.partition = {cfg.data.partition!r}",
                              key=f"data.{k}", inapplicable=True)
        extra = {k: v for k, v in extra.items() if k not in part_keys}
    return _validate_params(entry, extra, section, f"{section}.name = {sec.name!r}",
                            allowed_extra=applicable_common_keys(section, entry, cfg))


def _validate_params(entry, extra: dict, section: str, what: str,
                     allowed_extra: set[str] = frozenset()) -> BaseModel:
    try:
        return entry.params.model_validate(extra, strict=True)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "extra_forbidden":
            k = ".".join(str(x) for x in err["loc"])
            allowed = sorted(set(entry.params.model_fields) | set(allowed_extra))
            raise ConfigError(
                f"unknown key '{section}.{k}' for {what}; allowed: {', '.join(allowed)}",
                key=f"{section}.{k}") from None
        raise _config_error(e, extra, prefix=f"{section}.") from None


def validate_components(cfg: Config) -> None:
    """Validate each named section's own keys and the constraints between sections that
    do not need the data (those that do, e.g. attack.hospitals against the number of
    hospitals, are checked by ``experiment.build_setup``)."""
    for section in ("data", "model", "attack", "defense", "detection", "partition"):
        cfg.params(section)
    from . import components

    for name in cfg.defense.pre:
        if name not in components.registry_for("defense.pre"):
            raise ConfigError(
                f"defense.pre = {cfg.defense.pre}: unknown step {name!r}; choose from "
                f"{', '.join(components.registry_for('defense.pre').names())}", key="defense.pre")
    a, e = cfg.attack, cfg.experiment
    if a.end_round is not None and a.end_round < a.start_round:
        raise ConfigError(
            f"attack.end_round = {a.end_round}: must be >= attack.start_round ({a.start_round})",
            key="attack.end_round")
    if a.name != "none":
        from .attacks.selection import check_schedule

        try:
            check_schedule(a.schedule, a.start_round, a.end_round or max(e.rounds, a.start_round), a.every, a.at_round,
                           a.round_fraction)
        except ValueError as exc:
            raise ConfigError(str(exc), key="attack.schedule") from None
    if e.eval_every > e.rounds:
        raise ConfigError(f"experiment.eval_every = {e.eval_every}: must be <= experiment.rounds ({e.rounds})",
                          key="experiment.eval_every")
    if e.mode == "centralized":
        for key, off in (("attack.name", "none"), ("defense.name", "fedavg"), ("detection.name", "none"),
                         ("privacy.mode", "none"), ("privacy.secure_aggregation", False),
                         ("privacy.prune_ratio", 0.0), ("reconstruction.enabled", False)):
            sec, _, field = key.partition(".")
            value = getattr(getattr(cfg, sec), field)
            if value != off:
                raise ConfigError(
                    f"{key} = {value!r} does not apply to experiment.mode = 'centralized' (one model "
                    "trained on the pooled data, no federation)", key=key, inapplicable=True)
    t = cfg.train
    if cfg.privacy.mode == "dp_sgd":
        for key, value, plain in (("optimizer", t.optimizer, "sgd"), ("class_weights", t.class_weights, "none"),
                                  ("augment", t.augment, False)):
            if value != plain:
                raise ConfigError(f"train.{key} = {value!r} does not apply to privacy.mode = 'dp_sgd' (Opacus "
                                  "DP-SGD here is SGD with momentum on the plain loss)", key=f"train.{key}",
                                  inapplicable=True)
    _check_curious_server(cfg)
    sim = cfg.simulation
    if sim.backend == "inprocess":
        for k in _RAY_ONLY:
            if k in sim.model_fields_set:
                raise ConfigError(f"simulation.{k} does not apply to simulation.backend = 'inprocess'",
                                  key=f"simulation.{k}", inapplicable=True)


def _check_curious_server(cfg: Config) -> None:
    """Secure aggregation leaves the server only each round's sum: refuse every component
    that needs the individual updates (a rule without the ``sum_only`` capability, a
    detector, ``defense.pre``). DP-FedAvg (``privacy.mode = "central"``) is allowed: each
    hospital clips its own update to ``privacy.clip_norm`` before masking and the server adds
    the noise to the sum, so its accounting holds for every hospital that clips. A colluding
    attack with full knowledge is refused where the attack is built (``server.Coordinator``)."""
    p, r = cfg.privacy, cfg.reconstruction
    if p.secure_aggregation:
        rules = _registry("defense")
        if not rules.get(cfg.defense.name).meta.get("sum_only"):
            ok = ", ".join(e.name for e in rules if e.meta.get("sum_only"))
            raise ConfigError(
                f"privacy.secure_aggregation = true: defense.name = {cfg.defense.name!r} needs the individual "
                f"updates, which secure aggregation hides (the server sees only their sum); use a sum_only "
                f"rule ({ok})", key="defense.name")
        if cfg.detection.name != "none":
            raise ConfigError(
                f"privacy.secure_aggregation = true: detection.name = {cfg.detection.name!r} scores each "
                "hospital's update, which secure aggregation hides (the server sees only their sum)",
                key="detection.name")
        if cfg.defense.pre:
            raise ConfigError(
                f"privacy.secure_aggregation = true: defense.pre = {cfg.defense.pre} transforms the individual "
                "updates, which secure aggregation hides (the server sees only their sum)", key="defense.pre")
    if r.enabled and r.round > cfg.experiment.rounds:
        raise ConfigError(f"reconstruction.round = {r.round}: must be <= experiment.rounds "
                          f"({cfg.experiment.rounds})", key="reconstruction.round")
