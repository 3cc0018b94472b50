"""The compiled decode step of the mixer (``mixer_step``) against the torch ops it replaces."""

import pytest
import torch
from torch import nn

from sigerlm.model.block import SSMBlock
from sigerlm.model.config import SigerConfig
from sigerlm_kernels.backend import compiled_step_applies


def block_and_state(batch, seed=0, **overrides):
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny", scan="fused", **overrides)
    block = SSMBlock(config).eval()
    with torch.no_grad():  # away from the initial values, so every term matters
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    conv, ssm = block.init_state(batch)
    return block, (torch.randn_like(conv), torch.randn_like(ssm)), config


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("overrides", [{}, {"d_state": 1}, {"d_conv": 2}, {"d_conv": 1}], ids=str)
def test_compiled_step_equals_the_torch_step(batch, overrides):
    block, state, config = block_and_state(batch, **overrides)
    x = torch.randn(batch, config.d_model)
    for _ in range(3):  # chained steps
        with torch.no_grad():
            assert compiled_step_applies(block.mixer, block.mixer.in_proj(x), state)
            got, got_state = block.step(x, state)
        with torch.enable_grad():  # the torch ops (the compiled step is for inference only)
            assert not compiled_step_applies(block.mixer, block.mixer.in_proj(x), state)
            expected, expected_state = block.step(x, state)
        torch.testing.assert_close(got, expected.detach())
        for a, e in zip(got_state, expected_state, strict=True):
            torch.testing.assert_close(a, e.detach())
        x, state = got.detach(), got_state
    assert state[0].shape == (batch, config.d_inner, config.d_conv - 1)


def test_compiled_step_leaves_the_old_state_untouched():
    block, state, config = block_and_state(2)
    before = [s.clone() for s in state]
    with torch.no_grad():
        block.step(torch.randn(2, config.d_model), state)
    for a, b in zip(state, before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_wrapped_projections_and_exports_use_the_torch_ops(monkeypatch):
    block, state, config = block_and_state(1)

    class Wrapped(nn.Linear):  # as a LoRA or quantized layer would be
        pass

    xz = torch.randn(1, 2 * config.d_inner)
    with torch.no_grad():
        assert compiled_step_applies(block.mixer, xz, state)
        for check in ("torch.onnx.is_in_onnx_export", "torch.compiler.is_compiling", "torch.jit.is_tracing"):
            with monkeypatch.context() as m:
                m.setattr(check, lambda: True)
                assert not compiled_step_applies(block.mixer, xz, state), check
        wrapped = Wrapped(block.mixer.dt_proj.in_features, block.mixer.dt_proj.out_features)
        wrapped.load_state_dict(block.mixer.dt_proj.state_dict())
        block.mixer.dt_proj = wrapped
        assert not compiled_step_applies(block.mixer, xz, state)


@pytest.mark.parametrize(
    ("overrides", "expected_calls"),
    [
        ({}, ["block_step"]),
        ({"norm_type": "layernorm"}, ["mixer_step"]),
        ({"activation": "gelu"}, ["rms_norm_forward"]),
    ],
    ids=["rmsnorm-silu", "layernorm", "gelu"],
)
def test_each_decode_step_takes_its_compiled_path_and_equals_the_torch_step(overrides, expected_calls, kernel_calls):
    """The whole block in one call where it applies; with a LayerNorm the mixer's compiled step;
    with another activation the RMSNorm kernel and the mixer's torch ops. Each equals the step of
    torch ops (gradients enabled: no kernel runs)."""
    calls = kernel_calls
    block, state, config = block_and_state(2, **overrides)
    x = torch.randn(2, config.d_model)
    with torch.no_grad():
        got, got_state = block.step(x, state)
    assert calls == expected_calls
    calls.clear()
    expected, expected_state = block.step(x, state)
    assert calls == []
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    for a, e in zip(got_state, expected_state, strict=True):
        torch.testing.assert_close(a, e.detach(), rtol=1e-5, atol=1e-5)
