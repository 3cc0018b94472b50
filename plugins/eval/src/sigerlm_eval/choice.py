"""The ``multiple-choice`` evaluator: which choice does the model find most likely after the context?

An item is a context and its choices (continuations). Templates turn rows into items:

- ``plain``: ``{context, choices: [...], label}``;
- ``copa``: ``{premise, question: cause|effect, choice1, choice2, label}``: the context is the
  premise without its final stop and the connective (``karena``/``sehingga`` by default), each
  choice follows with its first letter lower-cased (as lm-eval's COPA);
- ``arc``: ``{question, choices, answer}`` (answer an index or a letter): ``"Pertanyaan: q\\n
  Jawaban:"`` and each choice's text;
- ``mmlu``: the same with the choices listed as ``A. ...`` and scored as `` A``, `` B``, ...

Every context is encoded after ``<|endoftext|>`` and prefilled once; its state is shared by its
choices (``ContinuationScorer``). Scores (lm-eval's names): ``acc`` (sum of log-probabilities),
``acc_norm`` (divided by the choice's length in characters, without the space before it, as lm-eval), ``acc_per_token``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from sigerlm_eval.common import (
    EvalDataError,
    read_rows,
    record_details,
    runtime_for,
    start_id,
    text_field,
    tokenizer_of,
)

LETTERS = string.ascii_uppercase


@dataclass
class Item:
    where: str
    context: str
    choices: list[str]  # continuations, each starting with its separating space
    label: int


def _label(where: str, value: Any, n: int) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        value = LETTERS.index(value.strip().upper())
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise EvalDataError(f"{where}: the answer must be a choice index 0..{n - 1} or a letter, got {value!r}")
    return value


def _choices(where: str, row: dict[str, Any]) -> list[str]:
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise EvalDataError(f"{where}: 'choices' must be a list of at least two non-empty texts")
    return [c.strip() for c in choices]


def make_item(where: str, row: dict[str, Any], options: Any) -> Item:
    template = options.template
    if template == "plain":
        choices = _choices(where, row)
        context = text_field(where, row, "context")
        return Item(where, context.rstrip(), [" " + c for c in choices], _label(where, row.get("label"), len(choices)))
    if template == "copa":
        premise = text_field(where, row, "premise").strip()
        question = row.get("question")
        if question not in options.connectives:
            raise EvalDataError(f"{where}: 'question' must be one of {sorted(options.connectives)}, got {question!r}")
        choices = [text_field(where, row, key).strip() for key in ("choice1", "choice2")]
        stem = premise[:-1] if premise[-1] in ".!?" else premise
        context = f"{stem} {options.connectives[question]}"
        return Item(where, context, [" " + c[0].lower() + c[1:] for c in choices], _label(where, row.get("label"), 2))
    # arc / mmlu
    question = text_field(where, row, "question").strip()
    choices = _choices(where, row)
    label = _label(where, row.get("answer", row.get("label")), len(choices))
    if len(choices) > len(LETTERS):
        raise EvalDataError(f"{where}: at most {len(LETTERS)} choices")
    if template == "arc":
        context = f"{options.question_prefix} {question}\n{options.answer_prefix}"
        return Item(where, context, [" " + c for c in choices], label)
    listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    context = f"{options.question_prefix} {question}\n{listed}\n{options.answer_prefix}"
    return Item(where, context, [" " + LETTERS[i] for i in range(len(choices))], label)


def score_items(scorer: Any, tokenizer: Any, items: list[Item], batch_size: int) -> list[list[Any]]:
    """Per item, per choice ``Scored`` (contexts after ``<|endoftext|>``)."""
    first = start_id(tokenizer)
    out: list[list[Any]] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        encoded = []
        for item in batch:
            context = [first, *tokenizer.encode(item.context, allow_special=False)]
            conts = [tokenizer.encode(c, allow_special=False) for c in item.choices]
            if any(not c for c in conts):
                raise EvalDataError(f"{item.where}: a choice encodes to no tokens")
            encoded.append((context, conts))
        out += scorer.score(encoded)
    return out


def accuracy(items: list[Item], scores: list[list[Any]]) -> dict[str, Any]:
    """lm-eval's ``acc`` and ``acc_norm`` (per character), and per-token normalisation."""
    hits = {"acc": 0, "acc_norm": 0, "acc_per_token": 0}
    rows = []
    for item, scored in zip(items, scores, strict=True):
        picks = {
            "acc": max(range(len(scored)), key=lambda i: scored[i].logprob),
            "acc_norm": max(range(len(scored)), key=lambda i: scored[i].logprob / len(item.choices[i].lstrip(" "))),
            "acc_per_token": max(range(len(scored)), key=lambda i: scored[i].logprob / scored[i].tokens),
        }
        for key, pick in picks.items():
            hits[key] += pick == item.label
        rows.append(
            {
                "where": item.where,
                "label": item.label,
                "pick": picks["acc"],
                "logprobs": [round(s.logprob, 5) for s in scored],
            }
        )
    n = len(items)
    return {**{k: v / n for k, v in hits.items()}, "n": n, "rows": rows}


def evaluate(run: Any, options: Any) -> dict[str, Any]:
    from sigerlm.assemble import current_model
    from sigerlm_eval.scoring import ContinuationScorer

    items = [make_item(where, row, options) for where, row in read_rows(options.files, options.limit)]
    if not items:
        raise EvalDataError(f"multiple-choice: no items in {', '.join(map(str, options.files))}")
    model = current_model(run)
    tokenizer = tokenizer_of(run, model)
    scorer = ContinuationScorer(model, runtime_for(run, model, options.runtime))
    result = accuracy(items, score_items(scorer, tokenizer, items, options.batch_size))
    record_details(run, result.pop("rows"))
    return result
