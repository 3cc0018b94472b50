"""Manifest validation: every problem is named with file, line, path and fix before any work."""

import json
import textwrap

import pytest
import yaml

from sigerlm.errors import ManifestError, SigerError
from sigerlm.manifest import load_manifest, manifest_json_schema, parse_path

GOOD = textwrap.dedent(
    """\
    siger: 1
    name: demo
    model:
      profile: tiny
      block: {use: identity}
      adapter: {use: random-embedding, vocab_size: 32}
    data:
      train: {use: random-tokens, vocab_size: 32, num_batches: 2}
    steps:
      - {use: record-calls, split: train, batches: 2}
      - record-calls
    """
)


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path, text, plugin_manager, overrides=()):
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, overrides, pm=plugin_manager)
    return info.value, str(path)


def test_valid_manifest_resolves_components_and_fills_defaults(tmp_path, plugin_manager):
    resolved, _ = load_manifest(write(tmp_path, GOOD), pm=plugin_manager)
    data = resolved.to_dict()
    assert data["steps"][1] == {"use": "testkit:record-calls", "split": None, "batches": 1, "note": ""}
    assert data["model"]["adapter"] == {"use": "testkit:random-embedding", "vocab_size": 32}
    assert data["model"]["config"]["d_model"] == 16 and data["model"]["profile"] == "tiny"
    assert resolved.config.block == "testkit:identity"
    assert resolved.component("data", "train").options.num_batches == 2


def test_misspelled_top_level_key_names_file_line_and_fix(tmp_path, plugin_manager):
    error, path = problems(tmp_path, GOOD.replace("steps:", "stpes:"), plugin_manager)
    text = str(error)
    assert f"{path}:9: stpes: unknown key 'stpes' (did you mean 'steps'?)" in text
    assert f"{path}: steps: required key is missing" in text  # no line: it is absent


def test_wrong_type_names_path_and_value(tmp_path, plugin_manager):
    error, path = problems(tmp_path, GOOD.replace("name: demo", "name: demo\nseed: many"), plugin_manager)
    assert f"{path}:3: seed: Input should be a valid integer, unable to parse string as an integer, got 'many'" in str(
        error
    )


def test_unknown_component_suggests_closest_name(tmp_path, plugin_manager):
    error, path = problems(tmp_path, GOOD.replace("- record-calls", "- record-cals"), plugin_manager)
    assert f"{path}:11: steps[1].use: unknown step 'record-cals'; did you mean 'record-calls'?" in str(error)


def test_component_option_typo_and_type_are_checked_against_its_options_model(tmp_path, plugin_manager):
    text = GOOD.replace("split: train, batches: 2}", "split: train, batchs: 2}").replace(
        "num_batches: 2", "num_batches: lots"
    )
    error, path = problems(tmp_path, text, plugin_manager)
    rendered = str(error)
    assert f"{path}:10: steps[0].batchs: unknown key 'batchs' (did you mean 'batches'?)" in rendered
    assert f"{path}:8: data.train.num_batches: Input should be a valid integer" in rendered
    assert len(error.problems) == 2  # every problem at once


def test_option_bounds_come_from_the_component(tmp_path, plugin_manager):
    error, _ = problems(tmp_path, GOOD.replace("vocab_size: 32}", "vocab_size: 1}"), plugin_manager)
    assert "model.adapter.vocab_size: Input should be greater than or equal to 2, got 1" in str(error)


def test_component_without_options_says_so(tmp_path, plugin_manager):
    error, _ = problems(tmp_path, GOOD.replace("{use: identity}", "{use: identity, width: 3}"), plugin_manager)
    assert "model.block.width: unknown key 'width' (this component takes no options)" in str(error)


def test_plugin_that_is_not_installed_names_the_fix(tmp_path):
    error, path = problems(tmp_path, GOOD.replace("name: demo", "name: demo\nplugins: [nonexistent]"), None)
    assert (
        f"{path}:3: plugins[0]: plugin 'nonexistent' is not installed; install it with `pip install sigerlm-nonexistent`"  # noqa: E501
        in str(error)
    )


def test_invalid_model_config_and_profile(tmp_path, plugin_manager):
    error, _ = problems(
        tmp_path,
        GOOD.replace("profile: tiny", "profile: tiny\n  config: {d_model: 0, norm_type: rmsnrom}"),
        plugin_manager,
    )
    text = str(error)
    assert "model.config: invalid SigerConfig: d_model must be a positive integer, got 0" in text
    assert "norm_type must be one of rmsnorm, layernorm, got 'rmsnrom' (did you mean 'rmsnorm'?)" in text
    error, _ = problems(tmp_path, GOOD.replace("profile: tiny", "profile: tyni"), plugin_manager)
    assert "model.profile: unknown model profile 'tyni'" in str(error) and "did you mean 'tiny'" in str(error)


