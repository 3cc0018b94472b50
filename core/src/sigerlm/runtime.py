"""The ``torch`` runtime: prefill inputs once, then decode one position at a time from the
backbone's state. Generators and servers talk only to a runtime (the contract is in the
hookspec ``register_runtimes``), so back-ends are interchangeable.

Inputs are what the model's adapter embeds: a mapping of tensors with the batch first and the
sequence second (``{"input_ids": (b, l)}`` for text); ``step`` takes one position, ``(b, ...)``.
Outputs are the adapter's ``head`` at the last position (logits ``(b, v)`` for text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class TorchRuntime:
    name = "torch"

    def __init__(self, model: Any, threads: int | None = None, prefill_chunk: int = 512):
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.model = model.eval()
        self.prefill_chunk = prefill_chunk

    def init_state(self, batch_size: int) -> Any:
        return self.model.init_state(batch_size)

    @torch.inference_mode()
    def prefill(self, inputs: Mapping[str, Tensor], state: Any = None) -> tuple[Tensor, Any]:
        """Outputs after the last position and the state. Long inputs go through in chunks of
        ``prefill_chunk`` positions, carrying the state, so memory is bounded by a chunk."""
        length = next(iter(inputs.values())).shape[1]
        for start in range(0, length, self.prefill_chunk):
            chunk = {k: v[:, start : start + self.prefill_chunk] for k, v in inputs.items()}
            hidden, state = self.model.forward_hidden(self.model.adapter.embed(chunk), state, return_state=True)
        return self.model.adapter.head(hidden[:, -1]), state

    @torch.inference_mode()
    def score(self, inputs: Mapping[str, Tensor], state: Any = None) -> tuple[Tensor, Any]:
        """Outputs at every position ``(b, l, ...)`` and the state after the last (evaluation:
        perplexity, the log-likelihood of continuations)."""
        hidden, state = self.model.forward_hidden(self.model.adapter.embed(inputs), state, return_state=True)
        return self.model.adapter.head(hidden), state

    @torch.inference_mode()
    def step(self, inputs: Mapping[str, Tensor], state: Any) -> tuple[Tensor, Any]:
        """One position for every row; its cost does not depend on how many came before."""
        return self.model.step(inputs, state)

    @staticmethod
    def stack_states(states: list[Any]) -> Any:
        """One batched state from per-row states (each of batch 1, or any batch)."""

        def merge(parts: list[Any]) -> Any:
            if isinstance(parts[0], Tensor):
                return torch.cat(parts, dim=0)
            if isinstance(parts[0], (list, tuple)):
                merged = [merge([p[i] for p in parts]) for i in range(len(parts[0]))]
                return type(parts[0])(merged) if isinstance(parts[0], tuple) else merged
            return parts[0]

        return merge(states)

    @staticmethod
    def select_rows(state: Any, rows: Tensor) -> Any:
        """The state of the given rows (to drop finished sequences from a batch)."""
        if isinstance(state, Tensor):
            return state.index_select(0, rows)
        if isinstance(state, (list, tuple)):
            picked = [TorchRuntime.select_rows(s, rows) for s in state]
            return type(state)(picked) if isinstance(state, tuple) else picked
        return state
