"""The backbone: shapes, O(1) decode state, prefill + step equal to the full forward, init."""

import math

import pytest
import torch
import torch.nn.functional as F

from sigerlm.model.backbone import Backbone
from sigerlm.model.block import SSMBlock
from sigerlm.model.config import SigerConfig


def backbone(scan="fused", seed=0, **overrides):
    torch.manual_seed(seed)
    return Backbone(SigerConfig.from_profile("tiny", scan=scan, **overrides)).eval()


@pytest.mark.parametrize("scan", ["reference", "chunked", "fused"])
def test_step_after_prefill_equals_the_full_forward_at_every_position(scan):
    model = backbone(scan)
    x = torch.randn(2, 13, 16)
    with torch.no_grad():
        full = model.forward_hidden(x)
        for split in (1, 6):
            hidden, state = model.forward_hidden(x[:, :split], return_state=True)
            outputs = [hidden]
            for t in range(split, 13):
                y, state = model.step(x[:, t], state)
                outputs.append(y.unsqueeze(1))
            torch.testing.assert_close(torch.cat(outputs, 1), full, rtol=1e-5, atol=1e-5)


def test_decode_from_an_empty_state_equals_the_full_forward():
    model = backbone()
    x = torch.randn(3, 9, 16)
    with torch.no_grad():
        state = model.init_state(3)
        steps = []
        for t in range(9):
            y, state = model.step(x[:, t], state)
            steps.append(y)
        torch.testing.assert_close(torch.stack(steps, 1), model.forward_hidden(x), rtol=1e-5, atol=1e-5)


def test_prefill_in_pieces_equals_one_prefill():
    model = backbone()
    x = torch.randn(2, 20, 16)
    with torch.no_grad():
        whole, whole_state = model.forward_hidden(x, return_state=True)
        a, state = model.forward_hidden(x[:, :7], return_state=True)
        b, state = model.forward_hidden(x[:, 7:8], state=state, return_state=True)
        c, state = model.forward_hidden(x[:, 8:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([a, b, c], 1), whole, rtol=1e-5, atol=1e-5)
    for (conv, ssm), (conv2, ssm2) in zip(state, whole_state, strict=True):
        torch.testing.assert_close(conv, conv2)
        torch.testing.assert_close(ssm, ssm2, rtol=1e-5, atol=1e-5)


def test_state_size_does_not_grow_with_the_sequence():
    model = backbone()
    with torch.no_grad():
        _, short = model.forward_hidden(torch.randn(1, 4, 16), return_state=True)
        _, long = model.forward_hidden(torch.randn(1, 300, 16), return_state=True)
    size = lambda state: sum(t.numel() for layer in state for t in layer)  # noqa: E731
    assert size(short) == size(long) == size(model.init_state(1))
    conv, ssm = model.init_state(2)[0]
    assert conv.shape == (2, 32, 3) and ssm.shape == (2, 32, 4)


def test_gradients_flow_to_every_parameter():
    model = backbone().train()
    x = torch.randn(2, 10, 16, requires_grad=True)
    model.forward_hidden(x).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad is not None


def test_initialisation_follows_mamba():
    config = SigerConfig.from_profile("tiny", dt_min=0.002, dt_max=0.05)
    block = SSMBlock(config, 0)
    mixer = block.mixer
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 0.002 * 0.999 and dt.max() <= 0.05 * 1.001
    expected_A = torch.arange(1, config.d_state + 1, dtype=torch.float32).repeat(config.d_inner, 1)
    torch.testing.assert_close(torch.exp(mixer.A_log), expected_A)
    assert torch.equal(mixer.D, torch.ones(config.d_inner))
    bound = 1 / math.sqrt(config.d_inner) / math.sqrt(2 * config.n_layers)
    assert mixer.out_proj.weight.abs().max() <= bound
    assert mixer.out_proj.weight.abs().max() > bound * 0.8
    assert mixer.dt_proj.weight.abs().max() <= config.dt_rank_value**-0.5


def test_no_weight_decay_tags():
    names = set(backbone().no_weight_decay_parameters())
    assert {
        "layers.0.norm.weight",
        "layers.0.mixer.A_log",
        "layers.0.mixer.D",
        "layers.0.mixer.conv1d.bias",
        "layers.0.mixer.dt_proj.bias",
        "norm_f.weight",
    } <= names
    assert "layers.0.mixer.in_proj.weight" not in names


@pytest.mark.parametrize(
    "overrides", [{"norm_type": "layernorm"}, {"activation": "gelu"}, {"activation": "relu"}, {"d_conv": 1}]
)
def test_variants_keep_the_decode_contract(overrides):
    model = backbone(**overrides)
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        full = model.forward_hidden(x)
        _, state = model.forward_hidden(x[:, :3], return_state=True)
        y, _ = model.step(x[:, 3], state)
    assert y.shape == (1, 16)
    torch.testing.assert_close(y, full[:, 3], rtol=1e-5, atol=1e-5)


def test_dropout_applies_in_training_only():
    model = backbone(dropout=0.5)
    x = torch.randn(1, 8, 16)
    with torch.no_grad():
        assert torch.equal(model.forward_hidden(x), model.forward_hidden(x))
        model.train()
        assert not torch.equal(model.forward_hidden(x), model.forward_hidden(x))


def test_blocks_come_from_the_registry(plugin_manager):
    from sigerlm.assemble import build_model

    assert plugin_manager.get_component("blocks", "ssm").plugin == "core"
    config = SigerConfig.from_profile("tiny", block="identity")
    model = build_model(plugin_manager, config, {"use": "random-embedding"})
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        # identity blocks: only the final norm acts
        torch.testing.assert_close(model.forward_hidden(x), model.backbone.norm_f(x))
    assert isinstance(Backbone(SigerConfig.from_profile("tiny")).layers[0], SSMBlock)


def test_profile_needing_an_absent_block_is_a_clear_error(plugin_manager, tmp_path):
    from sigerlm.errors import ManifestError
    from sigerlm.manifest import load_manifest

    manifest = {"siger": 1, "name": "x", "model": {"profile": "small_moe", "adapter": "random-embedding"}}
    manifest["steps"] = ["record-calls"]
    with pytest.raises(ManifestError, match="profile 'small_moe' needs block 'moe', which no loaded plugin provides"):
        load_manifest(manifest, pm=plugin_manager)
