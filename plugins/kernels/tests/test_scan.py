"""The fused scans give the reference's outputs and gradients, keeping less than the torch ops."""

import pytest
import torch

from sigerlm.model.scan import ScanBackendError, selective_scan
from sigerlm_kernels.ops import gated_selective_scan, gated_selective_scan_ref
from sigerlm_testkit import saved_tensor_bytes, scan_inputs, scan_results

SHAPES = [
    (2, 37, 20, 4),  # nothing divides evenly
    (1, 1, 16, 1),  # length 1, batch 1, d_state 1
    (1, 64, 16, 16),  # exactly two fused chunks
    (3, 130, 35, 16),  # several chunks of both back-ends, ragged channel blocks
    (2, 5, 3, 2),  # fewer channels than one block
]


def fused(*args):
    return selective_scan(*args, backend="fused")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_the_fused_scan_matches_the_reference(shape, with_state):
    args = scan_inputs(*shape, state=with_state)
    b, l, d, n = shape
    weights = (torch.randn(b, l, d), torch.randn(b, d, n))
    expected = scan_results(lambda *a: selective_scan(*a, backend="reference"), args, weights)
    got = scan_results(fused, args, weights)
    names = ["y", "last_state", "du", "ddt", "dA", "dB", "dC", "dD", "dstate"]
    for name, a, e in zip(names[: len(expected)], got, expected, strict=True):
        scale = e.abs().max().clamp_min(1.0)
        assert (a - e).abs().max() / scale <= 1e-4, f"fused {name} differs from the reference"


def test_float64_gradcheck():
    args = [t.detach().double().requires_grad_() for t in scan_inputs(2, 7, 5, 3, state=True)]
    assert torch.autograd.gradcheck(fused, args)


def test_training_memory_is_one_state_every_16_positions():
    """What the scan saves for backward is far smaller than the (b, l, d, n) tensor."""
    b, l, d, n = 1, 1024, 32, 16
    args = scan_inputs(b, l, d, n, state=False)
    full = b * l * d * n * 4
    inputs_bytes = sum(t.numel() * 4 for t in args if t is not None)
    saved = saved_tensor_bytes(lambda: fused(*args))
    assert saved - inputs_bytes <= full / 16 + d * n * 4, f"saved {saved} bytes; the full state tensor is {full}"


def test_inference_saves_nothing_and_matches():
    args = scan_inputs(2, 50, 24, 8)
    with torch.no_grad():
        ref = selective_scan(*args, backend="reference")
        out = fused(*args)
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)


def test_errors_name_the_fix():
    args = [t.detach() for t in scan_inputs(1, 4, 4, 2, state=False) if t is not None]
    with pytest.raises(ScanBackendError, match="takes float32 or float64"):
        fused(*[t.half() for t in args])


# -- the block's fused scan: softplus(dt + bias), scan, D skip and the SiLU gate in one kernel ------
def gated_inputs(b, l, d, n, dtype=torch.float32, state=True, bias=True, seed=0):
    """Inputs of ``gated_selective_scan``; z is the second half of a (b, l, 2d) tensor, as in the block."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = rnd(b, l, d)
    # dt_pre spans both sides of softplus' threshold (20) only in the test below; here a realistic range
    dt_pre = rnd(b, l, d) - 1.0
    dt_bias = rnd(d) * 0.5 if bias else None
    A = -torch.exp(rnd(d, n) * 0.5)
    B, C, D = rnd(b, l, n), rnd(b, l, n), rnd(d)
    xz = rnd(b, l, 2 * d)
    h = rnd(b, d, n) if state else None
    leaves = [t.requires_grad_() if t is not None else None for t in (u, dt_pre, dt_bias, A, B, C, D, xz, h)]
    return leaves


def gated_run(fn, leaves, weights):
    for t in leaves:
        if t is not None:
            t.grad = None
    u, dt_pre, dt_bias, A, B, C, D, xz, h = leaves
    z = xz[..., xz.shape[-1] // 2 :]  # a strided view
    out, last = fn(u, dt_pre, dt_bias, A, B, C, D, z, h)
    ((out * weights[0]).sum() + (last * weights[1]).sum()).backward()
    return [out.detach(), last.detach()] + [t.grad.clone() for t in leaves if t is not None]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_gated_scan_matches_its_reference(shape, with_state, with_bias):
    """Outputs and every gradient (u, dt_pre, dt_bias, A, B, C, D, z through its parent, state)."""
    leaves = gated_inputs(*shape, state=with_state, bias=with_bias)
    b, l, d, n = shape
    weights = (torch.randn(b, l, d), torch.randn(b, d, n))
    expected = gated_run(gated_selective_scan_ref, leaves, weights)
    got = gated_run(gated_selective_scan, leaves, weights)
    names = ["out", "last_state", "du", "ddt_pre", "ddt_bias", "dA", "dB", "dC", "dD", "dxz", "dstate"]
    names = [n for n in names if (n != "ddt_bias" or with_bias) and (n != "dstate" or with_state)]
    assert len(names) == len(expected) == len(got)
    for name, a, e in zip(names, got, expected, strict=True):
        scale = e.abs().max().clamp_min(1.0)
        assert (a - e).abs().max() / scale <= 1e-4, f"fused gated scan: {name} differs from the reference"


def test_fused_gated_scan_follows_softplus_beyond_its_threshold():
    """Above 20 torch's softplus is the identity (and its slope 1): the kernel does the same."""
    leaves = gated_inputs(2, 9, 6, 3, dtype=torch.float64)
    with torch.no_grad():
        leaves[1][:, ::2] += 25.0  # half the positions past the threshold
        leaves[0].mul_(0.01)  # keeps the states moderate with such steps
    weights = (torch.randn(2, 9, 6, dtype=torch.float64), torch.randn(2, 6, 3, dtype=torch.float64))
    expected = gated_run(gated_selective_scan_ref, leaves, weights)
    got = gated_run(gated_selective_scan, leaves, weights)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("with_state", [False, True])
