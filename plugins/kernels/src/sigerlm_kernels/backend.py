"""The ``fused`` scan back-end: core's SSM block run through the compiled kernels.

Core's ``SSMBlock`` hands itself to ``FUSED.forward`` and ``FUSED.step`` (the contract is in
``sigerlm.model.block``). Each path below computes what the block's torch ops compute:

- training and prefill: RMSNorm and ``in_proj`` as one autograd function, then conv to
  ``out_proj`` as another (``sigerlm_kernels.fused``), where the modules are the plain ones whose
  weights they read; a LoRA-wrapped or hooked module is called as a module, and the conv + SiLU
  and gated-scan kernels still run around it;
- one decode position: the whole block in one call (``block_step``, up to ``ROW_KERNEL_ROWS``
  rows), or the mixer from conv to gate (``mixer_step``), in eager CPU inference; anything else
  (tracing, export, torch.compile, wrapped modules) runs the block's torch ops.

A mixer with hooks of its own (none in SigerLM) is called as a module and runs core's torch ops
around the fused scan.

The conv and the gated scan are SiLU kernels: with another ``activation`` the block's torch ops
run, with the fused scan alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.model.block import SSMBlock, SSMMixer, SSMState
from sigerlm.model.conv import next_conv_state
from sigerlm_kernels import kernels
from sigerlm_kernels.fused import fused_mixer, norm_in_proj
from sigerlm_kernels.ops import (
    causal_conv_silu,
    eager_cpu,
    fused_rms_norm,
    gated_selective_scan,
    norm_eps,
    plain,
    selective_scan_fused,
    uses_fused_norm,
)


def _silu(mixer: SSMMixer) -> bool:
    return mixer.act is F.silu


def fuses_whole(mixer: SSMMixer, xz: Tensor) -> bool:
    """conv to out_proj as one autograd function: CPU float32/64 and the plain modules it reads."""
    return (
        _silu(mixer)
        and xz.shape[1] > 0
        and xz.device.type == "cpu"
        and xz.dtype in (torch.float32, torch.float64)
        and plain(mixer.conv1d, nn.Conv1d, bias=True)
        and plain(mixer.x_proj, nn.Linear, bias=False)
        and plain(mixer.dt_proj, nn.Linear, bias=True)
        and plain(mixer.out_proj, nn.Linear, bias=False)
    )


def _ssm_inputs_pre(mixer: SSMMixer, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """dt_proj's output before its bias (the bias and softplus go into the gated kernel), the
    bias, B and C. A dt_proj that is not a plain ``nn.Linear`` (a LoRA wrapper, a quantized
    layer) or that carries hooks runs whole, and the kernel adds no bias."""
    dt, B, C = torch.split(mixer.x_proj(x), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    if plain(mixer.dt_proj, nn.Linear):
        return F.linear(dt, mixer.dt_proj.weight), mixer.dt_proj.bias, B, C  # (b, l, d_inner), (d_inner,)
    return mixer.dt_proj(dt), None, B, C


def mix(mixer: SSMMixer, xz: Tensor, state: SSMState | None) -> tuple[Tensor, SSMState]:
    """``mixer.mix(xz, state)`` (everything after ``in_proj``) through the kernels."""
    if not _silu(mixer):
        return mixer.mix(xz, state)  # torch ops around the fused scan
    x, z = xz.chunk(2, dim=-1)  # (b, l, d_inner) each
    conv_state = state[0] if state is not None else None
    new_conv_state = next_conv_state(x, conv_state, mixer.d_conv)  # (b, d_inner, k - 1)
    ssm_state = None if state is None else state[1]
    if fuses_whole(mixer, xz):
        conv, A = mixer.conv1d, -torch.exp(mixer.A_log.to(xz.dtype))
        out, ssm_state = fused_mixer(
            xz, conv.weight, conv.bias, conv_state, mixer.x_proj.weight, mixer.dt_proj.weight,
            mixer.dt_proj.bias, A, mixer.D, mixer.out_proj.weight, ssm_state, mixer.dt_rank,
        )  # fmt: skip
        return out, (new_conv_state, ssm_state)
    x = causal_conv_silu(x, mixer.conv1d.weight, mixer.conv1d.bias, conv_state)  # (b, l, d_inner)
    A = -torch.exp(mixer.A_log.float())  # (d_inner, n)
    dt_pre, dt_bias, B, C = _ssm_inputs_pre(mixer, x)
    y, ssm_state = gated_selective_scan(x, dt_pre, dt_bias, A, B, C, mixer.D, z, ssm_state)  # gated (b, l, d_inner)
    return mixer.out_proj(y), (new_conv_state, ssm_state)  # (b, l, d)


def compiled_step_applies(mixer: SSMMixer, x: Tensor, state: SSMState, *weights: Tensor) -> bool:
    """``mixer_step`` runs in inference on plain CPU tensors, never while tracing or exporting
    (ONNX, torch.export, torch.compile see the torch ops) and only when x_proj, dt_proj and conv1d
    are the plain modules whose weights it reads (a LoRA or quantized wrapper runs the torch ops)."""
    return (
        _silu(mixer)
        and eager_cpu(x, *state, mixer.A_log, *weights)
        and plain(mixer.x_proj, nn.Linear, bias=False)
        and plain(mixer.dt_proj, nn.Linear)
        and plain(mixer.conv1d, nn.Conv1d, bias=True)
    )


class FusedKernels:
    """The ``fused`` scan back-end (entry point ``sigerlm.scans``: ``fused = "sigerlm_kernels.backend:FUSED"``)."""

    def selective_scan(self, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Any = None):
        return selective_scan_fused(u, dt, A, B, C, D, state)

    def forward(self, block: SSMBlock, hidden: Tensor, state: SSMState | None) -> tuple[Tensor, SSMState]:
        """``block.mixer(block.norm(hidden), state)``: ``(b, l, d)`` -> ``(b, l, d)`` and the state."""
        norm, mixer = block.norm, block.mixer
        fused_norm = uses_fused_norm(norm, hidden)
        if fused_norm and plain(mixer, SSMMixer) and plain(mixer.in_proj, nn.Linear, bias=False):
            # norm and in_proj as one autograd function that keeps the input, not the normed rows
            return mix(mixer, norm_in_proj(hidden, norm.weight, norm_eps(norm, hidden), mixer.in_proj.weight), state)
        normed = fused_rms_norm(hidden, norm) if fused_norm else norm(hidden)  # (b, l, d)
        if not plain(mixer, SSMMixer):  # a hooked mixer runs as a module: its torch ops, the fused scan
            return mixer(normed, state)
        return mix(mixer, mixer.in_proj(normed), state)

    def step(self, block: SSMBlock, hidden: Tensor, state: SSMState) -> tuple[Tensor, SSMState] | None:
        """One position ``(b, d)`` through the whole block, or None where the kernels do not apply."""
        norm, mixer = block.norm, block.mixer
        if not isinstance(mixer, SSMMixer):
            return None
        fused_norm = eager_cpu(hidden) and uses_fused_norm(norm, hidden)
        if (
            fused_norm
            and hidden.shape[0] <= kernels.ROW_KERNEL_ROWS
            and plain(mixer, SSMMixer)
            and plain(mixer.in_proj, nn.Linear, bias=False)
            and plain(mixer.out_proj, nn.Linear, bias=False)
            and compiled_step_applies(mixer, hidden, state, mixer.in_proj.weight, mixer.out_proj.weight)
        ):  # norm, in_proj, conv to gate, out_proj and the residual in one compiled call
            conv, x_proj, dt_proj = mixer.conv1d, mixer.x_proj, mixer.dt_proj
            hidden, conv_state, ssm_state = kernels.load().block_step(
                hidden, *state, norm.weight, norm_eps(norm, hidden), mixer.in_proj.weight, conv.weight, conv.bias,
                x_proj.weight, dt_proj.weight, dt_proj.bias, mixer.A_log, mixer.D, mixer.out_proj.weight,
            )  # fmt: skip
            return hidden, (conv_state, ssm_state)
        normed = fused_rms_norm(hidden, norm) if fused_norm else norm(hidden)  # (b, d); inference: no graph
        if not compiled_step_applies(mixer, hidden, state):
            out, state = mixer.step(normed, state)  # the torch ops
            return hidden + out, state
        conv, x_proj, dt_proj = mixer.conv1d, mixer.x_proj, mixer.dt_proj
        y, conv_state, ssm_state = kernels.load().mixer_step(
            mixer.in_proj(normed), *state, conv.weight, conv.bias, x_proj.weight, dt_proj.weight, dt_proj.bias,
            mixer.A_log, mixer.D,
        )  # fmt: skip  # (b, d_inner), (b, d_inner, k - 1), (b, d_inner, n)
        return hidden + mixer.out_proj(y), (conv_state, ssm_state)

    def __reduce__(self) -> str:
        return "FUSED"  # copies and pickles of a model keep the one back-end object


#: the back-end object core's blocks use for ``scan: fused``
FUSED = FusedKernels()
