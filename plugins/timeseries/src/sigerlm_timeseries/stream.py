"""Streaming: samples go through a runtime's ``step`` one at a time, at a cost per sample that
does not depend on how many came before (the backbone's state is fixed in size; the
normalisation keeps running sums per channel; a ``mean`` readout keeps a running sum of logits).

Glossary: ``b`` streams in the batch, ``c`` channels, ``p`` steps per patch, ``k`` classes,
``h`` horizon.

With ``norm: causal`` the outputs equal the full forward at every position. With ``norm:
instance`` a stream can only know the statistics of the prefix so far, so it uses those (the
causal statistics): train with ``causal`` for streaming.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from sigerlm_timeseries.adapter import EPS


class SeriesStream:
    """``push(values (b, c)) -> outputs or None``: class probabilities ``(b, k)`` or the rolling
    forecast ``(b, h, c)`` in the original scale after each full patch (every sample when p = 1)."""

    def __init__(self, model: Any, runtime: Any, batch_size: int = 1):
        self.adapter = model.adapter
        self.options = self.adapter.options
        self.runtime = runtime
        self.batch_size, self.channels, self.patch = batch_size, self.adapter.channels, self.adapter.patch
        self.state = runtime.init_state(batch_size)
        shape = (batch_size, self.channels)
        self.count = torch.zeros(shape, dtype=torch.float64)
        self.sum = torch.zeros(shape, dtype=torch.float64)
        self.sum_sq = torch.zeros(shape, dtype=torch.float64)
        self.buffer: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.logit_sum: Tensor | None = None
        self.positions = 0
        self.samples = 0
        self.history: deque[tuple[Tensor, Tensor]] = deque(maxlen=getattr(self.options, "season", None) or 1)
        self.last_raw: Tensor | None = None  # the head's latest outputs (logits or normalised forecast)

    def _stats(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.options.norm == "none":
            return torch.zeros_like(values), torch.ones_like(values)
        v, m = values.double(), mask.double()
        self.count += m
        self.sum += v * m
        self.sum_sq += v * v * m
        n = self.count.clamp(min=1)
        loc = self.sum / n
        var = (self.sum_sq / n - loc * loc).clamp(min=0)
        return loc.to(values.dtype), var.sqrt().clamp(min=EPS).to(values.dtype)

    def push(self, values: Tensor, mask: Tensor | None = None) -> Tensor | None:
        values = values.reshape(self.batch_size, self.channels).float()
        observed = torch.isfinite(values)
        mask = observed if mask is None else (mask.reshape(values.shape) > 0) & observed
        mask = mask.float()
        values = torch.where(mask > 0, values, torch.zeros_like(values))
        loc, scale = self._stats(values, mask)
        self.buffer.append((values, mask, loc, scale))
        self.history.append((values, mask))  # the last season of samples, for a seasonal forecast
        self.samples += 1
        if len(self.buffer) < self.patch:
            return None
        parts = [torch.stack(x, dim=1) for x in zip(*self.buffer, strict=True)]  # each (b, p, c)
        self.buffer.clear()
        inputs = dict(zip(("values", "mask", "loc", "scale"), parts, strict=True))
        out, self.state = self.runtime.step(inputs, self.state)
        self.positions += 1
        self.last_raw = out
        if self.options.head == "classify":
            if self.options.readout == "mean":
                self.logit_sum = out if self.logit_sum is None else self.logit_sum + out
                out = self.logit_sum / self.positions
            return out.softmax(-1)  # (b, k)
        history, history_mask = (torch.stack(x, dim=1) for x in zip(*self.history, strict=True))  # (b, s, c)
        last = torch.tensor([history.shape[1] - 1])
        base = self.adapter.seasonal(history, history_mask, loc[:, None], scale[:, None], last)[:, 0]
        return (out + base) * scale[:, None] + loc[:, None]  # (b, h, c), original scale


def whole_series_inputs(adapter: Any, values: Tensor) -> dict[str, Tensor]:
    """Runtime inputs of whole series ``(b, l, c)`` with their normalisation statistics, so a
    chunked prefill sees the statistics of the whole input."""
    batch = {"values": values}
    x, mask = adapter._values(batch)
    loc, scale = adapter.stats(x, mask)
    shape = x.shape
    return {"values": x, "mask": mask, "loc": loc.expand(shape).contiguous(), "scale": scale.expand(shape).contiguous()}


def predict(model: Any, runtime: Any, values: Tensor) -> Tensor:
    """Whole series ``(b, l, c)`` -> class probabilities ``(b, k)`` or forecasts ``(b, h, c)``
    in the original scale, through the runtime's ``prefill`` (a ``mean`` readout needs every
    position's logits: the runtime's ``score``)."""
    adapter = model.adapter
    inputs = whole_series_inputs(adapter, values)
    if adapter.options.head == "classify" and adapter.options.readout == "mean":
        logits, _ = runtime.score(inputs)  # (b, n, k): every position of whole series
        return torch.as_tensor(logits).mean(1).softmax(-1)
    out, _ = runtime.prefill(inputs)
    if adapter.options.head == "classify":
        return out.softmax(-1)
    return adapter.to_original(inputs, out)
