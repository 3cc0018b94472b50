"""Evaluation benchmark (sigerlm-eval): stateful against windowed perplexity on one long
document, and multiple-choice items/s through the runtime with shared context states.

Random weights and random token ids (speed, and how far the two perplexities differ; not model
quality). Prints JSON; state the CPU, threads and allocator with the figures.

Beside SigerLM, transformers' GPT-2 (SDPA attention) with as many layers as make its parameter
count outside the embeddings closest to SigerLM's goes through the same code (``document_nll``, ``windowed_nll``,
``ContinuationScorer``): a small wrapper gives it the model contract (``adapter.embed``,
``adapter.head``, ``forward_hidden`` with its KV cache as the state) and a runtime whose
``stack_states`` copies the context's cache to every choice. Its "stateful" perplexity carries
the KV cache, so attention covers the whole document (its position table is extended to it).

    python benchmarks/eval.py --threads 1 --tokens 16384 --profile small --vocab 32000
    python benchmarks/eval.py --quick        # a tiny shape, to check that the script works
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any


def gpt2_like(siger: Any, vocab: int, positions: int) -> Any:
    """A GPT-2 with SigerLM's width and its parameter count, in the model contract the scorers use."""
    import torch
    from torch import nn
    from transformers import DynamicCache, GPT2Config, GPT2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    d = siger.config.d_model
    target = sum(p.numel() for p in siger.parameters())
    # equal parameters outside the embeddings: the position table, extended to the whole
    # document, is a lookup and would otherwise eat the layers' share at 16k tokens
    layers = max(1, round((target - vocab * d) / (12 * d * d + 13 * d)))
    config = GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=max(1, d // 64), n_positions=positions)
    config.update({"bos_token_id": 0, "eos_token_id": 0, "attn_implementation": "sdpa"})
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0

    class Adapter(nn.Module):
        def __init__(self, wte: nn.Embedding):
            super().__init__()
            self.wte = wte

        def embed(self, batch):
            return self.wte(batch["input_ids"])  # (b, l, d)

        def head(self, hidden):
            return hidden @ self.wte.weight.t()  # (..., v), tied as SigerLM's

    class GPT2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = GPT2Model(config)
            self.adapter = Adapter(self.gpt.wte)
            self.layers = layers

        def forward_hidden(self, embeds, state=None, return_state=False):
            out = self.gpt(inputs_embeds=embeds, cache=state, use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            return (out.last_hidden_state, cache) if return_state else out.last_hidden_state

    class Runtime:
        name = "gpt2"

        def __init__(self, model: GPT2):
            self.model = model

        @torch.inference_mode()
        def prefill(self, inputs, state=None):
            hidden, cache = self.model.forward_hidden(self.model.adapter.embed(inputs), state, True)
            return self.model.adapter.head(hidden[:, -1]), cache

        @torch.inference_mode()
        def score(self, inputs, state=None):
            hidden, cache = self.model.forward_hidden(self.model.adapter.embed(inputs), state, True)
            return self.model.adapter.head(hidden), cache

        @staticmethod
        def stack_states(states):
            cache = DynamicCache()
            for i in range(len(states[0].layers)):
                keys = torch.cat([s.layers[i].keys for s in states])
                values = torch.cat([s.layers[i].values for s in states])
                cache.update(keys, values, i)
            return cache

    model = GPT2().eval()
    return model, Runtime(model)


def measure(model: Any, runtime: Any, ids: list, items: list, args: Any) -> dict:
    from sigerlm_eval.scoring import ContinuationScorer, document_nll, windowed_nll

    out: dict = {"parameters": sum(p.numel() for p in model.parameters())}
    document_nll(runtime, ids[:256], args.chunk)  # warm up (kernels)
    start = time.perf_counter()
    nll, n = document_nll(runtime, ids, args.chunk)
    seconds = time.perf_counter() - start
    out["stateful"] = {"seconds": seconds, "tokens_per_s": n / seconds, "perplexity": math.exp(nll / n)}
    start = time.perf_counter()
    nll_w, n = windowed_nll(runtime, ids, args.window, args.stride)
    seconds = time.perf_counter() - start
    out["windowed"] = {
        "window": args.window,
        "stride": args.stride,
        "seconds": seconds,
        "tokens_per_s": n / seconds,
        "perplexity": math.exp(nll_w / n),
    }
    scorer = ContinuationScorer(model, runtime)
    scorer.score(items[:2])
    start = time.perf_counter()
    for i in range(0, len(items), 16):
        scorer.score(items[i : i + 16])
    seconds = time.perf_counter() - start
    out["multiple_choice"] = {"items": len(items), "items_per_s": len(items) / seconds}
    return out


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
    parser.add_argument("--no-gpt2", action="store_true", help="Measure SigerLM alone.")
    args = parser.parse_args()
    if args.quick:
        args.profile, args.vocab, args.tokens, args.window, args.stride, args.items = "tiny", 512, 2048, 256, 128, 16
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.runtime import TorchRuntime
    from sigerlm_text.model import text_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = text_model(SigerConfig.from_profile(args.profile), args.vocab).eval()
    ids = torch.randint(0, args.vocab, (args.tokens + 1,)).tolist()
    items = [
        (torch.randint(0, args.vocab, (48,)).tolist(), [torch.randint(0, args.vocab, (8,)).tolist() for _ in range(4)])
        for _ in range(args.items)
    ]
    out: dict = {"profile": args.profile, "vocab": args.vocab, "threads": args.threads, "tokens": args.tokens}
    out["multiple_choice_shape"] = {"context": 48, "choices": 4, "choice_tokens": 8}
    out["siger"] = measure(model, TorchRuntime(model), ids, items, args)
    if not args.no_gpt2:
        torch.manual_seed(0)
        gpt2, runtime = gpt2_like(model, args.vocab, args.tokens + 2)
        out["gpt2"] = measure(gpt2, runtime, ids, items, args)
        out["gpt2"]["layers"] = gpt2.layers
        out["siger_over_gpt2"] = {
            "stateful_tokens_per_s": out["siger"]["stateful"]["tokens_per_s"] / out["gpt2"]["stateful"]["tokens_per_s"],
            "windowed_tokens_per_s": out["siger"]["windowed"]["tokens_per_s"] / out["gpt2"]["windowed"]["tokens_per_s"],
            "multiple_choice_items_per_s": out["siger"]["multiple_choice"]["items_per_s"]
            / out["gpt2"]["multiple_choice"]["items_per_s"],
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
