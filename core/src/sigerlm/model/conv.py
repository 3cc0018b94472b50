"""The block's causal depthwise convolution and its activation, in the ``(b, l, d)`` layout, and
the convolution's decode state. Glossary: ``b`` batch, ``l`` length, ``d`` channels, ``k``
kernel width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv_act(
    x: Tensor, weight: Tensor, bias: Tensor, state: Tensor | None, act: Callable[[Tensor], Tensor]
) -> Tensor:
    """``x`` (b, l, d), ``weight`` (d, 1, k), ``state`` (b, d, k - 1) or None -> (b, l, d)."""
    b, l, d = x.shape
    k = weight.shape[-1]
    context = state if state is not None else x.new_zeros(b, d, k - 1)
    padded = torch.cat([context, x.transpose(1, 2)], dim=2)  # (b, d, k - 1 + l)
    return act(F.conv1d(padded, weight, bias, groups=d)).transpose(1, 2)  # (b, l, d)


def next_conv_state(x: Tensor, state: Tensor | None, k: int) -> Tensor:
    """The last ``k - 1`` inputs after ``x`` (b, l, d): the convolution's decode state (b, d, k - 1)."""
    b, l, d = x.shape
    context = state if state is not None else x.new_zeros(b, d, k - 1)
    if k == 1:
        return context
    return torch.cat([context, x[:, -(k - 1) :].transpose(1, 2)], dim=2)[:, :, -(k - 1) :]
