"""The ``diversity`` evaluator: ``samples`` sampled answers per prompt; distinct-1/2/3 over all
of them, the mean repetition rate (share of a text's word 3-grams seen earlier in it) and
self-BLEU (each answer against the others of its prompt; lower is more diverse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sigerlm_eval import metrics
from sigerlm_eval.common import expand, generate, read_rows, record_details, text_field


def prompts_of(options: Any) -> list[str]:
    prompts = list(options.prompts)
    for path in expand(options.files, (".jsonl", ".txt")):
        if path.suffix == ".jsonl":
            prompts += [text_field(where, row, options.field) for where, row in read_rows([path])]
        else:
            prompts += [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts[: options.limit] if options.limit else prompts


def scores(groups: list[list[str]]) -> dict[str, float]:
    """The diversity scores of generations grouped by prompt."""
    texts = [t for group in groups for t in group]
    return {
        "distinct_1": metrics.distinct(texts, 1),
        "distinct_2": metrics.distinct(texts, 2),
        "distinct_3": metrics.distinct(texts, 3),
        "repetition_rate": sum(metrics.repetition_rate(t) for t in texts) / max(len(texts), 1),
        "self_bleu": sum(metrics.self_bleu(g) for g in groups) / max(len(groups), 1),
        "n": len(texts),
    }


def evaluate(run: Any, options: Any) -> dict[str, Any]:
    from sigerlm.assemble import current_model

    model = current_model(run)
    prompts = prompts_of(options)
    repeated = [p for p in prompts for _ in range(options.samples)]
    sampling = {"temperature": options.temperature, "top_p": options.top_p, "seed": options.seed}
    texts = generate(run, model, repeated, options, sampling=sampling)
    groups = [texts[i : i + options.samples] for i in range(0, len(texts), options.samples)]
    record_details(run, [{"prompt": p, "samples": g} for p, g in zip(prompts, groups, strict=True)])
    return scores(groups)
