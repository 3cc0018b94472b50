"""Losses over a vocabulary head, for any adapter that predicts tokens.

``linear_cross_entropy(hidden, weight, targets)`` equals
``F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100)`` but never holds the whole
``(tokens, vocab)`` logits tensor: it works through chunks of tokens and computes each chunk's
gradients as it goes (the gradient of softmax cross-entropy is ``softmax - onehot``). With a
32000-token vocabulary and 4096 tokens a step, that is 1 GB of logits and their gradient not
allocated, and one pass over them instead of three. The per-row work (log-sum-exp, loss,
softmax minus one-hot) runs in the compiled kernel (``fused``) or in PyTorch ops (``torch``).
Glossary: ``t`` tokens, ``d`` width,
``v`` vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 24  # logits per chunk (64 MB in float32)


def _chunk_loss_and_grad(logits: Tensor, targets: Tensor, ignore_index: int, grad: bool, backend: str) -> Tensor:
    """Per-row loss of a logits chunk; with ``grad``, the logits become ``softmax - onehot``."""
    if backend == "fused" and logits.device.type == "cpu":
        from sigerlm_kernels import kernels

        return kernels.load().cross_entropy_(logits, targets, ignore_index, grad)
    valid = targets != ignore_index
    safe = targets.clamp(min=0)
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    loss = (lse - logits.gather(1, safe[:, None]).squeeze(1)) * valid
    if grad:
        logits.sub_(lse[:, None]).exp_()  # softmax, in place
        logits[torch.arange(logits.shape[0], device=logits.device), safe] -= 1.0
        logits.mul_(valid[:, None].to(logits.dtype))
    return loss


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, chunk: int, backend: str):
        t = hidden.shape[0]
        count = (targets != ignore_index).sum().clamp(min=1).to(hidden.dtype)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        total = hidden.new_zeros(())
        buffer = hidden.new_empty(min(chunk, t), weight.shape[0])  # reused: fresh memory is slow to touch
        for start in range(0, t, chunk):
            h = hidden[start : start + chunk]  # (c, d)
            logits = torch.mm(h, weight.t(), out=buffer[: h.shape[0]])  # (c, v)
            total += _chunk_loss_and_grad(
                logits, targets[start : start + chunk], ignore_index, need_grad, backend
            ).sum()
            if grad_hidden is not None:  # logits now hold d(sum of losses)/d(logits)
                torch.mm(logits, weight, out=grad_hidden[start : start + chunk])
            if grad_weight is not None:
                grad_weight.addmm_(logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.count = count
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output / ctx.count
        dh = grad_hidden * scale if grad_hidden is not None else None
        dw = grad_weight * scale if grad_weight is not None else None
        return dh, dw, None, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
    backend: str = "fused",
) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (``ignore_index`` skipped).

    ``hidden`` is ``(..., d)``, ``weight`` ``(v, d)``, ``targets`` ``(...)``. ``backend`` is
    ``fused`` (the compiled kernel, on the CPU) or ``torch`` (plain PyTorch ops).
    """
    if backend not in ("fused", "torch"):
        raise ValueError(f"unknown cross-entropy back-end '{backend}'; back-ends: fused, torch")
    d = hidden.shape[-1]
    flat = hidden.reshape(-1, d)
    targets = targets.reshape(-1)
    if targets.shape[0] != flat.shape[0]:
        raise ValueError(f"{flat.shape[0]} hidden states but {targets.shape[0]} targets")
    chunk = chunk_size or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(flat, weight, targets.contiguous(), ignore_index, chunk, backend)
