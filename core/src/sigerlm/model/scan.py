"""Selective scans: the recurrence at the heart of the SSM block, with three back-ends.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` channels (``d_inner``), ``n`` state size.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t
    y_t = <C_t, h_t> + D * u_t

Shapes: ``u``, ``dt`` and ``y`` are ``(b, l, d)``; ``A`` is ``(d, n)``; ``B`` and ``C`` are
``(b, l, n)``; ``D`` is ``(d,)``; a state is ``(b, d, n)``. ``dt`` is already positive (the
caller applies softplus).

Back-ends (``SigerConfig.scan``; the choice is explicit and logged, never a silent fallback):

- ``reference``: the plain loop over positions, kept as the readable definition;
- ``chunked``: the same loop in pure PyTorch, checkpointed per chunk so that training memory
  is bounded by a chunk, not by the whole ``(b, l, d, n)`` tensor; works wherever torch does;
- ``fused``: a C++ kernel (``csrc/kernels.cpp``, see ``sigerlm.model.kernels``) compiled on
  first use with the machine's compiler; forward and backward keep each state in cache and store it every 16
  positions. The fast default.

The block calls ``gated_selective_scan``: the scan together with what surrounds it in the block,

    dt = softplus(dt_pre + dt_bias);  out = selective_scan(u, dt, ...) * silu(z)

whose ``fused`` back-end is one kernel in forward and one in backward: it keeps neither ``dt``,
``y`` nor ``silu(z)`` for backward but recomputes them there, so a block keeps three fewer
``(b, l, d)`` tensors. ``gated_selective_scan_ref`` is its definition in plain torch ops, on
top of any of the three scans.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from sigerlm.errors import SigerError
from sigerlm.model import kernels

log = logging.getLogger("sigerlm.model")

CHUNK = 64  # positions per checkpointed chunk in the chunked back-end


class ScanBackendError(SigerError):
    """A scan back-end cannot be used here; the message says what to install or choose."""


def selective_scan_ref(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The readable definition: one position at a time. Returns ``(y, last_state)``."""
    b, l, d = u.shape
    h = state if state is not None else u.new_zeros(b, d, A.shape[1])  # (b, d, n)
    ys = []
    for u_t, dt_t, B_t, C_t in zip(u.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), strict=True):
        decay = torch.exp(dt_t.unsqueeze(-1) * A)  # (b, d, n)
        h = decay * h + (dt_t * u_t).unsqueeze(-1) * B_t.unsqueeze(1)  # (b, d, n)
        ys.append((h * C_t.unsqueeze(1)).sum(-1) + D * u_t)  # (b, d)
    return torch.stack(ys, dim=1), h  # (b, l, d), (b, d, n)


def _scan_chunk(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return selective_scan_ref(u, dt, A, B, C, D, h)


def selective_scan_chunked(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The reference loop, recomputed chunk by chunk in backward (pure PyTorch)."""
    from torch.utils.checkpoint import checkpoint

    b, l, d = u.shape
    h = state if state is not None else u.new_zeros(b, d, A.shape[1])
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (u, dt, A, B, C, D, h)):
        return selective_scan_ref(u, dt, A, B, C, D, h)
    ys = []
    for start in range(0, l, CHUNK):
        part = slice(start, start + CHUNK)
        y, h = checkpoint(_scan_chunk, u[:, part], dt[:, part], A, B[:, part], C[:, part], D, h, use_reentrant=False)
        ys.append(y)
    return torch.cat(ys, dim=1), h


# -- the fused C++ kernel ------------------------------------------------------------------------
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
    backend: str = "fused",
) -> tuple[Tensor, Tensor]:
    """The block's scan with its surroundings: ``u``, ``dt_pre`` (dt_proj's output, before its
    bias when ``dt_bias`` is given), ``z`` (b, l, d); ``A`` (d, n); ``B``, ``C`` (b, l, n);
    ``D``, ``dt_bias`` (d,). Returns ``(selective_scan(u, softplus(dt_pre + dt_bias), ...) * silu(z),
    last_state)``. The ``fused`` back-end runs it as one kernel; the others as torch ops around
    their scan. ``z`` may be a strided view (the second half of ``in_proj``'s output)."""
    if backend != "fused":
        return gated_selective_scan_ref(u, dt_pre, dt_bias, A, B, C, D, z, state, backend=backend)
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


SCANS = {"reference": selective_scan_ref, "chunked": selective_scan_chunked, "fused": selective_scan_fused}


def selective_scan(
    u: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state: Tensor | None = None,
    backend: str = "fused",
) -> tuple[Tensor, Tensor]:
    """Run the scan with the named back-end. Returns ``(y, last_state)``."""
    try:
        fn = SCANS[backend]
    except KeyError:
        raise ScanBackendError(f"unknown scan back-end '{backend}'; back-ends: {', '.join(SCANS)}") from None
    if u.shape[1] == 0:
        raise ValueError("selective scan: the sequence is empty")
    return fn(u, dt, A, B, C, D, state)
