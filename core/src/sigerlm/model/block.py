"""The selective-SSM block, in the order and with the names of state-spaces' Mamba.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width (``d_model``), ``d_inner``
expanded width (``expand * d``), ``n`` state size, ``r`` rank of the dt projection, ``k``
convolution width.

    hidden -> norm -> in_proj -> (x, z)
    x -> causal depthwise conv1d -> act -> x_proj -> (dt, B, C)
    dt -> dt_proj -> softplus
    y = selective_scan(x, dt, A = -exp(A_log), B, C, D)
    out = out_proj(y * act(z)) -> dropout -> + hidden

This module is the definition in torch ops (with core's ``reference`` and ``chunked`` scans).
Any other ``SigerConfig.scan`` names a back-end an installed package declares (entry-point group
``sigerlm.scans``; the default ``fused`` comes with sigerlm-kernels) or ``register_scan``
registers: an object, given to every ``SSMBlock`` of the model as ``block.kernels``, with

- ``selective_scan(u, dt, A, B, C, D, state) -> (y, last_state)``, the scan alone;
- ``forward(block, hidden_states, state) -> (out, new_state)``, in place of
  ``block.mixer(block.norm(hidden_states), state)``: the same values, computed its own way;
- ``step(block, hidden_states, state) -> (hidden_states, state)`` for one position (residual
  included), or None where it does not apply (the torch ops below run instead).

It must compute what the torch ops compute, for any block (a LoRA-wrapped or hooked module is
called, not bypassed); sigerlm-kernels' tests hold its ``fused`` to that.

A block's decode state is ``(conv, ssm)``: the last ``k - 1`` inputs of the convolution
``(b, d_inner, k - 1)`` and the SSM state ``(b, d_inner, n)``. Neither grows with the sequence.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.model.config import SigerConfig
from sigerlm.model.conv import causal_conv_act, next_conv_state
from sigerlm.model.scan import scan_backend, selective_scan

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}

SSMState = tuple[Tensor, Tensor]  # conv (b, d_inner, k - 1), ssm (b, d_inner, n)


def no_weight_decay(*params: nn.Parameter) -> None:
    """Tag parameters the optimizer must not decay (norms, biases, A_log, D, embeddings)."""
    for p in params:
        p._no_weight_decay = True  # type: ignore[attr-defined]


def make_norm(config: SigerConfig, device: Any = None, dtype: Any = None) -> nn.Module:
    if config.norm_type == "rmsnorm":
        norm: nn.Module = nn.RMSNorm(config.d_model, eps=config.norm_eps, device=device, dtype=dtype)
    else:
        norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, device=device, dtype=dtype)
    no_weight_decay(*norm.parameters())
    return norm


class SSMMixer(nn.Module):
    """The selective state-space mixer (Mamba's ``mixer``)."""

    def __init__(self, config: SigerConfig, layer_idx: int = 0, device: Any = None, dtype: Any = None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.layer_idx = layer_idx
        self.d_inner, self.d_state, self.d_conv = config.d_inner, config.d_state, config.d_conv
        self.dt_rank = config.dt_rank_value
        self.scan = config.scan
        self.act = ACTIVATIONS[config.activation]
        d, di, n, r = config.d_model, self.d_inner, self.d_state, self.dt_rank

        self.in_proj = nn.Linear(d, 2 * di, bias=False, **kw)
        # padding is applied in forward, from zeros or from the decode state
        self.conv1d = nn.Conv1d(di, di, kernel_size=self.d_conv, groups=di, bias=True, **kw)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False, **kw)
        self.dt_proj = nn.Linear(r, di, bias=True, **kw)
        self.A_log = nn.Parameter(torch.empty(di, n, **kw))
        self.D = nn.Parameter(torch.empty(di, **kw))
        self.out_proj = nn.Linear(di, d, bias=False, **kw)
        no_weight_decay(self.A_log, self.D, self.conv1d.bias, self.dt_proj.bias)
        self.reset_parameters(config)

    @torch.no_grad()
    def reset_parameters(self, config: SigerConfig) -> None:
        # dt_proj: weight uniform in +-dt_scale / sqrt(r); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        std = self.dt_rank**-0.5 * config.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        ).clamp(min=config.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real: A = -(1, 2, ..., n) for every channel
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)
        # out_proj writes into the residual stream: scale by 1/sqrt(2 * n_layers)
        nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
        self.out_proj.weight /= math.sqrt(2 * config.n_layers)

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_dbl = self.x_proj(x)  # (..., r + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (..., d_inner)
        return dt, B, C

    def forward(self, hidden_states: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        return self.mix(self.in_proj(hidden_states), state)

    def mix(self, xz: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        """Everything after ``in_proj``: its output ``xz`` (b, l, 2 * d_inner) to (b, l, d)."""
        x, z = xz.chunk(2, dim=-1)  # (b, l, d_inner) each
        conv_state = state[0] if state is not None else None
        new_conv_state = next_conv_state(x, conv_state, self.d_conv)  # (b, d_inner, k - 1)
        x = causal_conv_act(x, self.conv1d.weight, self.conv1d.bias, conv_state, self.act)  # (b, l, d_inner)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        dt, B, C = self._ssm_inputs(x)
        y, ssm_state = selective_scan(
            x, dt, A, B, C, self.D, None if state is None else state[1], backend=self.scan
        )  # (b, l, d_inner), (b, d_inner, n)
        return self.out_proj(y * self.act(z)), (new_conv_state, ssm_state)  # (b, l, d)

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> SSMState:
        device = device or self.A_log.device
        dtype = dtype or self.A_log.dtype
        return (
            torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def step(self, hidden_states: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        """One position: ``(b, d)`` in, ``(b, d)`` out; cost independent of what came before."""
        conv_state, h = state
        xz = self.in_proj(hidden_states)  # (b, 2 * d_inner)
        x, z = xz.chunk(2, dim=-1)  # (b, d_inner) each
        window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # (b, d_inner, k)
        x = (window * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias  # (b, d_inner)
        x = self.act(x)
        dt, B, C = self._ssm_inputs(x)  # (b, d_inner), (b, n), (b, n)
        A = -torch.exp(self.A_log.float())
        h = torch.exp(dt.unsqueeze(-1) * A) * h + (dt * x).unsqueeze(-1) * B.unsqueeze(1)  # (b, d_inner, n)
        y = (h * C.unsqueeze(1)).sum(-1) + self.D * x  # (b, d_inner)
        y = y * self.act(z)
        return self.out_proj(y), (window[:, :, 1:], h)


class SSMBlock(nn.Module):
    """Pre-norm residual block: ``hidden + dropout(mixer(norm(hidden)))``."""

    def __init__(self, config: SigerConfig, layer_idx: int = 0, device: Any = None, dtype: Any = None):
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = make_norm(config, device, dtype)
        self.mixer = SSMMixer(config, layer_idx, device, dtype)
        self.dropout = nn.Dropout(config.dropout)
        #: the registered scan back-end that runs this block (see the module's docstring), or None
        self.kernels = scan_backend(config.scan)

    def forward(self, hidden_states: Tensor, state: SSMState | None = None, return_state: bool = False):
        if self.kernels is not None:
            out, new_state = self.kernels.forward(self, hidden_states, state)
        else:
            out, new_state = self.mixer(self.norm(hidden_states), state)
        hidden_states = hidden_states + self.dropout(out)
        return (hidden_states, new_state) if return_state else hidden_states

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> SSMState:
        return self.mixer.init_state(batch_size, device, dtype)

    def step(self, hidden_states: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        stepped = None if self.kernels is None else self.kernels.step(self, hidden_states, state)
        if stepped is not None:
            return stepped
        out, state = self.mixer.step(self.norm(hidden_states), state)
        return hidden_states + out, state


def ssm_block(config: SigerConfig, layer_idx: int) -> SSMBlock:
    """The selective-SSM block (Mamba order and names)."""
    return SSMBlock(config, layer_idx)
