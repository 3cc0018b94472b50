"""What the evaluators share: reading rows (errors name the file and line), the model's
tokenizer, greedy or sampled generation through a registered runtime."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError
from sigerlm_text.datasets import expand  # files, and the files with these suffixes inside folders

END_OF_TEXT = "<|endoftext|>"


class EvalDataError(SigerError):
    """A data file or row an evaluator cannot use; the message names the file and line."""


def read_rows(files: Iterable[str | Path], limit: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", row)`` for every JSON object in JSONL files; anything else is an error."""
    count = 0
    for path in expand(files, (".jsonl",)):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalDataError(f"{where}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise EvalDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
                yield where, row
                count += 1
                if limit is not None and count >= limit:
                    return


def text_field(where: str, row: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        got = "missing" if key not in row else f"{type(value).__name__} {value!r}"[:80]
        raise EvalDataError(f"{where}: '{key}' must be non-empty text ({got})")
    return value


def tokenizer_of(run: Any, model: Any) -> Any:
    """The model's tokenizer (a text model folder's), else the run's."""
    tokenizer = getattr(getattr(model, "adapter", None), "tokenizer", None) or run.state.get("tokenizer")
    if tokenizer is None:
        raise SigerError("this evaluator needs a text model with a tokenizer (a text model folder holds one)")
    return tokenizer


def start_id(tokenizer: Any) -> int:
    """The token every document follows (``<|endoftext|>``, as documents are joined in training)."""
    specials = tokenizer.special_tokens
    for name in (END_OF_TEXT, "<|bos|>"):
        if name in specials:
            return int(specials[name])
    raise SigerError(f"the tokenizer has no {END_OF_TEXT} or <|bos|> token to start a document with")


def runtime_for(run: Any, model: Any, name: str) -> Any:
    """The registered runtime ``name`` for ``model``, built once per run and model."""
    cache = run.state.setdefault("eval_runtimes", {})
    key = (id(model), name)
    if key not in cache:
        cache[key] = run.plugin_manager.get_component("runtimes", name).build(model, options={})
    return cache[key]


def generate(
    run: Any,
    model: Any,
    prompts: Sequence[str],
    options: Any,
    sampling: dict[str, Any] | None = None,
    systems: Sequence[str] | None = None,
) -> list[str]:
    """Answers to ``prompts`` (greedy unless ``sampling``), ``options.batch_size`` at a time,
    in the chat template when ``options.chat``. Cached per run for identical requests."""
    import torch

    from sigerlm_text.chat_session import PromptBuilder
    from sigerlm_text.generation import GenerationConfig, Generator

    settings = {"max_new_tokens": options.max_new_tokens, "temperature": 0.0, **(sampling or {})}
    key = (
        id(model),
        options.runtime,
        options.chat,
        tuple(prompts),
        tuple(systems or ()),
        repr(sorted(settings.items())),
    )
    cache = run.state.setdefault("eval_generations", {})
    if key in cache:
        return list(cache[key])
    tokenizer = tokenizer_of(run, model)
    generator = Generator(runtime_for(run, model, options.runtime), tokenizer)
    config = GenerationConfig(**settings)
    builder = PromptBuilder(tokenizer)
    encoded = []
    for i, prompt in enumerate(prompts):
        if options.chat:
            system = systems[i] if systems else ""
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            encoded.append(builder.build(messages))
        else:
            encoded.append([start_id(tokenizer), *tokenizer.encode(prompt)])
    texts: list[str] = []
    for start in range(0, len(encoded), options.batch_size):
        with torch.inference_mode():
            rows = generator.generate_ids(encoded[start : start + options.batch_size], config)
        texts += [row.text.strip() for row in rows]
    cache[key] = list(texts)
    return texts


def record_details(run: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Per-row details of the evaluator that just ran; the ``evaluate`` step and ``siger eval``
    write them to ``<out>.details/<label>.jsonl`` (an evaluator returns numbers only)."""
    run.state["eval_details"] = list(rows)
