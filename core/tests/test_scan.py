"""The fast scans give the reference's outputs and gradients, with memory bounded by a chunk."""

import pytest
import torch

from sigerlm.model import config as config_module
from sigerlm.model.scan import SCANS, ScanBackendError, selective_scan


def inputs(b, l, d, n, dtype=torch.float32, state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = rnd(b, l, d)
    dt = torch.nn.functional.softplus(rnd(b, l, d) - 1.0)
    A = -torch.exp(rnd(d, n) * 0.5)
    B, C, D = rnd(b, l, n), rnd(b, l, n), rnd(d)
    h = rnd(b, d, n) if state else None
    return [t.requires_grad_() if t is not None else None for t in (u, dt, A, B, C, D, h)]


def run(backend, args, weights):
    for t in args:
        if t is not None:
            t.grad = None
    y, last = selective_scan(*args, backend=backend)
    # a loss that touches every output and the last state with different weights
    ((y * weights[0]).sum() + (last * weights[1]).sum()).backward()
    return [y.detach(), last.detach()] + [t.grad.clone() for t in args if t is not None]


SHAPES = [
    (2, 37, 20, 4),  # nothing divides evenly
    (1, 1, 16, 1),  # length 1, batch 1, d_state 1
    (1, 64, 16, 16),  # exactly two fused chunks
    (3, 130, 35, 16),  # several chunks of both back-ends, ragged channel blocks
    (2, 5, 3, 2),  # fewer channels than one block
]


@pytest.mark.parametrize("backend", ["chunked", "fused"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_fast_scans_match_the_reference(backend, shape, with_state):
    args = inputs(*shape, state=with_state)
    b, l, d, n = shape
    weights = (torch.randn(b, l, d), torch.randn(b, d, n))
    expected = run("reference", args, weights)
    got = run(backend, args, weights)
    names = ["y", "last_state", "du", "ddt", "dA", "dB", "dC", "dD", "dstate"]
    for name, a, e in zip(names[: len(expected)], got, expected, strict=True):
        scale = e.abs().max().clamp_min(1.0)
        assert (a - e).abs().max() / scale <= 1e-4, f"{backend} {name} differs from the reference"


@pytest.mark.parametrize("backend", ["chunked", "fused"])
def test_float64_gradcheck(backend):
    args = [t.detach().double().requires_grad_() for t in inputs(2, 7, 5, 3, state=True)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, backend=backend), args)


@pytest.mark.parametrize("backend", ["chunked", "fused"])
def test_training_memory_is_bounded_by_a_chunk(backend):
    """What the scan saves for backward is far smaller than the (b, l, d, n) tensor."""
    b, l, d, n = 1, 1024, 32, 16
    args = inputs(b, l, d, n, state=False)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        selective_scan(*args, backend=backend)
    full = b * l * d * n * 4
    inputs_bytes = sum(t.numel() * 4 for t in args if t is not None)
    assert sum(saved) - inputs_bytes < full / 4, f"saved {sum(saved)} bytes; the full state tensor is {full}"


def test_inference_saves_nothing_and_matches():
    args = [t.detach() for t in inputs(2, 50, 24, 8) if t is not None]
    with torch.no_grad():
        ref = selective_scan(*args, backend="reference")
        for backend in ("chunked", "fused"):
            out = selective_scan(*args, backend=backend)
            torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)


def test_backends_are_named_in_config_and_errors_are_clear():
    assert set(config_module.SCANS) == set(SCANS)
    args = [t.detach() for t in inputs(1, 4, 4, 2, state=False) if t is not None]
    with pytest.raises(ScanBackendError, match="unknown scan back-end 'fast'; back-ends: reference, chunked, fused"):
        selective_scan(*args, backend="fast")
    with pytest.raises(ScanBackendError, match="takes float32 or float64"):
        selective_scan(*[t.half() for t in args], backend="fused")
