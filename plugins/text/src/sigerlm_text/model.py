"""The text adapter: token embedding and LM head around the backbone, and its tokenizer.

A text model is a ``sigerlm.model.model.SigerModel`` whose adapter is a ``TextAdapter``
(``SigerLM`` is its name here); it is built, saved and loaded like any other model. The
adapter writes its tokenizer into the model folder and reads it back (``save_files`` /
``load_files``); a folder is refused with a tokenizer other than the one it was saved with.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``v`` vocabulary.

Labels follow the datasets of this plugin: ``labels[:, t]`` is the token that should follow
``input_ids[:, t]`` (already shifted), ``-100`` where no loss is taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigerlm.model.block import no_weight_decay
from sigerlm.model.checkpoint import CheckpointError
from sigerlm.model.config import SigerConfig
from sigerlm.model.model import SigerModel
from sigerlm_kernels import kernels
from sigerlm_kernels.ops import eager_cpu
from sigerlm_text.losses import linear_cross_entropy
from sigerlm_text.tokenizers.base import TextTokenizer, TokenizerError

IGNORE_INDEX = -100
#: the text model: ``SigerModel`` with a ``TextAdapter`` (one class for every adapter)
SigerLM = SigerModel


def head_logits(hidden_states: Tensor, weight: Tensor) -> Tensor:
    """``hidden_states @ weight.t()``; a decode step's few rows (no gradients, CPU, the kernels
    already loaded by the fused back-end, not tracing or exporting) go through sigerlm-kernels'
    ``linear_rows``."""
    loaded = kernels.loaded()
    if (
        loaded is not None
        and hidden_states.dim() == 2
        and hidden_states.shape[0] <= kernels.ROW_KERNEL_ROWS
        and eager_cpu(hidden_states, weight)
    ):
        return loaded.linear_rows(hidden_states, weight)
    return hidden_states @ weight.t()  # (..., v)


class TextAdapter(nn.Module):
    """Token embedding and LM head (tied to the embedding by default)."""

    def __init__(
        self, config: SigerConfig, vocab_size: int, tie_embeddings: bool = True, tokenizer: TextTokenizer | None = None
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.tie_embeddings = tie_embeddings
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        no_weight_decay(self.embedding.weight)
        self.lm_head = None if tie_embeddings else nn.Linear(config.d_model, vocab_size, bias=False)
        self.tokenizer: TextTokenizer | None = None
        if tokenizer is not None:
            self.attach(tokenizer)

    def attach(self, tokenizer: TextTokenizer) -> None:
        """Give the adapter its tokenizer (saved with the model); it must fit the embedding."""
        if tokenizer.vocab_size > self.vocab_size:
            raise TokenizerError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {self.vocab_size}"
            )
        self.tokenizer = tokenizer

    @property
    def head_weight(self) -> Tensor:
        return self.embedding.weight if self.lm_head is None else self.lm_head.weight  # (v, d)

    def embed(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.embedding(batch["input_ids"])  # (b, l, d)

    def head(self, hidden_states: Tensor) -> Tensor:
        return head_logits(hidden_states, self.head_weight)  # (..., v)

    def loss(self, batch: Mapping[str, Tensor], hidden_states: Tensor) -> Tensor:
        """Mean next-token cross-entropy over labels that are not -100 (logits never materialised).

        Without ``labels`` the batch is plain text: each position predicts the next input id."""
        backend = "fused" if hidden_states.device.type == "cpu" else "torch"
        return linear_cross_entropy(hidden_states, self.head_weight, labels_of(batch), IGNORE_INDEX, backend=backend)

    def count_tokens(self, batch: Mapping[str, Tensor]) -> int:
        """Positions that carry a loss (the train step's tokens per second and mean)."""
        return int((labels_of(batch) != IGNORE_INDEX).sum())

    def baseline(self, train: Iterable[Any], valid: Iterable[Any], batches: int) -> dict[str, float]:
        """Validation perplexity under add-one unigram counts from the training data."""
        counts = torch.ones(self.vocab_size, dtype=torch.float64)
        for i, batch in enumerate(train):
            if i >= batches * 4:
                break
            counts += torch.bincount(_label_ids(batch), minlength=self.vocab_size)[: self.vocab_size].double()
        logp = torch.log(counts / counts.sum())
        total, n = 0.0, 0
        for i, batch in enumerate(valid):
            if i >= batches:
                break
            ids = _label_ids(batch)
            total -= float(logp[ids.clamp(max=self.vocab_size - 1)].sum())
            n += ids.numel()
        return {"unigram_perplexity": math.exp(total / max(n, 1))}

    # -- model folders ---------------------------------------------------------------------------
    def save_files(self, folder: Path) -> dict[str, Any]:
        """Write the tokenizer into a model folder; its hash goes into ``config.json``."""
        spec = {"use": "text", "vocab_size": self.vocab_size, "tie_embeddings": self.tie_embeddings}
        if self.tokenizer is None:
            return {"adapter": spec, "tokenizer_hash": None}
        self.tokenizer.save(folder)
        return {"adapter": spec, "tokenizer_hash": self.tokenizer.hash}

    def load_files(self, folder: Path, meta: Mapping[str, Any]) -> None:
        """Read the tokenizer a model folder holds and check it against the saved hash."""
        from sigerlm_text.tokenizers.select import load_tokenizer

        saved = meta.get("tokenizer_hash")
        if saved is None:
            return
        tokenizer = load_tokenizer(folder)
        if tokenizer.hash != saved:
            raise TokenizerError(
                f"{folder}: its tokenizer files ({tokenizer.hash[:12]}...) do not match the hash in config.json "
                f"({saved[:12]}...): a damaged folder"
            )
        self.attach(tokenizer)


def labels_of(batch: Mapping[str, Tensor]) -> Tensor:
    """The batch's labels; plain text (no ``labels``) predicts the next input id."""
    labels = batch.get("labels")
    if labels is None:
        ids = batch["input_ids"]
        labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], IGNORE_INDEX)], dim=1)
    return labels


