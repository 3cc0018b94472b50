"""The test kit's plugin ``testkit``: dummy components that let a manifest run with core alone
(and plugin tests run in isolation). Only the test kit's fixtures register it.

- block ``identity``: returns its input; has the decode-state interface of a real block;
- adapter ``random-embedding``: embeds random token ids, projects back to logits, next-token loss;
- dataset ``random-tokens``: seeded batches of random token ids, a different shard per rank;
- step ``record-calls``: records each call in ``run.state["record-calls"]`` and, when asked,
  pushes batches through the model (adapter + backbone) and reports their loss.

torch is imported inside the factories, never at module import.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sigerlm.hookspecs import hookimpl


class IdentityBlockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomEmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(64, ge=2, description="Token ids are in [0, vocab_size).")


class RandomTokensOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(64, ge=2)
    seq_len: int = Field(16, ge=2)
    batch_size: int = Field(2, ge=1)
    num_batches: int = Field(4, ge=1, description="Batches per pass over the dataset.")


class RecordCallsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: str | None = Field(None, description="Read batches from this data split.")
    batches: int = Field(1, ge=0, description="How many batches to read (and score, with a model).")
    note: str = ""


def identity_block(config: Any, layer_idx: int, options: IdentityBlockOptions) -> Any:
    """A block that returns its input unchanged."""
    from torch import nn

    class IdentityBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer_idx = layer_idx

        def forward(self, hidden_states, state=None, return_state=False):  # (b, l, d) -> (b, l, d)
            return (hidden_states, ()) if return_state else hidden_states

        def init_state(self, batch_size: int, device=None, dtype=None):
            return ()

        def step(self, x, state):  # (b, d) -> (b, d)
            return x, state

    return IdentityBlock()


def random_embedding(config: Any, options: RandomEmbeddingOptions) -> Any:
    """Token embedding and an untied head around the backbone (a dummy text-like adapter)."""
    import torch
    from torch import nn

    d_model = config.d_model if config is not None else 16
    vocab_size = options.vocab_size

    class RandomEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vocab_size = vocab_size
            self.embedding = nn.Embedding(vocab_size, d_model)
            self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

        def embed(self, batch: dict[str, Any]) -> torch.Tensor:
            return self.embedding(batch["input_ids"])  # (b, l, d)

        def head(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return self.lm_head(hidden_states)  # (b, l, vocab)

        def loss(self, batch: dict[str, Any], hidden_states: torch.Tensor) -> torch.Tensor:
            logits = self.head(hidden_states[:, :-1])
            targets = batch["input_ids"][:, 1:]
            return nn.functional.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1))

        def baseline(self, train: Any, valid: Any, batches: int) -> dict[str, float]:
            """A uniform guess over the vocabulary."""
            return {"uniform_perplexity": float(vocab_size)}

        def count_tokens(self, batch: dict[str, Any]) -> int:
            ids = batch["input_ids"]
            return int(ids.shape[0] * (ids.shape[1] - 1))

    return RandomEmbedding()


class RandomTokens:
    """Seeded random token batches; iterating twice gives the same batches.

    Each global batch has ``batch_size * world_size`` rows and rank ``r`` takes rows
    ``r, r + world_size, ...``: the same data whatever the number of processes."""

    def __init__(
        self,
        seed: int,
        rank: int,
        vocab_size: int,
        seq_len: int,
        batch_size: int,
        num_batches: int,
        world_size: int = 1,
    ):
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.batch_size, self.num_batches = batch_size, num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed)
        rows = self.batch_size * self.world_size
        for _ in range(self.num_batches):
            ids = torch.randint(0, self.vocab_size, (rows, self.seq_len), generator=generator)
            yield {"input_ids": ids[self.rank :: self.world_size]}


def random_tokens(run: Any, options: RandomTokensOptions) -> RandomTokens:
    """Random token ids; each rank reads its share of every global batch."""
    o = options
    return RandomTokens(run.seed, run.rank, o.vocab_size, o.seq_len, o.batch_size, o.num_batches, run.world_size)


def record_calls(run: Any, options: RecordCallsOptions) -> dict[str, Any]:
    """Record this call; read (and, with a model, score) a few batches."""
    split, batches, note = options.split, options.batches, options.note
    calls = run.state.setdefault("record-calls", [])
    entry: dict[str, Any] = {"call": len(calls), "note": note, "resume": run.resume, "split": split}
    out: dict[str, Any] = {"calls": len(calls) + 1}
    if split is not None and batches:
        import torch

        from sigerlm.assemble import model_for_run

        model = None
        if run.manifest.model is not None and run.manifest.model.adapter is not None:
            torch.manual_seed(run.seed)
            model = model_for_run(run).eval()
        tokens, losses = 0, []
        for i, batch in enumerate(run.dataset(split)):
            if i >= batches:
                break
            tokens += int(batch["input_ids"].numel())
            if model is not None:
                with torch.no_grad():
                    losses.append(float(model(batch)))
        out["tokens"] = tokens
        entry["tokens"] = tokens
        if losses:
            out["loss"] = sum(losses) / len(losses)
            out["perplexity"] = math.exp(out["loss"])
    calls.append(entry)
    return out


@hookimpl
def register_blocks(register):
    register("identity", identity_block, options=IdentityBlockOptions)


@hookimpl
def register_adapters(register):
    register("random-embedding", random_embedding, options=RandomEmbeddingOptions)


@hookimpl
def register_datasets(register):
    register("random-tokens", random_tokens, options=RandomTokensOptions)


@hookimpl
def register_steps(register):
    register("record-calls", record_calls, options=RecordCallsOptions)
