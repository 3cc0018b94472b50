"""Generation: cached decoding over a runtime, samplers, stop rules and streaming.

The prompt is prefilled once; every new token costs one ``runtime.step`` from the state, so
it costs the same after 10 or 10,000 tokens. Glossary: ``b`` batch, ``v`` vocabulary.

Stop rules: end tokens (``<|eos|>``, ``<|end_turn|>``, ``<|endoftext|>``), stop strings and
``max_new_tokens``. Generation does not stop inside an open ``<thought>`` block; with
``hide_thought`` the thought is removed from the returned text (and from the stream).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from sigerlm.errors import SigerError

END_TOKENS = ("<|eos|>", "<|end_turn|>", "<|endoftext|>")
THOUGHT_BLOCK = re.compile(r"<thought>.*?(</thought>|$)", re.S)


class GenerationError(SigerError):
    """Invalid generation settings; the message names the setting."""


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy.")
    top_k: int = Field(0, ge=0, description="0: no top-k filter.")
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    stop: list[str] = Field(default_factory=list, description="Stop strings (not included in the output).")
    seed: int | None = None
    hide_thought: bool = False

    @classmethod
    def build(cls, **values: Any) -> GenerationConfig:
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}, got {e.get('input')!r}" for e in exc.errors()
            )
            raise GenerationError(f"invalid generation settings: {details}") from None


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end token or stop string) or "length"
    prompt_tokens: int
    raw_text: str = ""  # before stop strings and thoughts were removed

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(self.token_ids),
            "total_tokens": self.prompt_tokens + len(self.token_ids),
        }


def sample(
    logits: Tensor, config: GenerationConfig, history: Sequence[Tensor], generator: torch.Generator | None
) -> Tensor:
    """Next ids ``(b,)`` from logits ``(b, v)``."""
    logits = logits.float().clone()
    if config.repetition_penalty != 1.0:
        for row, seen in enumerate(history):
            if len(seen):
                values = logits[row, seen]
                logits[row, seen] = torch.where(
                    values > 0, values / config.repetition_penalty, values * config.repetition_penalty
                )
    if config.temperature == 0:
        return logits.argmax(-1)
    logits = logits / config.temperature
    if config.top_k:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(ordered, -1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, -1) > config.top_p  # keep the smallest set reaching top_p
        ordered = ordered.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


@dataclass
class _Row:
    prompt_len: int
    ids: list[int] = field(default_factory=list)
    done: bool = False
    reason: str = "length"


class Generator:
    """Greedy or sampled decoding over a runtime (``prefill`` + ``step``)."""

    def __init__(self, runtime: Any, tokenizer: Any):
        self.runtime, self.tokenizer = runtime, tokenizer
        specials = tokenizer.special_tokens
        self.end_ids = {specials[t] for t in END_TOKENS if t in specials}
        self.open_id, self.close_id = specials.get("<thought>"), specials.get("</thought>")

    # -- token level -------------------------------------------------------------------------------
    def generate_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig, should_stop: Any = None
    ) -> list[_Row]:
        """Decode a batch of prompts (any lengths: each is prefilled on its own, then decoded
        together); rows stop independently. ``should_stop(row, id)`` may end a row early."""
        rows = [_Row(len(p)) for p in prompts]
        for _ in self.iterate(prompts, config, rows, should_stop):
            pass
        return rows

    def generate_padded(self, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig) -> list[_Row]:
        """``generate_ids`` for a padded batch (left or right padding): only the positions the
        mask marks 1 are fed to the model, so padding never changes a row's state."""
        if input_ids.shape != attention_mask.shape:
            raise GenerationError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
            )
        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]
        return self.generate_ids(prompts, config)

    def iterate(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig, rows: list[_Row], should_stop: Any = None
    ) -> Iterator[tuple[int, int]]:
        """Yield ``(row, token)`` as tokens are produced, filling ``rows``."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise GenerationError("every prompt needs at least one token")
        logits_list, states = [], []
        for prompt in prompts:  # no padding ever enters the recurrence
            logits, state = self.runtime.prefill(torch.tensor([list(prompt)]))
            logits_list.append(logits)
            states.append(state)
        logits = torch.cat(logits_list)
        state = self.runtime.stack_states(states)
        active = list(range(len(rows)))
        generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        history = [torch.tensor(list(p)) for p in prompts]
        in_thought = [False] * len(rows)
        for _ in range(config.max_new_tokens):
            next_ids = sample(logits, config, [history[i] for i in active], generator)
            still = []
            for slot, row_index in enumerate(active):
                token = int(next_ids[slot])
                row = rows[row_index]
                if token == self.open_id:
                    in_thought[row_index] = True
                elif token == self.close_id:
                    in_thought[row_index] = False
                if token in self.end_ids and not in_thought[row_index]:
                    row.done, row.reason = True, "stop"
                else:
                    row.ids.append(token)
                    history[row_index] = torch.cat([history[row_index], next_ids[slot : slot + 1]])
                    yield row_index, token
                    if should_stop is not None and should_stop(row_index, token):
                        row.done, row.reason = True, "stop"
                if not row.done:
                    still.append(slot)
            if not still:
                break
            if len(still) < len(active):
                keep = torch.tensor(still)
                state = self.runtime.select_rows(state, keep)
                next_ids = next_ids.index_select(0, keep)
                active = [active[s] for s in still]
            logits, state = self.runtime.step(next_ids, state)

    # -- text level --------------------------------------------------------------------------------
    def _finish(self, row: _Row, config: GenerationConfig) -> GenerationResult:
        raw = self.tokenizer.decode(row.ids)
        text, reason = _apply_stop(raw, config.stop)
        if config.hide_thought:
            text = THOUGHT_BLOCK.sub("", text)
        return GenerationResult(text, row.ids, "stop" if reason else row.reason, row.prompt_len, raw)

    def generate(self, prompt: str | Sequence[str], config: GenerationConfig | None = None, **settings: Any):
        """Text for one prompt (a ``GenerationResult``) or for a list of prompts (a list)."""
        config = config or GenerationConfig.build(**settings)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        encoded = [self.tokenizer.encode(p) for p in prompts]
        texts: dict[int, list[int]] = {i: [] for i in range(len(prompts))}

        def check_stop(row: int, token: int) -> bool:
            if not config.stop:
                return False
            texts[row].append(token)
            return _apply_stop(self.tokenizer.decode(texts[row]), config.stop)[1]

        results = [self._finish(row, config) for row in self.generate_ids(encoded, config, check_stop)]
        return results[0] if isinstance(prompt, str) else results

    def stream(self, prompt: str, config: GenerationConfig | None = None, **settings: Any) -> Iterator[str]:
        """Text deltas whose concatenation equals ``generate(prompt).text``; a multi-byte UTF-8
        character is never split, and text that may begin a stop string is held back."""
        return self.stream_ids(self.tokenizer.encode(prompt), config or GenerationConfig.build(**settings))

    def stream_ids(self, prompt_ids: Sequence[int], config: GenerationConfig) -> Iterator[str]:
        """``stream`` for a prompt that is already token ids (a rendered conversation)."""
        ids: list[int] = []
        emitted = 0

        def visible(final: bool) -> str:
            text, _ = _apply_stop(self.tokenizer.decode(ids), config.stop)
            if config.hide_thought:
                text = THOUGHT_BLOCK.sub("", text)  # an open thought is hidden up to the end
            if not final:
                text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its other bytes
                for n in range(min(max((len(s) - 1 for s in config.stop), default=0), len(text)), 0, -1):
                    if any(s.startswith(text[-n:]) for s in config.stop):  # may begin a stop string
                        text = text[:-n]
                        break
            return text

        def should_stop(row: int, token: int) -> bool:
            return _apply_stop(self.tokenizer.decode(ids), config.stop)[1]

        rows = [_Row(len(prompt_ids))]
        for _, token in self.iterate([list(prompt_ids)], config, rows, should_stop):
            ids.append(token)
            text = visible(final=False)
            if len(text) > emitted:
                yield text[emitted:]
                emitted = len(text)
        text = visible(final=True)
        if len(text) > emitted:
            yield text[emitted:]


def _apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text cut at the first stop string outside a thought; whether one was found."""
    if not stops:
        return text, False
    cut = None
    for s in stops:
        start = 0
        while (i := text.find(s, start)) != -1:
            if not _inside_thought(text, i):
                cut = i if cut is None else min(cut, i)
                break
            start = i + 1
    return (text, False) if cut is None else (text[:cut], True)


def _inside_thought(text: str, index: int) -> bool:
    before = text[:index]
    return before.rfind("<thought>") > before.rfind("</thought>")
