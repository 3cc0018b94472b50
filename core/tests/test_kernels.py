"""The compiled kernels against their PyTorch definitions: conv + SiLU, and cross-entropy."""

import pytest
import torch
import torch.nn.functional as F

from sigerlm.model.conv import causal_conv_act, causal_conv_silu, next_conv_state
from sigerlm.model.losses import linear_cross_entropy


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


@pytest.mark.parametrize("backend", ["fused", "torch"])
@pytest.mark.parametrize("chunk", [1, 8, 1000])
def test_linear_cross_entropy_matches_cross_entropy(backend, chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 19, 16, generator=g, dtype=torch.double, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, dtype=torch.double, requires_grad=True)
    targets = torch.randint(0, 50, (2, 19), generator=g)
    targets[0, 3] = targets[1, 7] = -100
    got = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk, backend=backend)
    expected = F.cross_entropy((hidden @ weight.t()).reshape(-1, 50), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(got, expected)
    for a, e in zip(
        torch.autograd.grad(got * 3, [hidden, weight]),
        torch.autograd.grad(expected * 3, [hidden, weight]),
        strict=True,
    ):
        torch.testing.assert_close(a, e)


def test_linear_cross_entropy_tied_weight_and_errors():
    g = torch.Generator().manual_seed(1)
    embedding = torch.randn(30, 8, generator=g, requires_grad=True)
    ids = torch.randint(0, 30, (3, 6), generator=g)
    hidden = torch.tanh(embedding[ids])
    loss = linear_cross_entropy(hidden[:, :-1], embedding, ids[:, 1:])
    loss.backward()
    grad = embedding.grad.clone()
    embedding.grad = None
    reference = F.cross_entropy(
        (torch.tanh(embedding[ids])[:, :-1] @ embedding.t()).reshape(-1, 30), ids[:, 1:].reshape(-1)
    )
    reference.backward()
    torch.testing.assert_close(grad, embedding.grad)
    with pytest.raises(ValueError, match="5 hidden states but 4 targets"):
        linear_cross_entropy(torch.randn(5, 8), embedding, torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="outside the vocabulary of 30"):
        linear_cross_entropy(torch.randn(2, 8), embedding.detach(), torch.tensor([1, 30]))
