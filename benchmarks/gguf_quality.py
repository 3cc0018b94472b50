"""A trained text model in llama.cpp: how close ``siger export gguf`` stays to SigerLM.

For each ``--type`` (f32, f16, q8_0, q4_0) the model folder is exported with the ``gguf``
exporter and run in llama.cpp (llama-cpp-python, a test extra of sigerlm-text) over the first
``--positions`` tokens of a validation file. Both sides score the same ids (SigerLM's tokenizer;
llama.cpp's own tokenizer is checked to give the same ids), and the table gives the file size,
the top-1 agreement of llama.cpp's next-token choice with SigerLM's at every position, both
perplexities over those positions, and whether ``--greedy`` greedy tokens after a prompt agree.

    python benchmarks/gguf_quality.py --model runs/quickstart/model          # valid: corpus.valid.jsonl beside it
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

TYPES = ("f32", "f16", "q8_0", "q4_0")


def perplexity(logits, ids) -> float:
    """exp of the mean next-token negative log-likelihood; ``logits`` (n, v) scores ids[1:]."""
    import numpy as np

    logits = logits[:-1].astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return math.exp(-float(logp[np.arange(len(ids) - 1), ids[1:]].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a SigerLM text model folder")
    parser.add_argument("--valid", type=Path, help="validation JSONL (default: corpus.valid.jsonl beside --model)")
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--greedy", type=int, default=24, help="greedy tokens compared after a prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()

    import numpy as np
    import torch
    from llama_cpp import Llama

    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_text.model import lm_forward

    torch.set_num_threads(args.threads)
    pm = make_plugin_manager()
    model = load_model(args.model, pm).eval()
    tokenizer = model.adapter.tokenizer
    valid = args.valid or args.model.parent / "corpus.valid.jsonl"
    lines = valid.read_text(encoding="utf-8").splitlines()
    text = "\n\n".join(json.loads(line)["text"] for line in lines if line.strip())
    ids = tokenizer.encode(text)[: args.positions]
    prompt = ids[:16]
    with torch.no_grad():
        ours = lm_forward(model, torch.tensor([ids])).logits[0].numpy()
        greedy = list(prompt)
        for _ in range(args.greedy):  # SigerLM's greedy continuation, recomputed in full each token
            greedy.append(int(lm_forward(model, torch.tensor([greedy])).logits[0, -1].argmax()))
    rows = [{"type": "SigerLM (torch)", "perplexity": perplexity(ours, ids)}]
    exporter = pm.get_component("exporters", "gguf")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in TYPES:
            path = exporter.build(model, Path(tmp) / f"{kind}.gguf", options={"type": kind})
            llm = Llama(
                str(path), n_ctx=len(ids) + 8, n_batch=512, n_threads=args.threads, logits_all=True, verbose=False
            )
            same_ids = llm.tokenize(text[:2000].encode(), add_bos=False, special=True) == tokenizer.encode(text[:2000])
            llm.eval(ids)
            theirs = np.array(llm.scores[: len(ids)])
            llm.reset()
            out = list(prompt)
            llm.eval(out)
            for _ in range(args.greedy):
                out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([out[-1]])
            llm.close()
            rows.append(
                {
                    "type": kind,
                    "file_mib": Path(path).stat().st_size / 2**20,
                    "same_token_ids": same_ids,
                    "top1_agreement": float((theirs.argmax(-1) == ours.argmax(-1)).mean()),
                    "perplexity": perplexity(theirs, ids),
                    "greedy_equal": out == greedy,
                }
            )
    print(f"model: {args.model}; {len(ids)} positions of {valid}; {args.greedy} greedy tokens; threads {args.threads}")
    print("\n| type | file MiB | token ids | top-1 agreement | perplexity | greedy tokens |\n|---|---|---|---|---|---|")
    for r in rows:
        if "file_mib" not in r:
            print(f"| {r['type']} | - | - | - | {r['perplexity']:.2f} | - |")
            continue
        print(
            f"| {r['type']} | {r['file_mib']:.1f} | {'equal' if r['same_token_ids'] else 'differ'} | "
            f"{100 * r['top1_agreement']:.1f}% | {r['perplexity']:.2f} | {'equal' if r['greedy_equal'] else 'differ'} |"
        )
    if args.out:
        report = {"model": str(args.model), "positions": len(ids), "rows": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
