"""Core's scans: the chunked scan gives the reference's outputs and gradients with memory bounded
by a chunk; other back-ends are registered by name and run whole blocks."""

import pytest
import torch

from sigerlm.model import config as config_module
from sigerlm.model import scan as scan_module
from sigerlm.model.backbone import Backbone
from sigerlm.model.block import SSMBlock
from sigerlm.model.config import ConfigError, SigerConfig, register_scan
from sigerlm.model.scan import ScanBackendError, scan_backend, selective_scan, selective_scan_ref
from sigerlm_testkit import saved_tensor_bytes, scan_inputs, scan_results


def chunked(*args):
    return selective_scan(*args, backend="chunked")


@pytest.mark.parametrize("shape", [(2, 37, 20, 4), (1, 1, 16, 1), (3, 130, 35, 16)], ids=str)
@pytest.mark.parametrize("with_state", [False, True])
def test_the_chunked_scan_matches_the_reference(shape, with_state):
    args = scan_inputs(*shape, state=with_state)
    b, l, d, n = shape
    weights = (torch.randn(b, l, d), torch.randn(b, d, n))
    expected = scan_results(selective_scan_ref, args, weights)
    got = scan_results(chunked, args, weights)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_float64_gradcheck():
    args = [t.detach().double().requires_grad_() for t in scan_inputs(2, 7, 5, 3, state=True)]
    assert torch.autograd.gradcheck(chunked, args)


def test_training_memory_is_bounded_by_a_chunk():
    """What the scan saves for backward is far smaller than the (b, l, d, n) tensor."""
    b, l, d, n = 1, 1024, 32, 16
    args = scan_inputs(b, l, d, n, state=False)
    full = b * l * d * n * 4
    inputs_bytes = sum(t.numel() * 4 for t in args if t is not None)
    saved = saved_tensor_bytes(lambda: chunked(*args))
    assert saved - inputs_bytes < full / 4, f"saved {saved} bytes; the full state tensor is {full}"


def test_unknown_back_ends_are_clear_errors(monkeypatch):
    args = [t.detach() for t in scan_inputs(1, 4, 4, 2, state=False) if t is not None]
    with pytest.raises(ScanBackendError, match="unknown scan back-end 'fast'; back-ends: reference, chunked"):
        selective_scan(*args, backend="fast")
    with pytest.raises(
        ConfigError, match="scan must be one of reference, chunked.*got 'chunkd' .did you mean 'chunked'"
    ):
        SigerConfig(scan="chunkd")
    with pytest.raises(ConfigError, match="cannot register scan back-end 'chunked'"):
        register_scan("chunked", "somewhere:else")
    # where sigerlm-kernels is not installed, the default says where it comes from, once
    monkeypatch.setattr(config_module, "_installed_scans", lambda: {})
    with pytest.raises(ConfigError, match=r"SigerConfig: scan 'fused' \(the default\) needs sigerlm-kernels[^;]*$"):
        SigerConfig()
    with pytest.raises(ScanBackendError, match="back-ends: reference, chunked .sigerlm-kernels provides it"):
        scan_backend("fused")


class Recording:
    """A registered back-end that runs the block's torch ops and records what it was asked."""

    def __init__(self):
        self.calls = []

    def selective_scan(self, *args):
        self.calls.append("scan")
        return selective_scan_ref(*args)

    def forward(self, block, hidden, state):
        self.calls.append("forward")
        return block.mixer(block.norm(hidden), state)

    def step(self, block, hidden, state):
        self.calls.append("step")
        return None  # the block's torch ops


RECORDING = Recording()


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(config_module, "SCAN_BACKENDS", {})  # this test's registrations only
    register_scan("recording", f"{__name__}:RECORDING")
    monkeypatch.setattr(scan_module, "_loaded", {})
    RECORDING.calls.clear()
    return RECORDING


def test_a_registered_back_end_runs_every_block(recording):
    """Imported by name when a block is built, handed every block's forward and step, and its
    ``selective_scan`` is the one ``scan: NAME`` means; a None step runs the torch ops."""
    assert scan_backend("recording") is recording and scan_backend("chunked") is None
    torch.manual_seed(0)
    model = Backbone(SigerConfig.from_profile("tiny", scan="recording")).eval()
    reference = Backbone(SigerConfig.from_profile("tiny", scan="reference")).eval()
    reference.load_state_dict(model.state_dict())
    assert all(isinstance(layer, SSMBlock) and layer.kernels is recording for layer in model.layers)
    x = torch.randn(2, 6, model.config.d_model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        assert recording.calls == ["forward", "scan"] * model.config.n_layers
        state = model.init_state(2)
        _, state = model.step(x[:, 0], state)
    assert recording.calls[-model.config.n_layers :] == ["step"] * model.config.n_layers
