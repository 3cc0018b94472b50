"""The selective-SSM block, in the order and with the names of state-spaces' Mamba.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width (``d_model``), ``d_inner``
expanded width (``expand * d``), ``n`` state size, ``r`` rank of the dt projection, ``k``
convolution width.

    hidden -> norm -> in_proj -> (x, z)
    x -> causal depthwise conv1d -> act -> x_proj -> (dt, B, C)
    dt -> dt_proj -> softplus
    y = selective_scan(x, dt, A = -exp(A_log), B, C, D)
    out = out_proj(y * act(z)) -> dropout -> + hidden

With ``scan: fused`` and ``activation: silu`` the conv and its SiLU are one kernel, and dt_proj's
bias, the softplus, the scan, the ``D`` skip and the gate ``y * silu(z)`` another
(``gated_selective_scan``), whose backward recomputes dt, y and silu(z) instead of keeping them.

A block's decode state is ``(conv, ssm)``: the last ``k - 1`` inputs of the convolution
``(b, d_inner, k - 1)`` and the SSM state ``(b, d_inner, n)``. Neither grows with the sequence.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.model import kernels
from sigerlm.model.config import SigerConfig
from sigerlm.model.conv import causal_conv_act, causal_conv_silu, next_conv_state
from sigerlm.model.fused import fused_mixer, norm_in_proj
from sigerlm.model.scan import gated_selective_scan, selective_scan

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


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = kernels.load().rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)  # x and one float a row, not x * rstd
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dweight = kernels.load().rms_norm_backward(dy, x, weight, rstd)
        return dx, dweight, None


def norm_eps(norm: nn.RMSNorm, x: Tensor) -> float:
    """The epsilon ``norm`` applies to ``x``: its own, or the dtype's machine epsilon (torch's default)."""
    return norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps


def fused_rms_norm(x: Tensor, norm: nn.RMSNorm) -> Tensor:
    """``norm(x)`` through the compiled kernel: one pass forward and one backward, keeping ``x``
    and one float a row where torch's composite RMSNorm keeps ``x``, ``x * rstd`` and ``rstd``."""
    return _RMSNorm.apply(x.contiguous(), norm.weight, norm_eps(norm, x))


def eager_cpu(*tensors: Tensor) -> bool:
    """Plain CPU float32/float64 tensors (or parameters) of one dtype, without gradients and outside
    tracing, export and torch.compile: where a compiled inference kernel may replace torch ops
    (exported and compiled graphs see the torch ops)."""
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    dtype = tensors[0].dtype
    return (
        not torch.compiler.is_compiling()
        and dtype in (torch.float32, torch.float64)
        and all(type(t) in (Tensor, nn.Parameter) and t.device.type == "cpu" and t.dtype == dtype for t in tensors)
    )


def plain(module: nn.Module, kind: type, bias: bool | None = None) -> bool:
    """``module`` is exactly ``kind`` (not a LoRA or quantized wrapper), without hooks (forward or
    backward), and with (``bias=True``) or without (``False``) a bias when that is given."""
    return (
        type(module) is kind
        and not (module._forward_hooks or module._forward_pre_hooks)
        and not (module._backward_hooks or module._backward_pre_hooks)
        and (bias is None or (getattr(module, "bias", None) is not None) == bias)
    )


