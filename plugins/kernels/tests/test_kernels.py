"""The compiled conv + SiLU kernel against its PyTorch definition (the cross-entropy kernel is
tested through its wrapper in sigerlm-text: plugins/text/tests/test_losses.py)."""

import pytest
import torch
import torch.nn.functional as F

from sigerlm.model.conv import causal_conv_act, next_conv_state
from sigerlm_kernels.ops import causal_conv_silu


@pytest.mark.parametrize(
    "b, l, d, k, with_state",
    [(2, 9, 20, 4, True), (1, 1, 5, 4, False), (2, 3, 130, 4, True), (1, 7, 3, 1, False), (2, 12, 7, 2, True)],
)
def test_conv_silu_matches_torch_and_gradchecks(b, l, d, k, with_state):
    g = torch.Generator().manual_seed(0)
    xz = torch.randn(b, l, 2 * d, generator=g, dtype=torch.double, requires_grad=True)
    weight = torch.randn(d, 1, k, generator=g, dtype=torch.double, requires_grad=True)
    bias = torch.randn(d, generator=g, dtype=torch.double, requires_grad=True)
    state = torch.randn(b, d, k - 1, generator=g, dtype=torch.double, requires_grad=True) if with_state else None
    x = xz[..., :d]  # a strided view, as the block passes it
    expected = causal_conv_act(x, weight, bias, state, F.silu)
    got = causal_conv_silu(x, weight, bias, state)
    torch.testing.assert_close(got, expected)
    inputs = [xz, weight, bias] + ([state] if with_state else [])
    grad = torch.randn_like(expected)
    for a, e in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(expected, inputs, grad), strict=True):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(
        lambda *a: causal_conv_silu(a[0][..., :d], a[1], a[2], a[3] if with_state else None), inputs
    )


def test_next_conv_state_keeps_the_last_inputs():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    state = next_conv_state(x, None, 4)
    torch.testing.assert_close(state, x[:, -3:].transpose(1, 2))
    short = next_conv_state(x[:, :1], torch.ones(2, 3, 3), 4)  # one new position after a state
    torch.testing.assert_close(short[:, :, :2], torch.ones(2, 3, 2))
    torch.testing.assert_close(short[:, :, 2], x[:, 0])


@pytest.mark.parametrize("b, k, v", [(1, 256, 1003), (3, 16, 8), (16, 33, 5), (2, 7, 4)])
def test_linear_rows_matches_the_matmul(b, k, v):
    """The decode head's kernel: x @ w.t() for a few rows, w's rows in groups of four and a ragged rest."""
    from sigerlm_kernels import kernels

    torch.manual_seed(0)
    x, w = torch.randn(b, k, dtype=torch.float64), torch.randn(v, k, dtype=torch.float64)
    out = kernels.load().linear_rows(x, w)
    assert out.shape == (b, v)
    torch.testing.assert_close(out, x @ w.t(), rtol=1e-12, atol=1e-12)
    x32, w32 = x.float(), w.float()
    torch.testing.assert_close(kernels.load().linear_rows(x32, w32.t().contiguous().t()), x32 @ w32.t())
    with pytest.raises(RuntimeError, match="linear_rows"):
        kernels.load().linear_rows(x, torch.randn(v, k + 1, dtype=torch.float64))
