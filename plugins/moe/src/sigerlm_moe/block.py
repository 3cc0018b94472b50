"""The sparse mixture-of-experts branch and the SSM block that carries it.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``t`` tokens (``b * l``),
``e`` experts, ``k`` experts per token (``top_k``), ``a`` assignments (``t * k``), ``h`` an
expert's hidden width (``d_expert``).

    hidden -> SSM block (the ``ssm`` block's tensors and names) -> hidden
    hidden -> hidden + dropout(experts(norm(hidden)))          (layers with the branch)

Routing: a linear router gives each token a softmax over the experts; the ``top_k`` best are
used, their weights renormalised to sum to one (top-1 keeps the raw probability, as Switch
does, so the language loss still trains the router). With a capacity factor, each expert
takes at most ``ceil(capacity_factor * t * k / e)`` assignments in training, first choices
before second choices and earlier tokens first; dropped assignments add nothing (the token
keeps its residual). Evaluation and decoding never drop, so ``step`` equals ``forward``.

Two dispatch paths compute the same function:

- ``grouped`` (fast): assignments are sorted by expert, each expert runs one matmul chain on
  its own tokens, and the weighted outputs are scatter-added back;
- ``masked`` (the readable reference): every expert runs on every token and a ``(t, e)``
  combine matrix that is zero outside the kept assignments mixes them.

The experts' output projections start at zero, so a freshly built branch adds nothing: a
dense model warm-started into this block computes exactly its dense function at step 0.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.model.block import SSMBlock, SSMState, make_norm, no_weight_decay
from sigerlm.model.config import SigerConfig

log = logging.getLogger("sigerlm.moe")


class Expert(nn.Module):
    """One feed-forward expert: SwiGLU ``down(silu(gate(x)) * up(x))`` or GELU ``down(gelu(up(x)))``.
    Plain ``nn.Linear`` layers, so LoRA can target ``gate``, ``up`` and ``down`` by name."""

    def __init__(self, d_model: int, d_expert: int, kind: str, device: Any = None, dtype: Any = None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.kind = kind
        if kind == "swiglu":
            self.gate = nn.Linear(d_model, d_expert, bias=False, **kw)
        self.up = nn.Linear(d_model, d_expert, bias=False, **kw)
        self.down = nn.Linear(d_expert, d_model, bias=False, **kw)
        nn.init.zeros_(self.down.weight)  # the branch starts as the identity of the residual stream

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))  # (t, d)
        return self.down(F.gelu(self.up(x)))  # (t, d)


class Routing:
    """Which experts each token uses: ``experts (t, k)``, ``weights (t, k)`` (zero where dropped),
    ``keep (t, k)`` and the router's ``probs (t, e)``."""

    def __init__(self, experts: Tensor, weights: Tensor, keep: Tensor, probs: Tensor):
        self.experts, self.weights, self.keep, self.probs = experts, weights, keep, probs


def capacity_keep(experts: Tensor, n_experts: int, capacity: int | None) -> Tensor:
    """``(t, k)`` bool: which assignments an expert with room for ``capacity`` takes, first
    choices before second choices and earlier tokens first."""
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    flat = experts.t().reshape(-1)  # (a,) choice-major: every first choice, then every second
    onehot = F.one_hot(flat, n_experts)  # (a, e)
    position = (onehot.cumsum(0) * onehot).sum(-1)  # (a,) 1-based place in its expert's queue
    return (position <= capacity).reshape(experts.shape[1], experts.shape[0]).t()  # (t, k)


def route(logits: Tensor, top_k: int, capacity: int | None) -> Routing:
    """Top-k routing of ``logits (t, e)``."""
    probs = logits.float().softmax(-1)  # (t, e)
    top_p, top_i = probs.topk(top_k, dim=-1)  # (t, k) each
    weights = top_p / top_p.sum(-1, keepdim=True) if top_k > 1 else top_p
    keep = capacity_keep(top_i, logits.shape[-1], capacity)
    return Routing(top_i, weights * keep, keep, probs)