def test_fused_gated_scan_float64_gradcheck(with_state):
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in gated_inputs(2, 7, 5, 3)]
    if not with_state:
        leaves[-1] = None
    u, dt_pre, dt_bias, A, B, C, D, xz, h = leaves

    def fn(u, dt_pre, dt_bias, A, B, C, D, xz, *h):
        z = xz[..., xz.shape[-1] // 2 :]
        return gated_selective_scan(u, dt_pre, dt_bias, A, B, C, D, z, h[0] if h else None)

    args = [u, dt_pre, dt_bias, A, B, C, D, xz] + ([h] if with_state else [])
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_the_gated_reference_is_its_definition_on_any_scan(backend):
    leaves = [t.detach() if t is not None else None for t in gated_inputs(2, 20, 8, 4)]
    u, dt_pre, dt_bias, A, B, C, D, xz, h = leaves
    z = xz[..., 8:]
    got = gated_selective_scan_ref(u, dt_pre, dt_bias, A, B, C, D, z, h, backend=backend)
    dt = torch.nn.functional.softplus(dt_pre + dt_bias)
    y, last = selective_scan(u, dt, A, B, C, D, h, backend="reference")
    torch.testing.assert_close(got[0], y * torch.nn.functional.silu(z))
    torch.testing.assert_close(got[1], last)


def test_fused_gated_scan_keeps_three_fewer_activations():
    """The reference keeps dt, y and silu(z) (three (b, l, d) tensors) besides the inputs; the
    fused kernel keeps the inputs and one state every 16 positions."""
    b, l, d, n = 2, 512, 64, 16
    leaves = gated_inputs(b, l, d, n, state=False)
    u, dt_pre, dt_bias, A, B, C, D, xz, _ = leaves
    z = xz[..., d:]
    act = b * l * d * 4  # one (b, l, d) float32 tensor
    ref = saved_tensor_bytes(lambda: gated_selective_scan_ref(u, dt_pre, dt_bias, A, B, C, D, z, backend="fused"))
    fused = saved_tensor_bytes(lambda: gated_selective_scan(u, dt_pre, dt_bias, A, B, C, D, z))
    states = b * (l // 16) * d * n * 4
    assert fused <= ref - 3 * act + states + act // 8, (fused, ref, act)


@pytest.mark.parametrize("with_state", [False, True])
def test_the_fused_block_equals_the_reference_block(with_state):
    """A whole backbone with ``scan: fused`` (the fused conv and gated-scan kernels) against the
    same weights with ``scan: reference`` (plain torch ops): hidden states, the returned state
    and the gradient of every parameter."""
    from sigerlm.model.backbone import Backbone
    from sigerlm.model.config import SigerConfig

    torch.manual_seed(0)
    fused = Backbone(SigerConfig.from_profile("tiny", scan="fused"))
    reference = Backbone(SigerConfig.from_profile("tiny", scan="reference"))
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(2, 37, fused.config.d_model)
    state = None
    if with_state:
        with torch.no_grad():
            _, state = reference.forward_hidden(torch.randn(2, 5, fused.config.d_model), return_state=True)
    outs = []
    for model in (fused, reference):
        hidden, last = model.forward_hidden(x, state=state, return_state=True)
        (hidden.square().sum() + sum(s.sum() for layer in last for s in layer)).backward()
        outs.append((hidden.detach(), last, {k: p.grad for k, p in model.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, e in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a[0], e[0])
        torch.testing.assert_close(a[1], e[1], rtol=1e-4, atol=1e-5)
    for name, grad in outs[1][2].items():
        torch.testing.assert_close(outs[0][2][name], grad, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
