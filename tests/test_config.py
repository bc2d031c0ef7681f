"""Config loading: defaults, overrides, and one-line errors naming key, value and rule."""

from __future__ import annotations

import pytest

from fedmedsec.config import Config, ConfigError, load_config, parse_value


def test_defaults_fill_every_section(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[experiment]\nrounds = 3\n")
    cfg = load_config(p)
    assert cfg.experiment.rounds == 3
    assert cfg.data.name == "wdbc" and cfg.defense.name == "fedavg" and cfg.attack.name == "none"
    assert cfg.privacy.mode == "none" and cfg.simulation.num_cpus_per_client == 1


def test_overrides_parse_toml_values():
    cfg = load_config(raw={}, overrides=["experiment.rounds=7", "data.alpha=0.1",
                                         "attack.hospitals=[1, 2]", "experiment.name=my run",
                                         "attack.name=sign_flip", "attack.scale=4"])
    assert cfg.experiment.rounds == 7 and cfg.data.alpha == 0.1
    assert cfg.attack.hospitals == [1, 2] and cfg.experiment.name == "my run"
    assert cfg.params("attack").scale == 4
    assert parse_value("true") is True and parse_value("abc") == "abc"


def test_resolved_config_round_trips():
    cfg = load_config(raw={}, overrides=["attack.name=sign_flip", "attack.scale=3", "attack.fraction=0.2"])
    again = load_config(raw=__import__("tomllib").loads(cfg.to_toml()))
    assert again.to_dict() == cfg.to_dict()
    assert again.params("attack") == cfg.params("attack")


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["experiment.rounds=0"], ["experiment.rounds", "0", "greater than or equal to 1"]),
        (["experiment.roundz=3"], ["unknown key", "experiment.roundz", "rounds"]),
        (["expriment.rounds=3"], ["unknown key", "expriment", "sections are"]),
        (["data.partition=skewed"], ["data.partition", "skewed", "dirichlet"]),
        (["data.name=imagenet"], ["data.name", "imagenet", "wdbc"]),
        (["attack.name=sign_flip", "attack.boost=3"], ["attack.boost", "sign_flip", "scale"]),
        (["attack.fraction=1.5"], ["attack.fraction", "1.5", "less than or equal to 1"]),
        (["defense.name=nope"], ["defense.name", "nope", "fedavg"]),
        (["data.alpha=-1"], ["data.alpha", "-1", "greater than 0"]),
        (["attack.hospitals=[12]", "attack.name=sign_flip"], ["attack.hospitals", "0..9"]),
        (["attack.start_round=5", "attack.end_round=2"], ["attack.end_round", "start_round"]),
        (["privacy.mode=dp"], ["privacy.mode", "dp_sgd"]),
        (["experiment.rounds"], ["experiment.rounds", "key=value"]),
    ],
)
def test_bad_values_give_one_line_naming_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as e:
        load_config(raw={}, overrides=overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nrounds = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_model_refuses_unknown_sections():
    with pytest.raises(ConfigError, match="unknown key 'foo'"):
        load_config(raw={"foo": {"a": 1}})
    assert set(Config.model_fields) >= {"experiment", "data", "model", "train", "attack",
                                        "defense", "privacy", "simulation"}
