"""The chat template and its loss mask.

A conversation is rendered ``<|system|>…<|end_turn|><|user|>…<|end_turn|><|assistant|>…<|end_turn|>``.
Only the assistant's content and its ``<|end_turn|>`` carry labels; everything else is -100.
Content is encoded as text (a ``<|system|>`` typed by a user stays text), except ``<thought>``
and ``</thought>``, which become their special tokens.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from sigerlm_text.tokenizers.base import TextTokenizer

ROLES = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END_TURN = "<|end_turn|>"
THOUGHT = re.compile(r"(<thought>|</thought>)")


class RowError(ValueError):
    """A data row that cannot be used; the message says why."""


def encode_content(tokenizer: TextTokenizer, text: str) -> list[int]:
    ids: list[int] = []
    for i, piece in enumerate(THOUGHT.split(text)):
        if i % 2:
            ids.append(tokenizer.token_id(piece))
        elif piece:
            ids += tokenizer.encode(piece, allow_special=False)
    return ids


def check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RowError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise RowError(f"messages[{i}] is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RowError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise RowError(f"messages[{i}].content must be non-empty text")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise RowError("no assistant message: nothing to learn from")
    return out


def render(tokenizer: TextTokenizer, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and, for each token, whether it carries a label."""
    ids: list[int] = []
    trained: list[bool] = []
    end = tokenizer.token_id(END_TURN)
    for message in messages:
        role = message["role"]
        content = encode_content(tokenizer, message["content"])
        learn = role == "assistant"
        ids += [tokenizer.token_id(ROLES[role])] + content + [end]
        trained += [False] + [learn] * len(content) + [learn]
    return ids, trained


def instruction_to_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """``{instruction, input, output, system?, reasoning?}`` as a conversation; ``reasoning``
    becomes ``<thought>…</thought>`` before the answer."""
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise RowError(f"'{key}' must be non-empty text")
    for key in ("input", "system", "reasoning"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise RowError(f"'{key}' must be text, got {type(row[key]).__name__}")
    user = row["instruction"].strip()
    if (row.get("input") or "").strip():
        user += "\n\n" + row["input"].strip()
    answer = row["output"].strip()
    if (row.get("reasoning") or "").strip():
        answer = f"<thought>{row['reasoning'].strip()}</thought>{answer}"
    messages = [{"role": "system", "content": row["system"].strip()}] if (row.get("system") or "").strip() else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def row_matches(row: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether each ``where`` field of the row equals its value (or one of a list of values)."""
    return all(row.get(k) in (v if isinstance(v, list) else [v]) for k, v in where.items())


def fill_template(template: Mapping[str, str], row: Mapping[str, Any]) -> dict[str, str] | None:
    """The template's format strings (``"Translate: {lampung}"``) filled from the row's fields;
    None when the row lacks a field the template names, or has it empty."""
    names = {name for part in template.values() for _, name, _, _ in string.Formatter().parse(part or "") if name}
    values = {n: row.get(n) for n in names}
    if any(not isinstance(v, (str, int, float)) or (isinstance(v, str) and not v.strip()) for v in values.values()):
        return None
    fields = {n: str(v).strip() for n, v in values.items()}
    return {k: (v or "").format_map(fields) for k, v in template.items()}