def uses_fused_norm(norm: nn.Module, x: Tensor) -> bool:
    """The compiled RMSNorm applies to a plain ``nn.RMSNorm`` over the last dimension with a
    weight and no hooks, on CPU float32 or float64 tensors."""
    return (
        plain(norm, nn.RMSNorm)
        and norm.weight is not None
        and len(norm.normalized_shape) == 1
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dtype == norm.weight.dtype
    )


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
        # the fused back-end also fuses the convolution with its activation (SiLU only)
        self.fused_conv = config.scan == "fused" and config.activation == "silu"
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

    def _ssm_inputs_pre(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """dt_proj's output before its bias (the bias and softplus go into the fused kernel),
        the bias, B and C. A dt_proj that is not a plain ``nn.Linear`` (a LoRA wrapper, a
        quantized layer) or that carries hooks runs whole, and the kernel adds no bias."""
        x_dbl = self.x_proj(x)  # (b, l, r + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        proj = self.dt_proj
        if type(proj) is nn.Linear and not (proj._forward_hooks or proj._forward_pre_hooks):
            return F.linear(dt, proj.weight), proj.bias, B, C  # (b, l, d_inner), (d_inner,)
        return proj(dt), None, B, C

    def forward(self, hidden_states: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        return self.mix(self.in_proj(hidden_states), state)

    def fuses_whole(self, x: Tensor) -> bool:
        """conv to out_proj run as one autograd function (``sigerlm.model.fused``): the fused
        back-end, CPU float32/64, and the plain modules whose weights it reads."""
        return (
            self.fused_conv
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and plain(self.conv1d, nn.Conv1d, bias=True)
            and plain(self.x_proj, nn.Linear, bias=False)
            and plain(self.dt_proj, nn.Linear, bias=True)
            and plain(self.out_proj, nn.Linear, bias=False)
        )

    def mix(self, xz: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        """Everything after ``in_proj``: its output ``xz`` (b, l, 2 * d_inner) to (b, l, d)."""
        x, z = xz.chunk(2, dim=-1)  # (b, l, d_inner) each
        conv_state = state[0] if state is not None else None
        new_conv_state = next_conv_state(x, conv_state, self.d_conv)  # (b, d_inner, k - 1)
        ssm_state = None if state is None else state[1]
        if xz.shape[1] > 0 and self.fuses_whole(xz):
            conv, A = self.conv1d, -torch.exp(self.A_log.to(xz.dtype))
            out, ssm_state = fused_mixer(
                xz, conv.weight, conv.bias, conv_state, self.x_proj.weight, self.dt_proj.weight,
                self.dt_proj.bias, A, self.D, self.out_proj.weight, ssm_state, self.dt_rank,
            )  # fmt: skip
            return out, (new_conv_state, ssm_state)
        if self.fused_conv:
            x = causal_conv_silu(x, self.conv1d.weight, self.conv1d.bias, conv_state)  # (b, l, d_inner)
        else:
            x = causal_conv_act(x, self.conv1d.weight, self.conv1d.bias, conv_state, self.act)  # (b, l, d_inner)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        if self.fused_conv:  # softplus, scan, D skip and SiLU gate in one kernel, forward and backward
            dt_pre, dt_bias, B, C = self._ssm_inputs_pre(x)
            y, ssm_state = gated_selective_scan(
                x, dt_pre, dt_bias, A, B, C, self.D, z, ssm_state, backend=self.scan
            )  # (b, l, d_inner) gated, (b, d_inner, n)
        else:
            dt, B, C = self._ssm_inputs(x)
            y, ssm_state = selective_scan(
                x, dt, A, B, C, self.D, ssm_state, backend=self.scan
            )  # (b, l, d_inner), (b, d_inner, n)
            y = y * self.act(z)
        return self.out_proj(y), (new_conv_state, ssm_state)  # (b, l, d)

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> SSMState:
        device = device or self.A_log.device
        dtype = dtype or self.A_log.dtype
        return (
            torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def _compiled_step_applies(self, xz: Tensor, state: SSMState, *weights: Tensor) -> bool:
        """The compiled step (``mixer_step``) runs for inference on plain CPU tensors with the fused
        back-end, never while tracing or exporting (ONNX, torch.export, torch.compile see the
        torch ops below) and only when x_proj, dt_proj and conv1d are the plain modules whose
        weights it reads (a LoRA or quantized wrapper runs the torch ops), nor ``weights`` either."""
        return (
            self.fused_conv
            and eager_cpu(xz, *state, self.A_log, *weights)
            and plain(self.x_proj, nn.Linear, bias=False)
            and plain(self.dt_proj, nn.Linear)
            and plain(self.conv1d, nn.Conv1d, bias=True)
        )

    def step(self, hidden_states: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        """One position: ``(b, d)`` in, ``(b, d)`` out; cost independent of what came before."""
        conv_state, h = state
        xz = self.in_proj(hidden_states)  # (b, 2 * d_inner)
        if self._compiled_step_applies(xz, state):  # conv to gate in one call, same math as below
            y, conv_state, h = kernels.load().mixer_step(
                xz,
                conv_state,
                h,
                self.conv1d.weight,
                self.conv1d.bias,
                self.x_proj.weight,
                self.dt_proj.weight,
                self.dt_proj.bias,
                self.A_log,
                self.D,
            )  # (b, d_inner), (b, d_inner, k - 1), (b, d_inner, n)
            return self.out_proj(y), (conv_state, h)
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
        self.fused_norm = config.scan == "fused"  # the compiled RMSNorm, where it applies

    def forward(self, hidden_states: Tensor, state: SSMState | None = None, return_state: bool = False):
        fused = self.fused_norm and uses_fused_norm(self.norm, hidden_states)
        mixer = self.mixer
        if fused and plain(mixer, SSMMixer) and plain(mixer.in_proj, nn.Linear, bias=False):
            # norm and in_proj as one autograd function that keeps the input, not the normed rows
            eps = norm_eps(self.norm, hidden_states)
            xz = norm_in_proj(hidden_states, self.norm.weight, eps, mixer.in_proj.weight)  # (b, l, 2 * d_inner)
            out, new_state = mixer.mix(xz, state)
        else:
            normed = fused_rms_norm(hidden_states, self.norm) if fused else self.norm(hidden_states)  # (b, l, d)
            out, new_state = mixer(normed, state)
        hidden_states = hidden_states + self.dropout(out)
        return (hidden_states, new_state) if return_state else hidden_states

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> SSMState:
        return self.mixer.init_state(batch_size, device, dtype)

    def step(self, hidden_states: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        mixer = self.mixer
        if (
            hidden_states.shape[0] <= kernels.ROW_KERNEL_ROWS
            and self.fused_norm
            and uses_fused_norm(self.norm, hidden_states)
            and plain(mixer, SSMMixer)
            and plain(mixer.in_proj, nn.Linear, bias=False)
            and plain(mixer.out_proj, nn.Linear, bias=False)
            and mixer._compiled_step_applies(hidden_states, state, mixer.in_proj.weight, mixer.out_proj.weight)
        ):  # the whole block in one compiled call (norm, in_proj, conv to gate, out_proj, residual)
            conv, x_proj, dt_proj, eps = mixer.conv1d, mixer.x_proj, mixer.dt_proj, norm_eps(self.norm, hidden_states)
            hidden_states, conv_state, ssm_state = kernels.load().block_step(
                hidden_states, *state, self.norm.weight, eps, mixer.in_proj.weight, conv.weight, conv.bias,
                x_proj.weight, dt_proj.weight, dt_proj.bias, mixer.A_log, mixer.D, mixer.out_proj.weight,
            )  # fmt: skip
            return hidden_states, (conv_state, ssm_state)
        if self.fused_norm and eager_cpu(hidden_states) and uses_fused_norm(self.norm, hidden_states):
            normed = fused_rms_norm(hidden_states, self.norm)  # (b, d), inference: no graph
        else:
            normed = self.norm(hidden_states)  # (b, d)
        out, state = self.mixer.step(normed, state)
        return hidden_states + out, state


def ssm_block(config: SigerConfig, layer_idx: int) -> SSMBlock:
    """The selective-SSM block (Mamba order and names)."""
    return SSMBlock(config, layer_idx)
