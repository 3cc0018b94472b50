"""The backbone: a stack of registered blocks and a final norm. It only sees vectors.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width.

- ``forward_hidden(inputs_embeds, state=None, return_state=False)``: ``(b, l, d)`` -> hidden
  states ``(b, l, d)`` after the final norm, and the state after the last position (so that
  decoding continues after a prefill);
- ``init_state(batch_size)``: the state before any position;
- ``step(x, state)``: one position, ``(b, d)`` -> ``(b, d)``, at a cost that does not depend
  on how many positions came before.

A block is any module built by ``block_factory(config, layer_idx)`` (called per layer, so
layers may differ; ``sigerlm.assemble`` makes the factory from the registry) with
``forward(hidden_states, state=None, return_state=False)``, ``init_state(batch_size, device,
dtype)`` and ``step(x, state)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from sigerlm.model.block import make_norm, ssm_block
from sigerlm.model.config import SigerConfig

log = logging.getLogger("sigerlm.model")

BackboneState = list[Any]  # one state per layer


class Backbone(nn.Module):
    def __init__(self, config: SigerConfig, block_factory: Callable[[SigerConfig, int], nn.Module] | None = None):
        super().__init__()
        self.config = config
        factory = block_factory or ssm_block
        self.layers = nn.ModuleList([factory(config, i) for i in range(config.n_layers)])
        self.norm_f = make_norm(config)
        kinds = sorted({type(layer).__name__ for layer in self.layers})
        log.info(
            "backbone %s: %d layers (%s), d_model %d, d_state %d, scan %s",
            config.identity,
            config.n_layers,
            ", ".join(kinds),
            config.d_model,
            config.d_state,
            config.scan,
        )

    def forward_hidden(
        self, inputs_embeds: Tensor, state: BackboneState | None = None, return_state: bool = False
    ) -> Tensor | tuple[Tensor, BackboneState]:
        hidden = inputs_embeds  # (b, l, d)
        if state is not None and len(state) != len(self.layers):
            raise ValueError(f"state has {len(state)} layers, the backbone {len(self.layers)}")
        new_state: BackboneState = []
        for i, layer in enumerate(self.layers):
            layer_state = None if state is None else state[i]
            if return_state or layer_state is not None:
                hidden, s = layer(hidden, layer_state, return_state=True)
                new_state.append(s)
            else:
                hidden = layer(hidden)
        hidden = self.norm_f(hidden)  # (b, l, d)
        return (hidden, new_state) if return_state else hidden

    forward = forward_hidden

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> BackboneState:
        return [layer.init_state(batch_size, device, dtype) for layer in self.layers]

    def step(self, x: Tensor, state: BackboneState) -> tuple[Tensor, BackboneState]:
        """One position for every sequence in the batch: ``(b, d)`` -> ``(b, d)``."""
        new_state: BackboneState = []
        for layer, layer_state in zip(self.layers, state, strict=True):
            x, s = layer.step(x, layer_state)
            new_state.append(s)
        return self.norm_f(x), new_state

    def no_weight_decay_parameters(self) -> list[str]:
        """Names of parameters tagged ``_no_weight_decay``."""
        return [name for name, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)]
