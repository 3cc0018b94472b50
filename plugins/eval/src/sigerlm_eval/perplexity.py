"""The ``perplexity`` evaluator.

Files: every document (a ``.txt`` file, or a JSONL row's ``field``) is encoded after
``<|endoftext|>`` (as training joins documents) and every one of its tokens is scored.
``stateful`` (default) runs each document once, in chunks with the state carried across
(exact; constant memory); ``windowed`` restarts from a fresh state every ``stride`` tokens with
up to ``window`` tokens of context, as transformers do. Reported: ``perplexity`` (token-weighted
over all documents), ``bits_per_byte`` (the same negative log-likelihood over the documents'
UTF-8 bytes: comparable across tokenizers), ``tokens``, ``bytes``, ``documents``.

Dataset: any dataset component; the token-weighted mean of the adapter's ``loss`` over its
batches (``count_tokens`` positions each), so it works for any adapter with a loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sigerlm_eval.common import EvalDataError, expand, read_rows, start_id, text_field, tokenizer_of


def documents(files: list[str], field: str, limit: int | None):
    count = 0
    for path in expand(files, (".txt", ".jsonl")):
        if path.suffix == ".jsonl":
            for where, row in read_rows([path]):
                yield where, text_field(where, row, field)
                count += 1
                if limit is not None and count >= limit:
                    return
        else:
            text = Path(path).read_text(encoding="utf-8")
            if not text.strip():
                raise EvalDataError(f"{path}: an empty document")
            yield str(path), text
            count += 1
            if limit is not None and count >= limit:
                return


def evaluate(run: Any, options: Any) -> dict[str, Any]:
    from sigerlm.assemble import current_model

    model = current_model(run)
    if options.dataset is not None:
        return dataset_perplexity(run, model, options)
    from sigerlm_eval.common import runtime_for
    from sigerlm_eval.scoring import document_nll, windowed_nll

    tokenizer = tokenizer_of(run, model)
    first = start_id(tokenizer)
    window = options.window or _max_seq_len(model)
    stride = options.stride or max(window // 2, 1)
    if stride > window:
        raise EvalDataError(f"perplexity: stride ({stride}) must not exceed window ({window})")
    runtime = runtime_for(run, model, options.runtime)
    total, tokens, n_bytes, docs = 0.0, 0, 0, 0
    for _, text in documents(options.files, options.field, options.limit):
        ids = [first, *tokenizer.encode(text, allow_special=False)]
        if options.mode == "stateful":
            nll, n = document_nll(runtime, ids, options.chunk)
        else:
            nll, n = windowed_nll(runtime, ids, window, stride)
        total, tokens, n_bytes, docs = total + nll, tokens + n, n_bytes + len(text.encode("utf-8")), docs + 1
    if not tokens:
        raise EvalDataError(f"perplexity: no text in {', '.join(map(str, options.files))}")
    out = {
        "perplexity": math.exp(min(total / tokens, 50)),
        "bits_per_byte": total / math.log(2) / n_bytes,
        "loss": total / tokens,
        "tokens": tokens,
        "bytes": n_bytes,
        "documents": docs,
    }
    if options.mode == "windowed":
        out.update(window=window, stride=stride)
    return out


def _max_seq_len(model: Any) -> int:
    return int(getattr(getattr(model, "config", None), "max_seq_len", 0) or 1024)


def dataset_perplexity(run: Any, model: Any, options: Any) -> dict[str, Any]:
    """Token-weighted mean of the adapter's loss over a dataset's batches (any modality)."""
    import torch

    spec = options.dataset
    dataset = run.plugin_manager.get_component("datasets", spec.use).build(run, options=spec.options)
    count = getattr(model.adapter, "count_tokens", None)
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for i, batch in enumerate(dataset):
            if options.batches is not None and i >= options.batches:
                break
            hidden = model.forward_hidden(model.adapter.embed(batch))  # (b, l, d)
            loss = float(model.adapter.loss(batch, hidden))
            n = int(count(batch)) if callable(count) else int(next(iter(batch.values())).shape[:2].numel())
            total, tokens = total + loss * n, tokens + n
    if not tokens:
        raise EvalDataError(f"perplexity: dataset {spec.use} gave no batches")
    loss = total / tokens
    return {"perplexity": math.exp(min(loss, 50)), "loss": loss, "tokens": tokens}
