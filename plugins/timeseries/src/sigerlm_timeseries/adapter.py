"""The ``series`` adapter: multivariate time series in, class logits or forecasts out.

Glossary: ``b`` batch, ``l`` time steps, ``c`` channels, ``p`` steps per patch, ``n = l / p``
positions the backbone sees, ``d`` model width, ``k`` classes, ``h`` forecast horizon.

A batch holds ``values`` ``(b, l, c)`` (NaN or a 0 in ``mask`` marks a missing value; padding
of shorter series is masked too), optionally ``mask`` ``(b, l, c)``, ``length`` ``(b,)`` (steps
before the padding), ``label`` ``(b,)`` (classify) or ``target`` ``(b, h, c)`` (forecast).

    values -> normalise per instance and channel -> [x * mask, mask] -> patches of p steps
           -> Linear(2 c p -> d) -> (b, n, d) -> backbone -> head: Linear(d -> k | h c)

Normalisation statistics (``loc``, ``scale``) may come with the inputs, in the shape of
``values``: chunked prefill and streaming pass them so that every chunk and every step sees the
statistics of the whole input (``instance``) or of the prefix so far (``causal``), and the
forecasts are turned back into the original scale with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

EPS = 1e-5


class SeriesError(ValueError):
    """A batch that does not fit the adapter (wrong number of channels, window not a multiple of the patch)."""


class SeriesAdapter(nn.Module):
    def __init__(self, config: Any, options: Any):
        super().__init__()
        self.options = options
        self.channels, self.patch = options.channels, options.patch
        d_model = config.d_model
        self.embedding = nn.Linear(2 * self.channels * self.patch, d_model)  # [x, mask] per step of a patch
        if options.head == "classify":
            self.classes = list(options.classes)
            outputs = len(self.classes) or 2  # no classes yet: set_classes gives the data's before training
        else:
            self.classes = []
            outputs = options.horizon * self.channels
        self.readout = nn.Linear(d_model, outputs)
        if getattr(options, "season", None):  # start as the seasonal-naive forecast
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        self._aux: dict[str, Any] | None = None

    def set_classes(self, classes: list[str]) -> None:
        """Name the classes (the training data's) and size the readout for them, afresh."""
        self.options = self.options.model_copy(update={"classes": list(classes)})
        self.classes = list(classes)
        self.readout = nn.Linear(self.readout.in_features, len(classes))

    # -- inputs --------------------------------------------------------------------------------
    def _values(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``values`` and ``mask`` as ``(b, l, c)`` floats, missing values zeroed."""
        values = batch["values"]
        if values.dim() == 4:  # (b, n, p, c): whole patches, as streaming passes them
            values = values.flatten(1, 2)
        if values.dim() == 2:
            values = values[..., None]
        if values.shape[-1] != self.channels:
            raise SeriesError(f"the series adapter takes {self.channels} channels, the batch has {values.shape[-1]}")
        mask = batch.get("mask")
        observed = torch.isfinite(values)
        mask = observed if mask is None else (mask.reshape(values.shape) > 0) & observed
        mask = mask.to(values.dtype)
        return torch.where(mask > 0, values, torch.zeros_like(values)), mask

    def stats(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-instance ``loc`` and ``scale`` per channel: ``(b, 1, c)`` (instance, none) or
        ``(b, l, c)`` (causal: the observed prefix up to each step)."""
        norm = self.options.norm
        if norm == "none":
            ones = torch.ones_like(values[:, :1])
            return torch.zeros_like(ones), ones
        v, m = values.double(), mask.double()
        if norm == "instance":
            count = m.sum(1, keepdim=True).clamp(min=1)
            loc = (v * m).sum(1, keepdim=True) / count  # (b, 1, c)
            var = ((v - loc) ** 2 * m).sum(1, keepdim=True) / count
        else:
            count = m.cumsum(1).clamp(min=1)
            loc = (v * m).cumsum(1) / count  # (b, l, c)
            var = ((v * v * m).cumsum(1) / count - loc * loc).clamp(min=0)
        scale = var.sqrt().clamp(min=EPS)
        return loc.to(values.dtype), scale.to(values.dtype)

    def _normalised(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        values, mask = self._values(batch)
        if "loc" in batch:
            loc = batch["loc"].reshape(values.shape[0], -1, self.channels).to(values.dtype)
            scale = batch["scale"].reshape(loc.shape).to(values.dtype)
        else:
            loc, scale = self.stats(values, mask)
        x = (values - loc) / scale * mask  # (b, l, c)
        return x, mask, loc, scale

    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        x, mask, _, _ = self._normalised(batch)
        feats = torch.cat([x, mask], dim=-1)  # (b, l, 2c)
        b, l, f = feats.shape
        pad = (-l) % self.patch
        feats = nn.functional.pad(feats, (0, 0, 0, pad))  # (b, n p, 2c): padding is masked
        feats = feats.reshape(b, (l + pad) // self.patch, self.patch * f)  # (b, n, 2 c p)
        return self.embedding(feats)  # (b, n, d)

    def head(self, hidden_states: Tensor) -> Tensor:
        out = self.readout(hidden_states)  # (..., k) or (..., h c)
        if self.options.head == "forecast":
            out = out.unflatten(-1, (self.options.horizon, self.channels))  # (..., h, c), normalised units
        return out

    # -- positions -----------------------------------------------------------------------------
    def positions(self, batch: Mapping[str, Tensor], n: int) -> Tensor:
        """Valid positions per row ``(b,)``: ``ceil(length / p)``, or all ``n``."""
        length = batch.get("length")
        b = batch["values"].shape[0]
        if length is None:
            return torch.full((b,), n, dtype=torch.long, device=batch["values"].device)
        return ((length.long() + self.patch - 1) // self.patch).clamp(1, n)

    def class_logits(self, batch: Mapping[str, Tensor], hidden_states: Tensor) -> Tensor:
        """The classification of each series ``(b, k)`` from the hidden states ``(b, n, d)``."""
        logits = self.head(hidden_states)  # (b, n, k)
        b, n, _ = logits.shape
        last = self.positions(batch, n)  # (b,)
        if self.options.readout == "last":
            return logits[torch.arange(b, device=logits.device), last - 1]
        valid = (torch.arange(n, device=logits.device)[None] < last[:, None]).to(logits.dtype)  # (b, n)
        return (logits * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)

    def seasonal(self, values: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, ends: Tensor) -> Tensor:
        """The seasonal-naive forecast after each step in ``ends`` ``(n,)``, in the units that
        step normalises to: ``(b, n, h, c)``; zero (the mean) without ``season``, where the
        history is too short, and for missing values. ``values``, ``mask``: ``(b, l, c)``."""
        b, l, c = values.shape
        h, season = self.options.horizon, getattr(self.options, "season", None)
        if not season:
            return values.new_zeros(b, len(ends), h, c)
        back = ends[:, None] + 1 - season + torch.arange(h, device=values.device) % season  # (n, h)
        seen = (back >= 0).to(values.dtype)[None, ..., None]  # (1, n, h, 1)
        back = back.clamp(min=0)
        loc_t = loc.expand(b, l, c)[:, ends, None]  # (b, n, 1, c)
        scale_t = scale.expand(b, l, c)[:, ends, None]
        return (values[:, back] - loc_t) / scale_t * mask[:, back] * seen

    def forecast(self, batch: Mapping[str, Tensor], hidden_states: Tensor) -> Tensor:
        """The next ``h`` values after the input, in the original scale ``(b, h, c)``."""
        return self.to_original(batch, self.head(hidden_states[:, -1]))

    def to_original(self, batch: Mapping[str, Tensor], out: Tensor) -> Tensor:
        """The head's forecast after the last step of ``batch`` ``(b, h, c)``, in normalised
        units, back in the original scale (with the seasonal-naive forecast it corrects)."""
        values, mask = self._values(batch)
        _, _, loc, scale = self._normalised(batch)
        last = torch.tensor([values.shape[1] - 1], device=values.device)
        base = self.seasonal(values, mask, loc, scale, last)[:, 0]  # (b, h, c)
        return (out + base) * scale[:, -1:] + loc[:, -1:]

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, Tensor], hidden_states: Tensor) -> Tensor:
        if self.options.head == "classify":
            logits = self.class_logits(batch, hidden_states)  # (b, k)
            label = batch["label"].long()
            accuracy = float((logits.argmax(-1) == label).float().mean())
            self._aux = {"metrics": {"accuracy": accuracy}}
            return nn.functional.cross_entropy(logits, label, label_smoothing=self.options.label_smoothing)
        return self._forecast_loss(batch, hidden_states)

    def _forecast_loss(self, batch: Mapping[str, Tensor], hidden_states: Tensor) -> Tensor:
        x, mask, loc, scale = self._normalised(batch)
        b, l, c = x.shape
        h, p = self.options.horizon, self.patch
        if l % p:
            raise SeriesError(f"forecast windows must be a multiple of the patch ({p} steps), got {l}")
        target, target_mask = self._values({"values": batch["target"], "mask": batch.get("target_mask")})
        values, _ = self._values(batch)
        full = torch.cat([values, target], dim=1)  # (b, l + h, c)
        full_mask = torch.cat([mask, target_mask], dim=1)
        ends = torch.arange(p - 1, l, p, device=x.device)  # the last step of each position
        if self.options.forecast_positions == "last":
            ends = ends[-1:]
        future = full[:, 1:].unfold(1, h, 1)[:, ends].transpose(-1, -2)  # (b, n, h, c)
        future_mask = full_mask[:, 1:].unfold(1, h, 1)[:, ends].transpose(-1, -2)
        loc_t = loc.expand(b, l, c)[:, ends, None]  # (b, n, 1, c)
        scale_t = scale.expand(b, l, c)[:, ends, None]
        wanted = (future - loc_t) / scale_t
        pred = self.head(hidden_states[:, ends // p]) + self.seasonal(values, mask, loc, scale, ends)  # (b, n, h, c)
        error = pred - wanted
        error = error.abs() if self.options.loss == "mae" else error.pow(2)
        return (error * future_mask).sum() / future_mask.sum().clamp(min=1)

    def pop_aux(self) -> dict[str, Any] | None:
        aux, self._aux = self._aux, None
        return aux

    def count_tokens(self, batch: Mapping[str, Tensor]) -> int:
        """One per series: the loss is a mean over series."""
        return int(batch["values"].shape[0])

    def baseline(self, train: Any, valid: Any, batches: int) -> dict[str, float]:
        """classify: the cross-entropy of the training split's class frequencies (``prior_loss``)
        and the majority class's accuracy; forecast: the loss of repeating the last value."""
        if self.options.head == "classify":
            k = len(self.classes)
            counts = torch.ones(k)  # add-one smoothing
            for i, batch in enumerate(train):
                if i >= batches:
                    break
                counts += torch.bincount(batch["label"].long(), minlength=k).float()
            prior = counts / counts.sum()
            total, right, seen = 0.0, 0, 0
            for i, batch in enumerate(valid):
                if i >= batches:
                    break
                label = batch["label"].long()
                total += float(-prior.log()[label].sum())
                right += int((label == prior.argmax()).sum())
                seen += len(label)
            return {"prior_loss": total / max(seen, 1), "majority_accuracy": right / max(seen, 1)}
        total, seen = 0.0, 0
        for i, batch in enumerate(valid):
            if i >= batches:
                break
            values, mask = self._values(batch)
            _, _, loc, scale = self._normalised(batch)
            last = values[:, -1:]  # (b, 1, c): the naive forecast
            target, target_mask = self._values({"values": batch["target"], "mask": batch.get("target_mask")})
            error = (target - last) / scale[:, -1:]
            error = error.abs() if self.options.loss == "mae" else error.pow(2)
            total += float((error * target_mask).sum() / target_mask.sum().clamp(min=1)) * values.shape[0]
            seen += values.shape[0]
        return {"naive_loss": total / seen} if seen else {}
