"""The compiled kernels as autograd functions, each the same values as the torch ops it replaces.

Glossary: ``b`` batch, ``l`` length, ``d`` channels (``d_inner``), ``n`` state size, ``k``
conv width.

- ``selective_scan_fused``: the scan (``sigerlm.model.scan``), keeping each state in cache and
  storing it every 16 positions for the backward;
- ``gated_selective_scan``: the scan with what surrounds it in the block,
  ``selective_scan(u, softplus(dt_pre + dt_bias), ...) * silu(z)``, one kernel forward and one
  backward; it keeps neither ``dt``, ``y`` nor ``silu(z)`` but recomputes them, so a block keeps
  three fewer ``(b, l, d)`` tensors (``gated_selective_scan_ref`` is its definition in torch ops);
- ``causal_conv_silu``: the causal depthwise conv and SiLU, reading the projection's output where
  it lies and writing the activation once (torch transposes, pads, convolves and activates);
- ``fused_rms_norm``: RMSNorm keeping its input and one float a row.

``eager_cpu`` and ``plain`` say where a compiled kernel may replace a module or torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.model.scan import ScanBackendError, selective_scan
from sigerlm_kernels import kernels


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


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, state, grad_mode):
        kernel = kernels.load()
        save = grad_mode and any(ctx.needs_input_grad)  # grad mode is off in here: the caller's
        outputs = kernel.scan_forward(u, dt, A, B, C, D, state, save)
        if save:
            y, last, stored = outputs
            ctx.save_for_backward(u, dt, A, B, C, D, stored)
            ctx.has_state = state is not None
        else:
            y, last = outputs
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, dt, A, B, C, D, stored = ctx.saved_tensors
        du, ddt, dA, dB, dC, dD, dstate = kernels.load().scan_backward(
            dy.contiguous(), u, dt, A, B, C, D, stored, dlast
        )
        return du, ddt, dA, dB, dC, dD, dstate if ctx.has_state else None, None


def selective_scan_fused(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The fused C++ kernel (CPU tensors of float32 or float64)."""
    if u.device.type != "cpu":
        raise ScanBackendError(f"the 'fused' scan runs on the CPU; this tensor is on {u.device}: use scan 'chunked'")
    if u.dtype not in (torch.float32, torch.float64):
        raise ScanBackendError(f"the 'fused' scan takes float32 or float64, not {u.dtype}")
    args = [t.contiguous() for t in (u, dt, A, B, C, D)]
    return _FusedScan.apply(*args, None if state is None else state.contiguous(), torch.is_grad_enabled())


class _FusedGatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt_pre, dt_bias, A, B, C, D, z, state, grad_mode):
        kernel = kernels.load()
        save = grad_mode and any(ctx.needs_input_grad)
        outputs = kernel.gated_scan_forward(u, dt_pre, dt_bias, A, B, C, D, z, state, save)
        if save:
            out, last, stored = outputs
            # dt, y and silu(z) are recomputed in backward: only the inputs and l/16 states are kept
            ctx.save_for_backward(u, dt_pre, dt_bias, A, B, C, D, z, stored)
            ctx.has_state = state is not None
        else:
            out, last = outputs
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, dt_pre, dt_bias, A, B, C, D, z, stored = ctx.saved_tensors
        du, ddt, dA, dB, dC, dD, dstate, dz, dbias = kernels.load().gated_scan_backward(
            dout.contiguous(), u, dt_pre, dt_bias, A, B, C, D, z, stored, dlast, False
        )
        return (
            du,
            ddt,
            dbias if dt_bias is not None else None,
            dA,
            dB,
            dC,
            dD,
            dz,
            dstate if ctx.has_state else None,
            None,
        )


def gated_selective_scan_ref(
    u: Tensor,
    dt_pre: Tensor,
    dt_bias: Tensor | None,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    state: Tensor | None = None,
    backend: str = "reference",
) -> tuple[Tensor, Tensor]:
    """The definition in torch ops: ``selective_scan(u, softplus(dt_pre + dt_bias), ...) * silu(z)``."""
    dt = F.softplus(dt_pre if dt_bias is None else dt_pre + dt_bias)  # (b, l, d)
    y, last = selective_scan(u, dt, A, B, C, D, state, backend=backend)  # (b, l, d), (b, d, n)
    return y * F.silu(z), last


def gated_selective_scan(
    u: Tensor,
    dt_pre: Tensor,
    dt_bias: Tensor | None,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    z: Tensor,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The block's scan with its surroundings: ``u``, ``dt_pre`` (dt_proj's output, before its
    bias when ``dt_bias`` is given), ``z`` (b, l, d); ``A`` (d, n); ``B``, ``C`` (b, l, n);
    ``D``, ``dt_bias`` (d,). Returns ``(selective_scan(u, softplus(dt_pre + dt_bias), ...) * silu(z),
    last_state)``. The ``fused`` back-end runs it as one kernel; the others as torch ops around
    their scan. ``z`` may be a strided view (the second half of ``in_proj``'s output)."""
    if u.shape[1] == 0:
        raise ValueError("selective scan: the sequence is empty")
    if u.device.type != "cpu":
        raise ScanBackendError(f"the 'fused' scan runs on the CPU; this tensor is on {u.device}: use scan 'chunked'")
    if u.dtype not in (torch.float32, torch.float64):
        raise ScanBackendError(f"the 'fused' scan takes float32 or float64, not {u.dtype}")
    if z.stride(-1) != 1:
        z = z.contiguous()
    args = [t.contiguous() for t in (u, dt_pre)]
    bias = None if dt_bias is None else dt_bias.contiguous()
    rest = [t.contiguous() for t in (A, B, C, D)]
    state = None if state is None else state.contiguous()
    return _FusedGatedScan.apply(*args, bias, *rest, z, state, torch.is_grad_enabled())
