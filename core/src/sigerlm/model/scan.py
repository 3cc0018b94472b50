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
- a back-end an installed package names (entry-point group ``sigerlm.scans``, or
  ``sigerlm.model.config.register_scan``): an object whose ``selective_scan`` this dispatches
  to, and which runs whole blocks (``sigerlm.model.block``). ``fused``, the default, comes with
  sigerlm-kernels: compiled C++ kernels for the CPU.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor

from sigerlm.errors import SigerError
from sigerlm.model.config import scan_backends

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


SCANS = {"reference": selective_scan_ref, "chunked": selective_scan_chunked}
_loaded: dict[str, Any] = {}


def scan_backend(name: str) -> Any:
    """The back-end object named ``name`` (imported on first use), or None for core's scans."""
    if name in SCANS:
        return None
    backends = scan_backends()
    if name not in backends:
        hint = " (sigerlm-kernels provides it: pip install sigerlm-kernels)" if name == "fused" else ""
        raise ScanBackendError(f"unknown scan back-end '{name}'; back-ends: {', '.join((*SCANS, *backends))}{hint}")
    if backends[name] not in _loaded:
        module, _, attribute = backends[name].partition(":")
        _loaded[backends[name]] = getattr(importlib.import_module(module), attribute)
    return _loaded[backends[name]]


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
    if u.shape[1] == 0:
        raise ValueError("selective scan: the sequence is empty")
    fn = SCANS.get(backend) or scan_backend(backend).selective_scan
    return fn(u, dt, A, B, C, D, state)
