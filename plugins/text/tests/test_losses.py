"""The chunked linear cross-entropy (core's compiled row kernel and the PyTorch path) against
``F.cross_entropy`` over the full logits."""

import pytest
import torch
import torch.nn.functional as F

from sigerlm_text.losses import linear_cross_entropy


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
