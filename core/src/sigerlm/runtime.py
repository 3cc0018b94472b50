"""The ``torch`` runtime: prefill a prompt once, then decode one position at a time from the
backbone's state. Generators and servers talk only to a runtime, so back-ends (torch,
onnxruntime) are interchangeable.

A runtime wraps a model with ``backbone`` and ``adapter`` (``embed(batch)``, ``head(hidden)``).
Glossary: ``b`` batch, ``l`` prompt length, ``v`` vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class TorchRuntime:
    name = "torch"

    def __init__(self, model: Any, threads: int | None = None, prefill_chunk: int = 512):
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.backbone, self.adapter = model.backbone, model.adapter
        self.prefill_chunk = prefill_chunk

    @torch.inference_mode()
    def prefill(self, input_ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits after the last position ``(b, v)`` and the state, for ``input_ids`` ``(b, l)``.

        Long prompts go through in chunks of ``prefill_chunk`` positions, carrying the state,
        so prefill memory is bounded by a chunk whatever the prompt's length (same result)."""
        for start in range(0, input_ids.shape[1], self.prefill_chunk):
            chunk = input_ids[:, start : start + self.prefill_chunk]
            hidden, state = self.backbone.forward_hidden(
                self.adapter.embed({"input_ids": chunk}), state=state, return_state=True
            )  # (b, chunk, d)
        return self.adapter.head(hidden[:, -1]), state

    @torch.inference_mode()
    def step(self, input_ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One position for every row: ids ``(b,)`` -> logits ``(b, v)``; cost independent of the past."""
        x = self.adapter.embed({"input_ids": input_ids[:, None]})[:, 0]  # (b, d)
        hidden, state = self.backbone.step(x, state)
        return self.adapter.head(hidden), state

    @staticmethod
    def stack_states(states: list[Any]) -> Any:
        """One batched state from per-row states (each of batch 1)."""

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