def dispatch_grouped(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """Each expert computes only its tokens: gather, one matmul chain per expert, scatter-add."""
    t, k = routing.experts.shape
    flat_e = routing.experts.t().reshape(-1)  # (a,) choice-major: assignment j is token j % t
    flat_w = routing.weights.t().reshape(-1)  # (a,)
    kept = routing.keep.t().reshape(-1)  # (a,)
    if bool(kept.all()):
        order = torch.argsort(flat_e, stable=True)  # (a,) grouped by expert
        tokens = order % t if k > 1 else order  # (a,) the token of each sorted assignment
    else:
        index = kept.nonzero().squeeze(1)  # (kept,) assignments the capacity keeps
        flat_e = flat_e[index]
        order = index[torch.argsort(flat_e, stable=True)]
        tokens = order % t
    counts = torch.bincount(flat_e, minlength=len(experts)).tolist()
    # index_select, not x[tokens]: advanced indexing took about 15% of the forward at 1024 tokens
    chunks = x.index_select(0, tokens).split(counts)  # e tensors (a_i, d)
    # an expert with no tokens still runs on its empty chunk: its weights stay in the autograd
    # graph (zero gradients), which DDP needs to reduce the same buckets on every rank
    outs = [expert(chunk) for expert, chunk in zip(experts, chunks, strict=True)]
    y = torch.cat(outs) * flat_w.index_select(0, order).unsqueeze(-1).to(x.dtype)  # (a, d)
    return torch.zeros_like(x).index_add_(0, tokens, y)  # (t, d)


def dispatch_masked(x: Tensor, routing: Routing, experts: nn.ModuleList) -> Tensor:
    """The reference: every expert on every token, mixed by a combine matrix that is zero
    outside the kept assignments."""
    combine = torch.zeros_like(routing.probs).scatter_add(1, routing.experts, routing.weights)  # (t, e)
    out = torch.zeros_like(x)
    for i, expert in enumerate(experts):
        out = out + combine[:, i : i + 1].to(x.dtype) * expert(x)  # (t, d)
    return out


def balance_loss(routing: Routing, n_experts: int) -> Tensor:
    """Switch load balance: ``e * sum_i f_i * P_i``, ``f_i`` the share of assignments routed to
    expert ``i`` (before capacity), ``P_i`` its mean router probability; 1 when uniform."""
    counts = torch.bincount(routing.experts.reshape(-1), minlength=n_experts).float()  # (e,)
    f = counts / routing.experts.numel()
    return n_experts * (f * routing.probs.mean(0)).sum()


def importance_loss(routing: Routing, n_experts: int) -> Tensor:
    """The squared coefficient of variation of the mean router probability, ``e * sum_i (P_i -
    1/e)^2``: zero when the router spreads its probability uniformly."""
    p = routing.probs.mean(0)  # (e,)
    return n_experts * (p - 1.0 / n_experts).pow(2).sum()


class MoEBranch(nn.Module):
    """``hidden + dropout(experts(norm(hidden)))`` with top-k routing and anti-collapse losses."""

    def __init__(self, config: SigerConfig, layer_idx: int, options: Any, device: Any = None, dtype: Any = None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.layer_idx = layer_idx
        self.options = options
        self.n_experts, self.top_k = options.n_experts, options.top_k
        d_expert = options.d_expert or config.d_model
        self.norm = make_norm(config, device, dtype)
        self.router = nn.Linear(config.d_model, self.n_experts, bias=False, **kw)
        nn.init.normal_(self.router.weight, std=0.02)
        self.experts = nn.ModuleList(
            [Expert(config.d_model, d_expert, options.expert, **kw) for _ in range(self.n_experts)]
        )
        no_weight_decay(self.router.weight)
        self.dropout = nn.Dropout(config.dropout if options.dropout is None else options.dropout)
        self.dispatch = dispatch_grouped if options.dispatch == "grouped" else dispatch_masked
        self._aux: dict[str, Any] | None = None

    def capacity(self, tokens: int) -> int | None:
        if self.options.capacity_factor is None or not self.training:
            return None
        return max(1, math.ceil(self.options.capacity_factor * tokens * self.top_k / self.n_experts))

    def forward(self, hidden_states: Tensor) -> Tensor:
        shape = hidden_states.shape
        x = self.norm(hidden_states).reshape(-1, shape[-1])  # (t, d)
        router_in = x
        if self.training and self.options.jitter > 0:
            eps = self.options.jitter
            router_in = x * torch.empty_like(x).uniform_(1.0 - eps, 1.0 + eps)  # multiplicative jitter
        routing = route(self.router(router_in), self.top_k, self.capacity(x.shape[0]))
        out = self.dispatch(x, routing, self.experts).reshape(shape)  # (b, l, d)
        self._record(routing)
        return hidden_states + self.dropout(out)

    def _record(self, routing: Routing) -> None:
        o = self.options
        balance = balance_loss(routing, self.n_experts)
        importance = importance_loss(routing, self.n_experts)
        aux = o.balance_weight * balance + o.importance_weight * importance
        with torch.no_grad():
            received = torch.bincount(routing.experts[routing.keep], minlength=self.n_experts)
            dead = float((received == 0).float().mean())
            dropped = float(1.0 - routing.keep.float().mean())
        metrics = {"moe_dead": dead}
        if o.capacity_factor is not None:
            metrics["moe_dropped"] = dropped
        if o.layer_metrics:
            metrics[f"moe_dead_layer{self.layer_idx}"] = dead
        self._aux = {"losses": {"moe_aux": (o.aux_loss_weight, aux)}, "metrics": metrics}

    def pop_aux(self) -> dict[str, Any] | None:
        aux, self._aux = self._aux, None
        return aux


def moe_layer_active(options: Any, layer_idx: int) -> bool:
    """Whether ``layer_idx`` carries the branch: listed in ``moe_layers``, else every
    ``moe_every``-th layer (layers ``moe_every - 1, 2 * moe_every - 1, ...``)."""
    if options.moe_layers is not None:
        return layer_idx in options.moe_layers
    return (layer_idx + 1) % options.moe_every == 0


class MoEBlock(SSMBlock):
    """The ``ssm`` block (same tensors, same names) plus, on the chosen layers, ``moe``: the
    sparse expert branch after the mixer. Decoding is per position: the state is the SSM's."""

    def __init__(self, config: SigerConfig, layer_idx: int, options: Any, device: Any = None, dtype: Any = None):
        super().__init__(config, layer_idx, device, dtype)
        if options.moe_layers is not None and any(i >= config.n_layers for i in options.moe_layers):
            raise ValueError(f"moe_layers {options.moe_layers} name layers beyond n_layers {config.n_layers}")
        active = moe_layer_active(options, layer_idx)
        self.moe = MoEBranch(config, layer_idx, options, device, dtype) if active else None
        if self.moe is not None:
            log.info(
                "layer %d: moe branch, %d experts (%s, width %d), top-%d, dispatch %s, capacity %s",
                layer_idx,
                options.n_experts,
                options.expert,
                options.d_expert or config.d_model,
                options.top_k,
                options.dispatch,
                options.capacity_factor,
            )

    def forward(self, hidden_states: Tensor, state: SSMState | None = None, return_state: bool = False):
        out = super().forward(hidden_states, state, return_state)
        hidden, new_state = out if return_state else (out, None)
        if self.moe is not None:
            hidden = self.moe(hidden)
        return (hidden, new_state) if return_state else hidden

    def step(self, hidden_states: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        hidden, state = super().step(hidden_states, state)  # (b, d)
        if self.moe is not None:
            hidden = self.moe(hidden.unsqueeze(1)).squeeze(1)  # (b, d)
            self.moe._aux = None  # decoding records nothing
        return hidden, state
