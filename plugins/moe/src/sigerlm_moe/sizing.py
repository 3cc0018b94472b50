"""Adaptive MoE sizing: how many experts, how many per token and on which layers, decided at a
stage boundary (never mid-step) from the hardware and the dense stage's validation loss.

Hardware policy (the starting point):

| tier | when | experts | top_k | moe_every |
|---|---|---|---|---|
| ``cpu-small`` | no CUDA, at most 4 cores or under 16 GB RAM | 4 | 1 | 4 |
| ``cpu`` | no CUDA, more | 8 | 1 | 2 |
| ``cuda`` | one CUDA device under 40 GB | 8 | 2 | 2 |
| ``cuda-large`` | several devices or 40 GB and more | 16 | 2 | 1 |

Learning policy (then): a dense validation loss above ``unstable_loss``, or rising between its
last two evaluations, is *unstable*: halve the experts and route top-1; below
``mature_loss`` it is *mature*: double the experts. The result is clamped to ``[min_experts,
max_experts]``, and shrunk until the experts' weights, gradients and AdamW state fit in
``memory_fraction`` of the device memory. Torch-free (CUDA is asked about only by
``detect_hardware``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("sigerlm.moe")

TIERS: dict[str, tuple[int, int, int]] = {
    "cpu-small": (4, 1, 4),
    "cpu": (8, 1, 2),
    "cuda": (8, 2, 2),
    "cuda-large": (16, 2, 1),
}


@dataclass
class Hardware:
    cpu_cores: int
    ram_gb: float
    cuda_memory_gb: list[float] = field(default_factory=list)  # one entry per CUDA device


@dataclass
class Sizing:
    n_experts: int
    top_k: int
    moe_every: int
    tier: str
    loss_state: str  # unknown | unstable | baseline | mature
    reasons: list[str]

    def block_options(self) -> dict[str, int]:
        return {"n_experts": self.n_experts, "top_k": self.top_k, "moe_every": self.moe_every}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_hardware() -> Hardware:
    """This machine: CPU cores, RAM and every CUDA device's memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = 0.0
    cuda: list[float] = []
    try:
        import torch

        if torch.cuda.is_available():
            cuda = [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return Hardware(cores, round(ram, 1), [round(m, 1) for m in cuda])


def tier_of(hw: Hardware) -> str:
    if hw.cuda_memory_gb:
        return "cuda-large" if len(hw.cuda_memory_gb) > 1 or min(hw.cuda_memory_gb) >= 40 else "cuda"
    return "cpu-small" if hw.cpu_cores <= 4 or hw.ram_gb < 16 else "cpu"


def expert_memory_gb(n_experts: int, d_model: int, d_expert: int, n_moe_layers: int, kind: str = "swiglu") -> float:
    """fp32 weights, gradients and AdamW's two moments of every expert and router."""
    per_expert = (3 if kind == "swiglu" else 2) * d_model * d_expert
    params = n_moe_layers * (n_experts * per_expert + n_experts * d_model)
    return 16 * params / 2**30


def resolve_sizing(
    hw: Hardware,
    valid_losses: list[float] | None = None,
    *,
    min_experts: int = 2,
    max_experts: int = 16,
    unstable_loss: float = 6.0,
    mature_loss: float = 3.5,
    d_model: int = 384,
    n_layers: int = 10,
    d_expert: int | None = None,
    memory_fraction: float = 0.5,
) -> Sizing:
    """The sizing for ``hw`` and the dense stage's validation losses (oldest first)."""
    tier = tier_of(hw)
    experts, top_k, every = TIERS[tier]
    reasons = [
        f"hardware {hw.cpu_cores} cores, {hw.ram_gb} GB RAM, CUDA {hw.cuda_memory_gb or 'none'}: tier {tier} "
        f"({experts} experts, top-{top_k}, every {every})"
    ]
    state = "unknown"
    if valid_losses:
        latest = valid_losses[-1]
        rising = len(valid_losses) > 1 and latest > valid_losses[-2]
        if latest > unstable_loss or rising:
            state = "unstable"
            experts, top_k = max(min_experts, experts // 2), 1
            why = f"above {unstable_loss}" if latest > unstable_loss else f"rising from {valid_losses[-2]:.4f}"
            reasons.append(f"dense valid loss {latest:.4f} {why}: unstable, shrink to {experts} experts, top-1")
        elif latest < mature_loss:
            state = "mature"
            experts = experts * 2
            reasons.append(f"dense valid loss {latest:.4f} below {mature_loss}: mature, grow to {experts} experts")
        else:
            state = "baseline"
            reasons.append(f"dense valid loss {latest:.4f}: passes the gate, baseline capacity")
    else:
        reasons.append("no dense validation loss: hardware policy only")
    clamped = min(max(experts, min_experts), max_experts)
    if clamped != experts:
        reasons.append(f"{experts} experts clamped to [{min_experts}, {max_experts}]: {clamped}")
    experts = clamped
    memory = min(hw.cuda_memory_gb) if hw.cuda_memory_gb else hw.ram_gb
    n_moe = max(1, n_layers // every)
    width = d_expert or d_model
    while experts > min_experts and expert_memory_gb(experts, d_model, width, n_moe) > memory_fraction * memory:
        experts //= 2
        reasons.append(f"experts shrunk to {experts} to fit {memory_fraction:.0%} of {memory} GB")
    experts = max(experts, min_experts)
    top_k = min(top_k, experts)
    return Sizing(experts, top_k, every, tier, state, reasons)
