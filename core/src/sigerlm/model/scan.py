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
- ``fused``: a C++ kernel (``csrc/selective_scan.cpp``) compiled on first use with the
  machine's compiler; forward and backward keep each state in cache and store it every 32
  positions. The fast default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sigerlm.errors import SigerError

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
    for u_t, dt_t, B_t, C_t in zip(u.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
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
_extension: Any = None
_extension_lock = threading.Lock()


def _cpu_tag() -> str:
    """A tag of this CPU's features: the kernel is compiled for the machine it runs on."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = os.uname().machine
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def load_fused_kernel() -> Any:
    """Compile (once per machine, cached by torch) and load the fused kernel."""
    global _extension
    if _extension is not None:
        return _extension
    with _extension_lock:
        if _extension is not None:
            return _extension
        source = Path(__file__).with_name("csrc") / "selective_scan.cpp"
        digest = hashlib.sha1(source.read_bytes()).hexdigest()[:8]
        name = f"sigerlm_scan_{digest}_{_cpu_tag()}"
        try:
            from torch.utils import cpp_extension

            log.info("loading the fused selective-scan kernel %s (compiled on first use, about a minute)", name)
            _extension = cpp_extension.load(
                name=name,
                sources=[str(source)],
                extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp", "-std=c++17"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # a missing compiler or ninja, a failed build
            raise ScanBackendError(
                f"the 'fused' scan needs a C++ compiler (g++) and the ninja package to build its kernel, and "
                f"building failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}. "
                "Install g++ (apt-get install g++) and ninja (pip install ninja), or set the model's scan to 'chunked'"
            ) from exc
        return _extension


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, state):  # noqa: ANN001, ANN205
        kernel = load_fused_kernel()
        save = any(ctx.needs_input_grad)
        outputs = kernel.forward(u, dt, A, B, C, D, state, save)
        if save:
            y, last, stored = outputs
            ctx.save_for_backward(u, dt, A, B, C, D, stored)
            ctx.has_state = state is not None
        else:
            y, last = outputs
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):  # noqa: ANN001, ANN205
        u, dt, A, B, C, D, stored = ctx.saved_tensors
        du, ddt, dA, dB, dC, dD, dstate = load_fused_kernel().backward(
            dy.contiguous(), u, dt, A, B, C, D, stored, dlast
        )
        return du, ddt, dA, dB, dC, dD, dstate if ctx.has_state else None


def selective_scan_fused(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The fused C++ kernel (CPU tensors of float32 or float64)."""
    if u.device.type != "cpu":
        raise ScanBackendError(f"the 'fused' scan runs on the CPU; this tensor is on {u.device}: use scan 'chunked'")
    if u.dtype not in (torch.float32, torch.float64):
        raise ScanBackendError(f"the 'fused' scan takes float32 or float64, not {u.dtype}")
    args = [t.contiguous() for t in (u, dt, A, B, C, D)]
    return _FusedScan.apply(*args, None if state is None else state.contiguous())


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
