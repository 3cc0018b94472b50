import pytest

from sigerlm.model.config import PROFILES, ConfigError, SigerConfig


def test_profiles_build_and_tiny_is_small():
    for name in PROFILES:
        config = SigerConfig.from_profile(name)
        assert config.profile == name
    tiny = SigerConfig.from_profile("tiny")
    assert (tiny.d_model, tiny.n_layers) == (16, 2)
    small = SigerConfig.from_profile("small")
    assert (small.d_model, small.n_layers, small.max_seq_len) == (256, 8, 128)


def test_environment_picks_the_default_profile(monkeypatch):
    monkeypatch.setenv("SIGER_MODEL_PROFILE", "tiny")
    assert SigerConfig.from_profile().d_model == 16
    monkeypatch.delenv("SIGER_MODEL_PROFILE")
    assert SigerConfig.from_profile().profile == "small"


def test_identity_appends_the_alias():
    assert SigerConfig().identity == "SIGER"
    assert SigerConfig(model_alias="lampung").identity == "SIGER-LAMPUNG"


def test_derived_sizes():
    config = SigerConfig(d_model=100, expand=2)
    assert config.d_inner == 200 and config.dt_rank_value == 7
    assert SigerConfig(dt_rank=3).dt_rank_value == 3


@pytest.mark.parametrize(
    "values, message",
    [
        ({"d_model": 0}, "d_model must be a positive integer, got 0"),
        ({"norm_type": "batchnorm"}, "norm_type must be one of rmsnorm, layernorm"),
        ({"dt_min": 0.5, "dt_max": 0.1}, r"dt_min \(0.5\) must not exceed dt_max \(0.1\)"),
        ({"activation": "selu"}, "activation must be one of silu, gelu, relu, got 'selu' \\(did you mean 'silu'\\?\\)"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dt_rank": "big"}, "dt_rank must be 'auto' or a positive integer"),
    ],
)
def test_invalid_values_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        SigerConfig(**values)


def test_unknown_field_and_profile():
    with pytest.raises(ConfigError, match=r"unknown SigerConfig field\(s\): 'd_modle' \(did you mean 'd_model'\?\)"):
        SigerConfig.from_dict({"d_modle": 3})
    with pytest.raises(ConfigError, match="unknown model profile 'huge'"):
        SigerConfig.from_profile("huge")


def test_round_trip():
    config = SigerConfig.from_profile("tiny", model_alias="x")
    assert SigerConfig.from_dict(config.to_dict()) == config