def test_profile_needing_a_block_no_plugin_provides(tmp_path, plugin_manager):
    text = GOOD.replace("profile: tiny", "profile: small_moe").replace("  block: {use: identity}\n", "")
    error, _ = problems(tmp_path, text, plugin_manager)
    assert (
        "model.profile: profile 'small_moe' needs block 'moe', which no loaded plugin provides "
        "(install the plugin that provides it (pip install sigerlm-moe) or choose another profile)"
    ) in str(error)
    # an explicit block that does not exist is reported where it is written
    error, _ = problems(tmp_path, GOOD.replace("{use: identity}", "{use: mamba2}"), plugin_manager)
    assert "model.block.use: unknown block 'mamba2'" in str(error)


def test_unsupported_format_and_non_mapping(tmp_path, plugin_manager):
    error, _ = problems(tmp_path, GOOD.replace("siger: 1", "siger: 2"), plugin_manager)
    assert "siger: unsupported manifest format 2 (this SigerLM reads format siger: 1)" in str(error)
    error, _ = problems(tmp_path, "- just\n- a list\n", plugin_manager)
    assert "expected a mapping" in str(error)
    error, _ = problems(tmp_path, "siger: 1\nname: [unclosed\n", plugin_manager)
    assert "cannot parse" in str(error) and ":3:" in str(error)


def test_missing_file(tmp_path, plugin_manager):
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "nope.yaml", pm=plugin_manager)


def test_json_manifest_and_dict_manifest(tmp_path, plugin_manager):
    data = yaml.safe_load(GOOD)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    from_json, _ = load_manifest(path, pm=plugin_manager)
    from_dict, _ = load_manifest(data, pm=plugin_manager)
    assert from_json.to_dict() == from_dict.to_dict()
    assert from_json.digest() == from_dict.digest()


def test_overrides_set_values_with_yaml_types(tmp_path, plugin_manager):
    resolved, _ = load_manifest(
        write(tmp_path, GOOD),
        ["steps[0].batches=1", "model.config.d_model=24", "steps.1.note=hello world", "seed=7"],
        pm=plugin_manager,
    )
    assert resolved.component("steps", 0).options.batches == 1
    assert resolved.component("steps", 1).options.note == "hello world"
    assert resolved.config.d_model == 24 and resolved.manifest.seed == 7
    assert resolved.source.overrides[0] == "steps[0].batches=1"


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps[5].batches=1", "steps has 2 items"),
        ("nokey", "expected key.path=value"),
        ("steps..x=1", "not a key path"),
        ("name.inner=1", "name is not a mapping"),
    ],
)
def test_bad_overrides_are_clear(tmp_path, plugin_manager, override, message):
    with pytest.raises(SigerError, match=message):
        load_manifest(write(tmp_path, GOOD), [override], pm=plugin_manager)


def test_override_errors_are_validated_like_the_file(tmp_path, plugin_manager):
    error, _ = problems(tmp_path, GOOD, plugin_manager, overrides=["steps[0].batches=-1"])
    assert "steps[0].batches: Input should be greater than or equal to 0, got -1" in str(error)


def test_parse_path():
    assert parse_path("steps[1].lr") == ["steps", 1, "lr"]
    assert parse_path("steps.1.lr") == ["steps", 1, "lr"]
    assert parse_path("model.config.d_model") == ["model", "config", "d_model"]


def test_schema_describes_the_format():
    schema = manifest_json_schema()
    assert schema["required"] == ["siger", "name", "steps"]
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["ComponentOptions"]["additionalProperties"] is True
    assert schema["$defs"]["ComponentSpec"]["anyOf"][0]["type"] == "string"


def test_variables_expand_to_the_data_folder_the_run_folder_and_the_environment(tmp_path, plugin_manager, monkeypatch):
    monkeypatch.setenv("SIGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NOTE", "from-env")
    text = GOOD.replace("- record-calls", "- {use: record-calls, note: '${data}/x ${out}/y ${env:NOTE}'}")
    resolved, _ = load_manifest(write(tmp_path, text), ["out_dir=runs/here"], pm=plugin_manager)
    assert resolved.component("steps", 1).options.note == f"{tmp_path}/x runs/here/y from-env"
    error, _ = problems(
        tmp_path, GOOD.replace("- record-calls", "- {use: record-calls, note: '${env:NOPE_NOT_SET}'}"), plugin_manager
    )
    assert "steps[1].note: cannot expand '${env:NOPE_NOT_SET}': environment variable NOPE_NOT_SET is not set" in str(
        error
    )
