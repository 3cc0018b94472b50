"""The block's whole-mixer autograd functions (``sigerlm_kernels.fused``) against the composition of
modules they replace: the same outputs bit for bit, the same gradients to rounding, float64
gradcheck, less kept for the backward, and the composition wherever a module is wrapped."""

import pytest
import torch

from sigerlm.model.block import SSMBlock
from sigerlm.model.config import SigerConfig
from sigerlm_kernels.backend import fuses_whole
from sigerlm_kernels.fused import fused_mixer, norm_in_proj
from sigerlm_testkit import saved_tensor_bytes

# (batch, length, d_model, d_state): length 1, ragged 16-position chunks, batch 1, d_state 1
SHAPES = [(1, 1, 16, 4), (2, 37, 16, 4), (1, 64, 32, 16), (3, 17, 8, 1), (2, 100, 24, 3)]


def composed(block):
    """Hooks that do nothing but make the block run its modules one by one (the norm, conv and
    gated-scan kernels between them)."""
    return [
        block.mixer.in_proj.register_forward_pre_hook(lambda *a: None),
        block.mixer.out_proj.register_forward_hook(lambda *a: None),
    ]


def run(block, x, state, composition):
    hooks = composed(block) if composition else []
    leaves = list(block.parameters()) + [x] + list(state or [])
    for t in leaves:
        t.grad = None
    y, (conv, h) = block(x, state, return_state=True)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g) for t in (y, conv, h)]
    # touches every output: the hidden states, the new conv state (x's tail) and the SSM state
    sum((t * w).sum() for t, w in zip((y, conv, h), weights, strict=True)).backward()
    for hook in hooks:
        hook.remove()
    return [y.detach(), conv.detach(), h.detach()] + [t.grad.clone() for t in leaves]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_block_equals_its_modules(shape, with_state):
    b, l, d, n = shape
    torch.manual_seed(0)
    block = SSMBlock(SigerConfig(d_model=d, n_layers=2, d_state=n), 0)
    x = torch.randn(b, l, d, requires_grad=True)
    state = None
    if with_state:
        state = tuple(t.normal_().requires_grad_() for t in block.init_state(b))
    assert fuses_whole(block.mixer, x)
    got, expected = run(block, x, state, False), run(block, x, state, True)
    names = ["out", "conv_state", "ssm_state"] + [name for name, _ in block.named_parameters()] + ["x"]
    names += ["d_conv_state", "d_ssm_state"] if with_state else []
    assert len(names) == len(got) == len(expected)
    for i in range(3):  # the forward is the same products and kernels in the same order
        assert torch.equal(got[i], expected[i]), names[i]
    for name, a, e in zip(names[3:], got[3:], expected[3:], strict=True):
        scale = e.abs().max().clamp_min(1.0)
        assert (a - e).abs().max() / scale <= 1e-5, f"fused block: {name} differs from the composition"


def tiny_mixer_inputs(with_state):
    b, l, d, di, n, r, k = 2, 5, 4, 6, 3, 2, 4
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()

    A = (-torch.exp(torch.randn(di, n, generator=g, dtype=torch.float64) * 0.3)).requires_grad_()
    args = [rnd(b, l, 2 * di), rnd(di, 1, k), rnd(di), rnd(b, di, k - 1) if with_state else None]
    args += [rnd(r + 2 * n, di), rnd(di, r), rnd(di), A, rnd(di), rnd(d, di), rnd(b, di, n) if with_state else None]
    return args, r


@pytest.mark.parametrize("with_state", [False, True])
def test_fused_mixer_float64_gradcheck(with_state):
    args, r = tiny_mixer_inputs(with_state)
    slots = [i for i, a in enumerate(args) if a is not None]

    def fn(*leaves):
        full = list(args)
        for i, leaf in zip(slots, leaves, strict=True):
            full[i] = leaf
        return fused_mixer(*full, r)

    assert torch.autograd.gradcheck(fn, [args[i] for i in slots])


def test_norm_in_proj_float64_gradcheck():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 5, 4), (4,), (12, 4)]
    x, w, w_in = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes)
    assert torch.autograd.gradcheck(lambda x, w, w_in: norm_in_proj(x, w, 1e-6, w_in), (x, w, w_in))


def test_fused_block_keeps_less_for_backward():
    """The composition keeps the normed rows, the conv output, dt_proj's output and the gated
    output besides what both keep: d + 3 d_inner floats a position."""
    b, l, d = 2, 256, 64
    block = SSMBlock(SigerConfig(d_model=d, n_layers=2, d_state=16), 0)
    x = torch.randn(b, l, d, requires_grad=True)
    fused = saved_tensor_bytes(lambda: block(x))
    hooks = composed(block)
    whole = saved_tensor_bytes(lambda: block(x))
    for hook in hooks:
        hook.remove()
    di = block.mixer.d_inner
    assert whole - fused >= b * l * (d + 3 * di) * 4, (whole, fused)


def test_a_wrapped_module_runs_the_composition():
    """A module with hooks (as a LoRA or quantized wrapper would be) is called, not bypassed."""
    torch.manual_seed(0)
    block = SSMBlock(SigerConfig(d_model=16, n_layers=2, d_state=4), 0)
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        plain_out = block(x)
        for module in (block.mixer.in_proj, block.mixer.x_proj, block.mixer.dt_proj, block.mixer.out_proj):
            hook = module.register_forward_hook(lambda m, i, out: out * 1.5)
            assert not torch.allclose(block(x), plain_out), type(module).__name__
            hook.remove()
        torch.testing.assert_close(block(x), plain_out, rtol=0, atol=0)


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_block_step_kernel_equals_the_step_of_modules_and_the_forward(rows, kernel_calls):
    """The compiled whole-block step (``block_step``) against the block's step run module by
    module and against the full forward of that one position, states included."""
    calls = kernel_calls
    torch.manual_seed(0)
    block = SSMBlock(SigerConfig(d_model=48, n_layers=2, d_state=5), 0).eval()
    x = torch.randn(rows, 48)
    state = tuple(t.normal_() for t in block.init_state(rows))
    with torch.no_grad():
        got = block.step(x, state)
        assert calls == ["block_step"]
        hook = block.mixer.register_forward_pre_hook(lambda *a: None)  # the step of modules
        expected = block.step(x, state)
        hook.remove()
        full, full_state = block(x.unsqueeze(1), state, return_state=True)
    for a, e in zip([got[0], *got[1]], [expected[0], *expected[1]], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0], full[:, 0], rtol=1e-5, atol=1e-5)
    for a, e in zip(got[1], full_state, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_frozen_weights_get_no_gradient_and_the_input_the_same_one():
    """With every weight frozen (a frozen backbone) the functions skip the weight products; the
    input's gradient is the composition's."""
    torch.manual_seed(0)
    block = SSMBlock(SigerConfig(d_model=16, n_layers=2, d_state=4), 0)
    block.requires_grad_(False)
    x = torch.randn(2, 21, 16, requires_grad=True)
    grads = []
    for composition in (False, True):
        hooks = composed(block) if composition else []
        x.grad = None
        block(x).pow(2).sum().backward()
        grads.append(x.grad.clone())
        for hook in hooks:
            hook.remove()
    assert all(p.grad is None for p in block.parameters())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
