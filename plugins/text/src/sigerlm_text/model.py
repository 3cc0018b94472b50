"""The text adapter and the ``SigerLM`` model: token embedding and LM head around the backbone.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``v`` vocabulary.

Labels follow the datasets of this plugin: ``labels[:, t]`` is the token that should follow
``input_ids[:, t]`` (already shifted), ``-100`` where no loss is taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigerlm.model.backbone import build_backbone
from sigerlm.model.block import no_weight_decay
from sigerlm.model.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    load_state,
    read_config,
    read_tensors,
    save_model_folder,
)
from sigerlm.model.config import SigerConfig
from sigerlm.model.losses import IGNORE_INDEX, linear_cross_entropy
from sigerlm_text.tokenizers.base import TextTokenizer, TokenizerError


class TextAdapter(nn.Module):
    """Token embedding and LM head (tied to the embedding by default)."""

    def __init__(self, config: SigerConfig, vocab_size: int, tie_embeddings: bool = True):
        super().__init__()
        self.vocab_size = vocab_size
        self.tie_embeddings = tie_embeddings
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        no_weight_decay(self.embedding.weight)
        self.lm_head = None if tie_embeddings else nn.Linear(config.d_model, vocab_size, bias=False)

    @property
    def head_weight(self) -> Tensor:
        return self.embedding.weight if self.lm_head is None else self.lm_head.weight  # (v, d)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.embedding(batch["input_ids"])  # (b, l, d)

    def head(self, hidden_states: Tensor) -> Tensor:
        return hidden_states @ self.head_weight.t()  # (..., v)

    def loss(self, batch: dict[str, Tensor], hidden_states: Tensor) -> Tensor:
        """Mean next-token cross-entropy over labels that are not -100 (logits never materialised).

        Without ``labels`` the batch is plain text: each position predicts the next input id."""
        labels = batch.get("labels")
        if labels is None:
            ids = batch["input_ids"]
            labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], IGNORE_INDEX)], dim=1)
        backend = "fused" if hidden_states.device.type == "cpu" else "torch"
        return linear_cross_entropy(hidden_states, self.head_weight, labels, IGNORE_INDEX, backend=backend)


@dataclass
class LMOutput:
    logits: Tensor | None
    loss: Tensor | None = None
    state: Any = None


class SigerLM(nn.Module):
    """A text language model: ``TextAdapter`` + backbone (+ its tokenizer)."""

    def __init__(
        self,
        config: SigerConfig,
        vocab_size: int,
        tokenizer: TextTokenizer | None = None,
        tie_embeddings: bool = True,
        plugin_manager: Any = None,
    ):
        super().__init__()
        if tokenizer is not None and tokenizer.vocab_size > vocab_size:
            raise TokenizerError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {vocab_size}")
        self.config = config
        self.backbone = build_backbone(config, plugin_manager)
        self.adapter = TextAdapter(config, vocab_size, tie_embeddings)
        self.tokenizer = tokenizer

    @property
    def identity(self) -> str:
        return self.config.identity

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        state: Any = None,
        return_state: bool = False,
        return_logits: bool | None = None,
    ) -> LMOutput:
        """Logits ``(b, l, v)`` and, with ``labels``, the loss. With labels, logits are only
        computed when ``return_logits=True`` (training never needs the full tensor)."""
        embeds = self.adapter.embed({"input_ids": input_ids})
        if state is not None or return_state:
            hidden, new_state = self.backbone.forward_hidden(embeds, state=state, return_state=True)
        else:
            hidden, new_state = self.backbone.forward_hidden(embeds), None
        loss = self.adapter.loss({"labels": labels}, hidden) if labels is not None else None
        want_logits = labels is None if return_logits is None else return_logits
        return LMOutput(self.adapter.head(hidden) if want_logits else None, loss, new_state)

    def forward_hidden(self, inputs_embeds: Tensor, state: Any = None, return_state: bool = False):
        return self.backbone.forward_hidden(inputs_embeds, state=state, return_state=return_state)

    def project_logits(self, hidden_states: Tensor) -> Tensor:
        return self.adapter.head(hidden_states)

    def init_state(self, batch_size: int) -> Any:
        return self.backbone.init_state(batch_size)

    def step(self, input_ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One token per sequence ``(b,)`` -> logits ``(b, v)`` and the new state."""
        hidden, state = self.backbone.step(self.adapter.embedding(input_ids), state)
        return self.adapter.head(hidden), state

    # -- model folders -----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, plugins: dict[str, str] | None = None) -> Path:
        """Config, weights and tokenizer in one folder, written atomically."""
        adapter = {"use": "text", "vocab_size": self.adapter.vocab_size, "tie_embeddings": self.adapter.tie_embeddings}
        return save_model_folder(
            folder,
            self.state_dict(),
            self.config,
            adapter=adapter,
            plugins=plugins,
            tokenizer_hash=self.tokenizer.hash if self.tokenizer is not None else None,
            write_extra=self.tokenizer.save if self.tokenizer is not None else None,
        )

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, tokenizer: TextTokenizer | None = None, plugin_manager: Any = None
    ) -> SigerLM:
        """Load a model folder; a tokenizer other than the one it was saved with is refused."""
        from sigerlm_text.tokenizers.select import load_tokenizer

        folder = Path(folder)
        config, meta = read_config(folder)
        adapter = meta.get("adapter") or {}
        if adapter.get("use") not in ("text", "text:text"):
            raise CheckpointError(f"{folder} is not a text model (its adapter is {adapter.get('use')!r})")
        saved_hash = meta.get("tokenizer_hash")
        if tokenizer is None and saved_hash is not None:
            tokenizer = load_tokenizer(folder)
        if tokenizer is not None and saved_hash is not None and tokenizer.hash != saved_hash:
            raise TokenizerError(
                f"{folder} was trained with tokenizer {saved_hash[:12]}..., not with this {tokenizer.kind} tokenizer "
                f"({tokenizer.hash[:12]}...): token ids would mean different text. "
                "Use the tokenizer saved in the folder"
            )
        model = cls(
            config, int(adapter["vocab_size"]), tokenizer, bool(adapter.get("tie_embeddings", True)), plugin_manager
        )
        # the folder's tensor names are the model's own (backbone.*, adapter.*): one check names
        # every missing, unexpected or mis-shaped tensor
        load_state(model, read_tensors(folder / WEIGHTS_FILE), source=str(folder / WEIGHTS_FILE))
        return model.eval()
