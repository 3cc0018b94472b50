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
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from sigerlm.errors import SigerError

END_TOKENS = ("<|eos|>", "<|end_turn|>", "<|endoftext|>")
#: temperatures below this decode greedily (dividing logits by ~1e-38 overflows to NaN)
GREEDY_BELOW = 1e-6
THOUGHT_BLOCK = re.compile(r"<thought>.*?(</thought>|$)", re.S)


class GenerationError(SigerError):
    """Invalid generation settings; the message names the setting."""


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 (or below 1e-6): greedy.")
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
    if config.temperature < GREEDY_BELOW:  # 0, or so small that logits / temperature overflows
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


class DecodeRules:
    """A tokenizer's end tokens and thought markers (looked up once per tokenizer)."""

    def __init__(self, tokenizer: Any):
        specials = tokenizer.special_tokens
        self.tokenizer = tokenizer
        self.end_ids = {specials[t] for t in END_TOKENS if t in specials}
        self.open_id, self.close_id = specials.get("<thought>"), specials.get("</thought>")


class RowDecoder:
    """The decoding rules of one row, shared by ``Generator`` and the server's scheduler.

    ``push(token)`` takes each sampled token and returns the text to show now (often ``""``):
    an end token outside an open ``<thought>`` ends the row (``finish_reason`` "stop"), as does
    a stop string outside a thought (cut from the text) or ``max_new_tokens`` ("length"). Text
    is released only when it cannot change: never half a UTF-8 character, never the start of
    what may become a stop string; with ``hide_thought`` a thought never shows. The deltas put
    together equal ``text`` once the row has finished. With ``stream=False`` the text is only
    decoded when a stop string needs checking (``push`` then returns ``""``)."""

    def __init__(self, rules: DecodeRules, config: GenerationConfig, prompt_len: int = 0, stream: bool = True):
        self.rules, self.config, self.prompt_len, self.stream = rules, config, prompt_len, stream
        self.ids: list[int] = []
        self.in_thought = False
        self.finish_reason: str | None = None
        self.text = self.raw_text = ""
        self._emitted = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int) -> str:
        if self.finished:
            raise GenerationError("this row has finished")
        if token == self.rules.open_id:
            self.in_thought = True
        elif token == self.rules.close_id:
            self.in_thought = False
        if token in self.rules.end_ids and not self.in_thought:
            return self.finish("stop")
        self.ids.append(token)
        if self.config.stop or self.stream:
            text, stopped = _apply_stop(self.rules.tokenizer.decode(self.ids), self.config.stop)
            if stopped:
                return self.finish("stop")
        if len(self.ids) >= self.config.max_new_tokens:
            return self.finish("length")
        return self._delta(self._visible(text, final=False)) if self.stream else ""

    def finish(self, reason: str) -> str:
        """End the row (``stop``, ``length``, ``cancelled``); returns the last delta."""
        if self.finished:
            return ""
        self.finish_reason = reason
        self.raw_text = self.rules.tokenizer.decode(self.ids)
        self.text = self._visible(_apply_stop(self.raw_text, self.config.stop)[0], final=True)
        return self._delta(self.text)

    def result(self) -> GenerationResult:
        return GenerationResult(self.text, self.ids, self.finish_reason or "length", self.prompt_len, self.raw_text)

    def _visible(self, text: str, final: bool) -> str:
        if self.config.hide_thought:
            text = THOUGHT_BLOCK.sub("", text)  # an open thought is hidden up to the end
        if not final:
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its other bytes
            stops = self.config.stop
            for n in range(min(max((len(s) - 1 for s in stops), default=0), len(text)), 0, -1):
                if any(s.startswith(text[-n:]) for s in stops):  # may begin a stop string
                    text = text[:-n]
                    break
        return text

    def _delta(self, text: str) -> str:
        if len(text) <= self._emitted:
            return ""
        delta, self._emitted = text[self._emitted :], len(text)
        return delta


