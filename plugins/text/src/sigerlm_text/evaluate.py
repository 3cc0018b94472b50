"""The ``eval-generation`` step: generate answers for JSONL rows and score them against references.

Rows become prompts through the same templates ``instruction_jsonl`` trains with (so a
translation adapter is asked exactly the way it was taught); the answer is decoded greedily
and scored with sacrebleu: chrF++ (``word_order=2``), BLEU and exact match, per template and
overall. The model is the run's current one: the model the train step just trained, or, before
any training, the manifest's model built afresh (``model.init_from`` and its transforms; a new
LoRA adapter changes nothing until trained). Predictions go to a JSONL file in the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.text")


def score(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    try:
        import sacrebleu
    except ImportError:
        raise SigerError("eval-generation scores with sacrebleu: pip install 'sigerlm-text[eval]'") from None
    if not hypotheses:
        return {"n": 0}
    chrf = sacrebleu.corpus_chrf(hypotheses, [references], word_order=2)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    exact = sum(h.strip().lower() == r.strip().lower() for h, r in zip(hypotheses, references, strict=True))
    return {
        "n": len(hypotheses),
        "chrf_pp": round(chrf.score, 2),
        "bleu": round(bleu.score, 2),
        "exact_match": round(100 * exact / len(hypotheses), 2),
    }


def eval_generation(run: Any, options: Any) -> dict[str, Any]:
    """The step's factory: returns ``{template: scores, ..., "overall": scores}``."""
    files, templates, where, limit = options.files, options.templates, options.where, options.limit
    max_new_tokens, batch_size, name = options.max_new_tokens, options.batch_size, options.name
    import torch

    from sigerlm.assemble import current_model
    from sigerlm.io import atomic_write, read_jsonl
    from sigerlm_text.chat import fill_template, instruction_to_messages, row_matches
    from sigerlm_text.chat_session import PromptBuilder
    from sigerlm_text.datasets import expand
    from sigerlm_text.generation import GenerationConfig, Generator, make_runtime

    tokenizer = run.state.get("tokenizer")
    if tokenizer is None:
        raise SigerError(
            "eval-generation needs the run's tokenizer (a train-tokenizer step, or model.init_from a text model folder)"
        )
    rows: list[dict[str, Any]] = []
    for file in expand(files, (".jsonl",)):
        for number, row, error in read_jsonl(file):
            if error is not None:
                raise SigerError(f"{file}:{number}: {error}")
            if isinstance(row, dict) and row_matches(row, where):
                rows.append(row)
    model = current_model(run)
    generator = Generator(make_runtime(model, options.runtime, None, run.plugin_manager), tokenizer)
    builder = PromptBuilder(tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    results: dict[str, Any] = {}
    predictions: list[dict[str, Any]] = []
    all_hyp: list[str] = []
    all_ref: list[str] = []
    for index, template in enumerate(templates):
        spec = template.model_dump() if hasattr(template, "model_dump") else dict(template)
        label = spec.pop("name", "") or f"template{index}"
        pairs = [(f, f["output"]) for f in (fill_template(spec, row) for row in rows) if f is not None][:limit]
        hyps: list[str] = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            prompts = [builder.build(instruction_to_messages(filled)[:-1]) for filled, _ in chunk]
            with torch.inference_mode():
                decoded = generator.generate_ids(prompts, config)
            hyps += [row.text.strip() for row in decoded]
        refs = [ref for _, ref in pairs]
        results[label] = score(hyps, refs)
        for (filled, ref), hyp in zip(pairs, hyps, strict=True):
            predictions.append(
                {"template": label, "prompt": filled["instruction"], "reference": ref, "prediction": hyp}
            )
        all_hyp += hyps
        all_ref += refs
        log.info("%s %s: %s", name, label, results[label])
    results["overall"] = score(all_hyp, all_ref)
    out = Path(run.out_dir) / f"{name}.predictions.jsonl"
    if run.is_main:
        atomic_write(out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    results["predictions"] = str(out)
    return results
