"""Evaluation benchmark (sigerlm-eval): stateful against windowed perplexity on one long
document, and multiple-choice items/s through the runtime with shared context states.

Random weights and random token ids (speed, and how far the two perplexities differ; not model
quality). Prints JSON; state the CPU, threads and allocator with the figures.

    python benchmarks/eval.py --threads 1 --tokens 16384 --profile small --vocab 32000
    python benchmarks/eval.py --quick        # a tiny shape, to check that the script works

Not measured yet: transformers' GPT-2 of equal size through the same code path (issue 17).
"""

from __future__ import annotations

import argparse
import json
import math
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="small")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.profile, args.vocab, args.tokens, args.window, args.stride, args.items = "tiny", 512, 2048, 256, 128, 16
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.runtime import TorchRuntime
    from sigerlm_eval.scoring import ContinuationScorer, document_nll, windowed_nll
    from sigerlm_text.model import text_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = text_model(SigerConfig.from_profile(args.profile), args.vocab).eval()
    ids = torch.randint(0, args.vocab, (args.tokens + 1,)).tolist()
    document_nll(model, ids[:256], args.chunk)  # warm up (kernels)
    out: dict = {"profile": args.profile, "vocab": args.vocab, "threads": args.threads, "tokens": args.tokens}
    start = time.perf_counter()
    nll, n = document_nll(model, ids, args.chunk)
    seconds = time.perf_counter() - start
    out["stateful"] = {"seconds": seconds, "tokens_per_s": n / seconds, "perplexity": math.exp(nll / n)}
    start = time.perf_counter()
    nll_w, n = windowed_nll(model, ids, args.window, args.stride)
    seconds = time.perf_counter() - start
    out["windowed"] = {
        "window": args.window,
        "stride": args.stride,
        "seconds": seconds,
        "tokens_per_s": n / seconds,
        "perplexity": math.exp(nll_w / n),
    }
    scorer = ContinuationScorer(model, TorchRuntime(model))
    items = [
        (torch.randint(0, args.vocab, (48,)).tolist(), [torch.randint(0, args.vocab, (8,)).tolist() for _ in range(4)])
        for _ in range(args.items)
    ]
    scorer.score(items[:2])
    start = time.perf_counter()
    for i in range(0, len(items), 16):
        scorer.score(items[i : i + 16])
    seconds = time.perf_counter() - start
    out["multiple_choice"] = {
        "items": len(items),
        "context": 48,
        "choices": 4,
        "choice_tokens": 8,
        "items_per_s": len(items) / seconds,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
