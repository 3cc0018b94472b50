"""The SSM block's training path as two autograd functions that keep little for the backward.

Glossary as in core's ``sigerlm.model.block``: ``b`` batch, ``l`` length, ``d`` model width, ``di``
(``d_inner``), ``n`` state size, ``r`` dt rank, ``R = r + 2n``.

Composed of modules, a block keeps per position ``norm``'s output (for ``in_proj``'s weight
gradient), the conv output (for ``x_proj`` and the scan), ``dt_proj``'s output (for the scan)
and the gated output (for ``out_proj``): ``d + 3 di`` floats beside the ``d + 2 di`` that
cannot be avoided (the block's input, ``in_proj``'s output) and the scan's stored states. Here:

- ``norm_in_proj``: RMSNorm then ``in_proj``, keeping the input and one float a row; the
  backward recomputes the normalised rows (one pass) for ``in_proj``'s weight gradient.
- ``fused_mixer``: conv + SiLU, ``x_proj``, ``dt_proj``, the gated scan and ``out_proj``, keeping
  ``in_proj``'s output, ``x_proj``'s small ``(b, l, R)`` output and the scan's states every 16
  positions; the backward recomputes the conv output and ``dt_proj``'s output (a rank-``r``
  product), and the scan's backward kernel writes the gated output on its way for ``out_proj``.

Both compute exactly what the module composition computes (the same kernels and products, in the
same order), so the forward is bit-for-bit the same; gradients agree to rounding. The block uses
them only where every module involved is the plain one whose weights they read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from sigerlm_kernels import kernels


def _flat(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1])


class _NormInProj(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, eps, w_in):
        normed, rstd = kernels.load().rms_norm_forward(x, norm_weight, eps)
        ctx.save_for_backward(x, norm_weight, rstd, w_in)
        ctx.eps = eps
        return F.linear(normed, w_in)  # (b, l, 2 di)

    @staticmethod
    @once_differentiable
    def backward(ctx, dxz):
        x, norm_weight, rstd, w_in = ctx.saved_tensors
        kernel = kernels.load()
        dxz = dxz.contiguous()
        dw_in = None
        if ctx.needs_input_grad[3]:  # a frozen in_proj needs no normed rows
            normed, _ = kernel.rms_norm_forward(x, norm_weight, ctx.eps)  # recomputed: one pass
            dw_in = _flat(dxz).t().mm(_flat(normed))  # (2 di, d)
        dx, dnorm_weight = kernel.rms_norm_backward(dxz.matmul(w_in), x, norm_weight, rstd)
        return dx, dnorm_weight, None, dw_in


def norm_in_proj(x: Tensor, norm_weight: Tensor, eps: float, w_in: Tensor) -> Tensor:
    """``F.linear(rms_norm(x), w_in)`` keeping ``x`` and one float a row for the backward."""
    return _NormInProj.apply(x.contiguous(), norm_weight, eps, w_in)


class _FusedMixer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, conv_state, w_x, w_dt, b_dt, A, D, w_out, ssm_state, r, grad_mode):
        kernel = kernels.load()
        di = xz.shape[-1] // 2
        x, z = xz[..., :di], xz[..., di:]  # strided views, read in place by the kernels
        u = kernel.conv_silu_forward(x, conv_w, conv_b, conv_state)  # (b, l, di)
        x_dbl = F.linear(u, w_x)  # (b, l, R)
        n = (x_dbl.shape[-1] - r) // 2
        dt_low, B, C = torch.split(x_dbl, [r, n, n], dim=-1)
        dt_pre = F.linear(dt_low, w_dt)  # (b, l, di), before its bias
        save = grad_mode and any(ctx.needs_input_grad)  # grad mode is off in here: the caller's
        outputs = kernel.gated_scan_forward(u, dt_pre, b_dt, A, B.contiguous(), C.contiguous(), D, z, ssm_state, save)
        if save:
            ctx.save_for_backward(xz, conv_w, conv_b, conv_state, w_x, w_dt, b_dt, A, D, w_out, x_dbl, outputs[2])
            ctx.r, ctx.n, ctx.has_state = r, n, ssm_state is not None
        return F.linear(outputs[0], w_out), outputs[1]  # (b, l, d), (b, di, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):
        need = ctx.needs_input_grad
        xz, conv_w, conv_b, conv_state, w_x, w_dt, b_dt, A, D, w_out, x_dbl, stored = ctx.saved_tensors
        kernel, r, n = kernels.load(), ctx.r, ctx.n
        di = xz.shape[-1] // 2
        x, z = xz[..., :di], xz[..., di:]
        u = kernel.conv_silu_forward(x, conv_w, conv_b, conv_state)  # recomputed
        dt_low, B, C = torch.split(x_dbl, [r, n, n], dim=-1)
        dt_pre = F.linear(dt_low, w_dt)  # recomputed
        dout = dout.contiguous()
        du, ddt, dA, dB, dC, dD, dstate, dz, dbias, gated = kernel.gated_scan_backward(
            dout.matmul(w_out), u, dt_pre, b_dt, A, B.contiguous(), C.contiguous(), D, z, stored, dlast, True
        )
        # each (b, l, di) temporary is dropped as soon as it is used: a backward's peak is one
        # block's temporaries on top of every block's saved tensors
        del dt_pre
        dw_out = _flat(dout).t().mm(_flat(gated)) if need[9] else None  # (d, di)
        del gated
        dw_dt = _flat(ddt).t().mm(_flat(dt_low)) if need[5] else None  # (di, r)
        dx_dbl = torch.cat([ddt.matmul(w_dt), dB, dC], dim=-1)  # (b, l, R)
        del ddt
        dw_x = _flat(dx_dbl).t().mm(_flat(u)) if need[4] else None  # (R, di)
        del u
        _flat(du).addmm_(_flat(dx_dbl), w_x)  # x_proj's share of the conv output's gradient
        dx, dconv_w, dconv_b, dconv_state = kernel.conv_silu_backward(du, x, conv_w, conv_b, conv_state)
        del du
        return (
            torch.cat([dx, dz], dim=-1),
            dconv_w,
            dconv_b,
            dconv_state if conv_state is not None else None,
            dw_x,
            dw_dt,
            dbias if b_dt is not None else None,
            dA,
            dD,
            dw_out,
            dstate if ctx.has_state else None,
            None,
            None,
        )


def fused_mixer(
    xz: Tensor,
    conv_w: Tensor,
    conv_b: Tensor,
    conv_state: Tensor | None,
    w_x: Tensor,
    w_dt: Tensor,
    b_dt: Tensor,
    A: Tensor,
    D: Tensor,
    w_out: Tensor,
    ssm_state: Tensor | None,
    r: int,
) -> tuple[Tensor, Tensor]:
    """From ``in_proj``'s output ``xz`` (b, l, 2 di) to ``out_proj``'s output (b, l, d) and the
    last SSM state (b, di, n): conv + SiLU (``conv_w`` (di, 1, k), ``conv_state`` (b, di, k - 1)),
    ``x_proj`` (``w_x`` (R, di), no bias), ``dt_proj`` (``w_dt`` (di, r), ``b_dt`` (di,)), the
    gated scan (``A`` (di, n), ``D`` (di,), ``ssm_state`` (b, di, n)) and ``out_proj`` (``w_out``
    (d, di), no bias)."""
    states = [None if s is None else s.contiguous() for s in (conv_state, ssm_state)]
    return _FusedMixer.apply(
        xz if xz.stride(-1) == 1 else xz.contiguous(), conv_w, conv_b, states[0], w_x, w_dt,
        None if b_dt is None else b_dt.contiguous(), A.contiguous(), D.contiguous(), w_out, states[1], r,
        torch.is_grad_enabled(),  # a no-grad prefill keeps no scan states
    )  # fmt: skip
