"""MoE benchmark: training tokens/s of the MoE branch (grouped dispatch) against the dense
feed-forward with the same active parameters per token and against the masked reference.

At d_model 384 (the small_moe width) on 8 x 128 = 1024 tokens a step, forward + backward +
AdamW of the branch alone (norm, router, experts; the SSM mixer is the same in every variant
and is left out so the branch's cost is what is compared), for 4 and 8 experts, top-1 and
top-2. The variants run interleaved, round after round, and the median of each is reported
with ratios measured in the same run:

- ``grouped``: sigerlm-moe's fast path (each expert computes only its tokens);
- ``masked``: the readable reference (every expert on every token, masked);
- ``dense``: one SwiGLU feed-forward of width ``top_k * d_expert`` (the MoE's active
  parameters per token) with no router.

Run (alone on the machine if you can)::

    python benchmarks/moe.py --threads 1 --rounds 5 --out docs/benchmarks/moe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from sigerlm.model.config import SigerConfig
from sigerlm_moe.block import Expert, MoEBranch
from sigerlm_moe.hooks import MoEOptions


class DenseFFN(nn.Module):
    def __init__(self, config, width):
        super().__init__()
        from sigerlm.model.block import make_norm

        self.norm = make_norm(config)
        self.ffn = Expert(config.d_model, width, "swiglu")
        nn.init.normal_(self.ffn.down.weight, std=0.02)

    def forward(self, x):
        return x + self.ffn(self.norm(x))


def build(kind, config, n_experts, top_k, d_expert):
    torch.manual_seed(0)
    if kind == "dense":
        return DenseFFN(config, top_k * d_expert)
    module = MoEBranch(config, 0, MoEOptions(n_experts=n_experts, top_k=top_k, d_expert=d_expert, dispatch=kind))
    for expert in module.experts:
        nn.init.normal_(expert.down.weight, std=0.02)
    return module


def time_steps(module, x, steps):
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = module(x)
        loss = out.pow(2).mean()
        pop = getattr(module, "pop_aux", None)
        if pop is not None:
            weight, aux = pop()["losses"]["moe_aux"]
            loss = loss + weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first step allocates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SigerConfig.from_profile("small_moe", d_model=args.d_model)
    d_expert = args.d_model
    tokens = args.batch * args.seq
    x = torch.randn(args.batch, args.seq, args.d_model)
    cases = [(e, k) for e in (4, 8) for k in (1, 2)]
    modules = {
        (kind, e, k): build(kind, config, e, k, d_expert) for e, k in cases for kind in ("grouped", "masked", "dense")
    }
    samples = {key: [] for key in modules}
    for _ in range(args.rounds):
        for key, module in modules.items():  # interleaved: every variant once per round
            samples[key].append(time_steps(module, x, args.steps))
    rows = []
    for e, k in cases:
        tps = {kind: tokens / statistics.median(samples[(kind, e, k)]) for kind in ("grouped", "masked", "dense")}
        rows.append(
            {
                "experts": e,
                "top_k": k,
                "grouped_tokens_per_s": round(tps["grouped"]),
                "masked_tokens_per_s": round(tps["masked"]),
                "dense_equal_active_tokens_per_s": round(tps["dense"]),
                "grouped_vs_dense": round(tps["grouped"] / tps["dense"], 2),
                "grouped_vs_masked": round(tps["grouped"] / tps["masked"], 2),
            }
        )
    print(f"threads {args.threads}, {tokens} tokens a step, d_model {args.d_model}, d_expert {d_expert}")
    print("experts top_k  grouped  masked  dense(equal active)  grouped/dense  grouped/masked")
    for r in rows:
        print(
            f"{r['experts']:>7} {r['top_k']:>5} {r['grouped_tokens_per_s']:>8} {r['masked_tokens_per_s']:>7} "
            f"{r['dense_equal_active_tokens_per_s']:>20} {r['grouped_vs_dense']:>14} {r['grouped_vs_masked']:>15}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