class Generator:
    """Greedy or sampled decoding over a runtime (``prefill`` + ``step``, see the hookspec
    ``register_runtimes``): the prompt is prefilled once, then every row takes one step."""

    def __init__(self, runtime: Any, tokenizer: Any):
        self.runtime, self.tokenizer = runtime, tokenizer
        self.rules = DecodeRules(tokenizer)

    # -- token level -------------------------------------------------------------------------------
    def generate_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig, stream: bool = False
    ) -> list[RowDecoder]:
        """Decode a batch of prompts (any lengths: each is prefilled on its own, then decoded
        together); rows stop independently. Each row's ``text``, ``ids`` and ``finish_reason``."""
        rows = [RowDecoder(self.rules, config, len(p), stream) for p in prompts]
        for _ in self.iterate(prompts, rows):
            pass
        return rows

    def generate_padded(self, input_ids: Tensor, attention_mask: Tensor, config: GenerationConfig) -> list[RowDecoder]:
        """``generate_ids`` for a padded batch (left or right padding): only the positions the
        mask marks 1 are fed to the model, so padding never changes a row's state."""
        if input_ids.shape != attention_mask.shape:
            raise GenerationError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
            )
        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]
        return self.generate_ids(prompts, config)

    def iterate(self, prompts: Sequence[Sequence[int]], rows: list[RowDecoder]) -> Iterator[tuple[int, str]]:
        """Yield ``(row, text delta)`` as rows produce text, pushing every token into ``rows``."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise GenerationError("every prompt needs at least one token")
        config = rows[0].config
        logits_list, states = [], []
        for prompt in prompts:  # no padding ever enters the recurrence
            logits, state = self.runtime.prefill({"input_ids": torch.tensor([list(prompt)])})
            logits_list.append(logits)
            states.append(state)
        logits = torch.cat(logits_list)
        state = self.runtime.stack_states(states)
        active = list(range(len(rows)))
        generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        prompt_ids = [torch.tensor(list(p)) for p in prompts]
        while active:
            history = [torch.cat([prompt_ids[i], torch.tensor(rows[i].ids, dtype=torch.long)]) for i in active]
            next_ids = sample(logits, config, history, generator)
            still = []
            for slot, row_index in enumerate(active):
                delta = rows[row_index].push(int(next_ids[slot]))
                if delta:
                    yield row_index, delta
                if not rows[row_index].finished:
                    still.append(slot)
            if not still:
                break
            if len(still) < len(active):
                keep = torch.tensor(still)
                state = self.runtime.select_rows(state, keep)
                next_ids = next_ids.index_select(0, keep)
                active = [active[s] for s in still]
            logits, state = self.runtime.step({"input_ids": next_ids}, state)

    # -- text level --------------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[str], config: GenerationConfig | None = None, **settings: Any):
        """Text for one prompt (a ``GenerationResult``) or for a list of prompts (a list)."""
        config = config or GenerationConfig.build(**settings)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        rows = self.generate_ids([self.tokenizer.encode(p) for p in prompts], config)
        results = [row.result() for row in rows]
        return results[0] if isinstance(prompt, str) else results

    def stream(self, prompt: str, config: GenerationConfig | None = None, **settings: Any) -> Iterator[str]:
        """Text deltas whose concatenation equals ``generate(prompt).text``; a multi-byte UTF-8
        character is never split, and text that may begin a stop string is held back."""
        return self.stream_ids(self.tokenizer.encode(prompt), config or GenerationConfig.build(**settings))

    def stream_ids(self, prompt_ids: Sequence[int], config: GenerationConfig) -> Iterator[str]:
        """``stream`` for a prompt that is already token ids (a rendered conversation)."""
        row = RowDecoder(self.rules, config, len(prompt_ids))
        for _, delta in self.iterate([list(prompt_ids)], [row]):
            yield delta


def make_runtime(model: Any, name: str = "torch", threads: int | None = None, components: Any = None) -> Any:
    """The runtime ``name`` (``torch``; ``onnxruntime`` with sigerlm-onnx) from the registry, for
    ``model``; ``components`` is a plugin manager (default: every installed plugin)."""
    if components is None:
        from sigerlm.plugins import make_plugin_manager

        components = make_plugin_manager()
    return components.get_component("runtimes", name).build(model, options={"threads": threads} if threads else {})


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
