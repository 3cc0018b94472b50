"""The block's causal depthwise convolution followed by SiLU, in the ``(b, l, d)`` layout.

``causal_conv_silu`` runs the compiled kernel (``sigerlm.model.kernels``): it reads the
projection's output where it lies and writes the activation once, where the PyTorch path
transposes, pads, convolves and activates in separate passes. ``causal_conv_act`` is that
PyTorch path, for any activation. Glossary: ``b`` batch, ``l`` length, ``d`` channels, ``k``
kernel width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sigerlm.model import kernels


def causal_conv_act(
    x: Tensor, weight: Tensor, bias: Tensor, state: Tensor | None, act: Callable[[Tensor], Tensor]
) -> Tensor:
    """``x`` (b, l, d), ``weight`` (d, 1, k), ``state`` (b, d, k - 1) or None -> (b, l, d)."""
    b, l, d = x.shape
    k = weight.shape[-1]
    context = state if state is not None else x.new_zeros(b, d, k - 1)
    padded = torch.cat([context, x.transpose(1, 2)], dim=2)  # (b, d, k - 1 + l)
    return act(F.conv1d(padded, weight, bias, groups=d)).transpose(1, 2)  # (b, l, d)


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state):
        ctx.save_for_backward(x, weight, bias, state)
        return kernels.load().conv_silu_forward(x, weight, bias, state)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, state = ctx.saved_tensors
        dx, dweight, dbias, dstate = kernels.load().conv_silu_backward(dout, x, weight, bias, state)
        return dx, dweight, dbias, dstate if state is not None else None


def causal_conv_silu(x: Tensor, weight: Tensor, bias: Tensor, state: Tensor | None = None) -> Tensor:
    """The compiled kernel: same result as ``causal_conv_act(..., F.silu)``."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return _ConvSiLU.apply(x, weight, bias, None if state is None else state.contiguous())


def next_conv_state(x: Tensor, state: Tensor | None, k: int) -> Tensor:
    """The last ``k - 1`` inputs after ``x`` (b, l, d): the convolution's decode state (b, d, k - 1)."""
    b, l, d = x.shape
    context = state if state is not None else x.new_zeros(b, d, k - 1)
    if k == 1:
        return context
    return torch.cat([context, x[:, -(k - 1) :].transpose(1, 2)], dim=2)[:, :, -(k - 1) :]
