"""The ``bleu``, ``chrf`` and ``rouge`` evaluators: greedy answers against references.

Rows are ``{instruction, input?, output, system?}`` (the instruction shape) or any shape with a
``template`` (format strings over the row's fields, as ``instruction_jsonl`` trains with; rows
lacking a field it names are skipped). Answers are generated once per run for the same rows and
settings, so ``bleu``, ``chrf`` and ``rouge`` on one file decode once.
"""

from __future__ import annotations

from typing import Any

from sigerlm_eval import metrics
from sigerlm_eval.common import EvalDataError, generate, read_rows, record_details, text_field


def pairs(options: Any) -> list[tuple[str, str, str]]:
    """``(system, prompt, reference)`` for every usable row."""
    from sigerlm_text.chat import fill_template

    out = []
    for where, row in read_rows(options.files):
        if options.template is not None:
            filled = fill_template(options.template.model_dump(), row)
            if filled is None:
                continue
        else:
            filled = {k: text_field(where, row, k) for k in ("instruction", "output")}
            for key in ("input", "system"):
                if row.get(key) is not None and not isinstance(row[key], str):
                    raise EvalDataError(f"{where}: '{key}' must be text")
                filled[key] = row.get(key) or ""
        prompt = filled["instruction"].strip()
        if (filled.get("input") or "").strip():
            prompt += "\n\n" + filled["input"].strip()
        out.append(((filled.get("system") or "").strip(), prompt, filled["output"].strip()))
        if options.limit is not None and len(out) >= options.limit:
            break
    if not out:
        raise EvalDataError(f"no usable rows in {', '.join(map(str, options.files))}")
    return out


def evaluate(run: Any, options: Any, metric: str) -> dict[str, Any]:
    from sigerlm.assemble import current_model

    rows = pairs(options)
    model = current_model(run)
    hyps = generate(run, model, [p for _, p, _ in rows], options, systems=[s for s, _, _ in rows])
    refs = [r for _, _, r in rows]
    record_details(
        run, [{"prompt": p, "reference": r, "prediction": h} for (_, p, r), h in zip(rows, hyps, strict=True)]
    )
    if metric == "bleu":
        out = {"bleu": metrics.bleu(hyps, refs)}
    elif metric == "chrf":
        out = {
            "chrf++" if options.word_order == 2 else f"chrf_w{options.word_order}": metrics.chrf(
                hyps, refs, options.word_order
            )
        }
    else:
        out = metrics.rouge(hyps, refs)
    return {**out, "n": len(rows)}