def _label_ids(batch: Mapping[str, Tensor]) -> Tensor:
    labels = labels_of(batch)
    return labels[labels != IGNORE_INDEX].flatten().to(torch.long)


def text_model(
    config: SigerConfig,
    vocab_size: int,
    tokenizer: TextTokenizer | None = None,
    tie_embeddings: bool = True,
    blocks: Any = None,
) -> SigerModel:
    """A fresh text model (blocks: a ``factory(config, layer_idx)``; default the SSM block)."""
    adapter = TextAdapter(config, vocab_size, tie_embeddings, tokenizer)
    spec = {"adapter": {"use": "text", "vocab_size": vocab_size, "tie_embeddings": tie_embeddings}}
    return SigerModel(config, adapter, blocks, spec)


def load_text_model(folder: str | Path, tokenizer: TextTokenizer | None = None, components: Any = None) -> SigerModel:
    """Load a text model folder; a tokenizer other than the one it was saved with is refused."""
    from sigerlm.assemble import load_model

    folder = Path(folder)
    if components is None:
        from sigerlm.plugins import make_plugin_manager

        components = make_plugin_manager()
    model = load_model(folder, components)
    if not isinstance(model.adapter, TextAdapter):
        use = (model.spec.get("adapter") or {}).get("use")
        raise CheckpointError(f"{folder} is not a text model (its adapter is {use!r})")
    saved = model.adapter.tokenizer
    if tokenizer is not None:
        if saved is not None and tokenizer.hash != saved.hash:
            raise TokenizerError(
                f"{folder} was trained with tokenizer {saved.hash[:12]}..., not with this {tokenizer.kind} "
                f"tokenizer ({tokenizer.hash[:12]}...): token ids would mean different text. "
                "Use the tokenizer saved in the folder"
            )
        model.adapter.attach(tokenizer)
    return model


def tokenizer_of(model: Any) -> TextTokenizer:
    """The tokenizer of a text model; a clear error when it has none."""
    tokenizer = getattr(getattr(model, "adapter", None), "tokenizer", None)
    if tokenizer is None:
        raise TokenizerError("this model has no tokenizer (a text model folder holds tokenizer.json)")
    return tokenizer


@dataclass
class LMOutput:
    logits: Tensor | None
    loss: Tensor | None = None
    state: Any = None


def lm_forward(
    model: SigerModel,
    input_ids: Tensor,
    labels: Tensor | None = None,
    state: Any = None,
    return_state: bool = False,
    return_logits: bool | None = None,
) -> LMOutput:
    """Logits ``(b, l, v)`` of a text model and, with ``labels``, the loss. With labels, logits
    are only computed when ``return_logits=True`` (training never needs the full tensor)."""
    embeds = model.adapter.embed({"input_ids": input_ids})
    if state is not None or return_state:
        hidden, new_state = model.backbone.forward_hidden(embeds, state=state, return_state=True)
    else:
        hidden, new_state = model.backbone.forward_hidden(embeds), None
    loss = model.adapter.loss({"labels": labels}, hidden) if labels is not None else None
    want_logits = labels is None if return_logits is None else return_logits
    return LMOutput(model.adapter.head(hidden) if want_logits else None, loss, new_state)
