"""Model folders: bit-exact round trip, named errors, LayerNorm-era checkpoints, atomic writes."""

import json

import pytest
import torch

from sigerlm.assemble import build_model, load_model
from sigerlm.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_state,
    read_config,
    save_model_folder,
)
from sigerlm.model.config import SigerConfig
from sigerlm_testkit import kit_plugin_manager

ADAPTER = {"use": "random-embedding", "vocab_size": 32}


def model(**overrides):
    torch.manual_seed(0)
    config = SigerConfig.from_profile("tiny", model_alias="test", **overrides)
    return build_model(kit_plugin_manager(), config, ADAPTER).eval()


def load(folder):
    return load_model(folder, kit_plugin_manager())


def test_round_trip_is_bit_exact(tmp_path):
    original = model()
    original.save(tmp_path / "m", plugins={"core": "0.1.0"})
    loaded = load(tmp_path / "m")
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        assert torch.equal(original.forward_hidden(x), loaded.forward_hidden(x))
    config, meta = read_config(tmp_path / "m")
    assert config == original.config
    assert meta["identity"] == "SIGER-TEST" and meta["adapter"] == {"use": "testkit:random-embedding", "vocab_size": 32}
    assert meta["plugins"] == {"core": "0.1.0"} and meta["format_version"] == 1
    assert "blocks" not in meta  # every layer is the default block


def test_weights_that_are_not_finite_are_never_saved(tmp_path):
    broken = model()
    with torch.no_grad():
        broken.backbone.layers[0].mixer.D[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values: backbone.layers.0.mixer.D"):
        broken.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_truncated_weights_name_the_tensor(tmp_path):
    model().save(tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"truncated: tensor 'backbone\..+' needs bytes"):
        load(tmp_path / "m")
    weights.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load(tmp_path / "m")


def test_shape_mismatch_and_missing_tensors_are_named(tmp_path):
    model().save(tmp_path / "m")
    config_path = tmp_path / "m" / CONFIG_FILE
    meta = json.loads(config_path.read_text())
    meta["backbone"]["d_state"] = 8
    config_path.write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError,
        match=r"'backbone.layers.0.mixer.A_log' is \(32, 4\) in the .* but \(32, 8\) in the model",
    ):
        load(tmp_path / "m")
    target = model()
    tensors = dict(target.state_dict())
    tensors.pop("backbone.norm_f.weight")
    tensors["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing tensors: 'backbone.norm_f.weight'; unexpected tensors: 'extra.weight'"
    ):
        load_state(target, tensors)


def test_layernorm_era_checkpoint_loads_as_layernorm(tmp_path):
    old = model(norm_type="layernorm")
    old.save(tmp_path / "m")
    config_path = tmp_path / "m" / CONFIG_FILE
    meta = json.loads(config_path.read_text())
    del meta["backbone"]["norm_type"]  # written before the field existed
    config_path.write_text(json.dumps(meta))
    loaded = load(tmp_path / "m")
    assert loaded.config.norm_type == "layernorm"
    assert torch.equal(loaded.backbone.norm_f.bias, old.backbone.norm_f.bias)


def test_failed_save_keeps_the_previous_folder(tmp_path, monkeypatch):
    model().save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        model(d_model=32).save(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left


def test_not_a_model_folder_and_wrong_format(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        read_config(tmp_path)
    save_model_folder(tmp_path / "m", model().state_dict(), model().config)
    path = tmp_path / "m" / CONFIG_FILE
    meta = json.loads(path.read_text())
    meta["format_version"] = 99
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99; this SigerLM reads 1"):
        read_config(tmp_path / "m")
    path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json: not a JSON object"):
        read_config(tmp_path / "m")
