"""MoE benchmarks: the branch's training speed and peak RSS (``speed``), and validation
perplexity for the same CPU minutes on the quickstart data (``quality``).

``speed``: training tokens/s of the MoE branch (grouped dispatch) against the dense
feed-forward with the same active parameters per token and against the masked reference. At
d_model 384 (the small_moe width) on 8 x 128 = 1024 tokens a step, forward + backward + AdamW
of the branch alone (norm, router, experts; the SSM mixer is the same in every variant and is
left out so the branch's cost is what is compared), for 4 and 8 experts, top-1 and top-2. The
variants run interleaved, round after round, and the median of each is reported with ratios
measured in the same run:

- ``grouped``: sigerlm-moe's fast path (each expert computes only its tokens);
- ``masked``: the readable reference (every expert on every token, masked);
- ``dense``: one SwiGLU feed-forward of width ``top_k * d_expert`` (the MoE's active
  parameters per token) with no router.

Peak RSS cannot be told apart inside one interleaved process, so each variant also runs alone
in a child process (the same steps) that reports its RSS before the variant is built and its
peak RSS while it is built and trained (``VmHWM``, reset after the imports).

``quality``: one ``siger run`` manifest (built here) builds
the quickstart corpus and tokenizer from ../shared/data and trains five ``stage``s of the same
wall-clock budget each, one after another: ``dense`` (moe_dense_base), ``moe`` (small_moe from
scratch), ``moe-noaux`` (the same with ``aux_loss_weight: 0``), and two stages warm-started
from ``dense``: ``dense-more`` (the dense model trained on) and ``moe-warm`` (small_moe,
experts added). Every stage evaluates on the same validation batches; ``moe_dead`` comes from
each stage's ``metrics.jsonl``. The profiles' 384 x 10 shape is too big for minutes on two
cores: the stages use ``--d-model`` x ``--layers`` (default 128 x 4) with the profiles'
structure unchanged (the branch on every second layer, 8 experts, top-2, SwiGLU of width
d_model).

Run (alone on the machine if you can)::

    python benchmarks/moe.py speed --threads 1 --rounds 5 --out docs/benchmarks/moe.json
    python benchmarks/moe.py quality --minutes 3 --out runs/moe-quality
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sigerlm.model.config import SigerConfig
from sigerlm_moe.block import Expert, MoEBranch
from sigerlm_moe.hooks import MoEOptions

ROOT = Path(__file__).resolve().parents[1]


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


def status_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (the peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def rss_child(args) -> None:
    """One variant alone: its RSS before it is built and the peak while it is built and trained
    for ``--steps`` steps (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``, so the
    imports' own peak does not hide the variant's)."""
    torch.set_num_threads(args.threads)
    config = SigerConfig.from_profile("small_moe", d_model=args.d_model)
    x = torch.randn(args.batch, args.seq, args.d_model)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    before = status_mb("VmRSS")
    module = build(args.kind, config, args.experts, args.top_k, args.d_model)
    time_steps(module, x, args.steps)
    peak = status_mb("VmHWM")
    print(json.dumps({"rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1)}))


def peak_rss(kind, e, k, args) -> dict[str, float]:
    command = [sys.executable, __file__, "rss", "--kind", kind, "--experts", str(e), "--top-k", str(k)]
    for flag in ("threads", "steps", "batch", "seq", "d_model"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    config = SigerConfig.from_profile("small_moe", d_model=args.d_model)
    d_expert = args.d_model
    tokens = args.batch * args.seq
    x = torch.randn(args.batch, args.seq, args.d_model)
    cases = [(e, k) for e in (4, 8) for k in (1, 2)]
    kinds = ("grouped", "masked", "dense")
    modules = {(kind, e, k): build(kind, config, e, k, d_expert) for e, k in cases for kind in kinds}
    samples = {key: [] for key in modules}
    for _ in range(args.rounds):
        for key, module in modules.items():  # interleaved: every variant once per round
            samples[key].append(time_steps(module, x, args.steps))
    rss = {key: peak_rss(*key, args) for key in modules} if args.rss else {}
    rows = []
    for e, k in cases:
        tps = {kind: tokens / statistics.median(samples[(kind, e, k)]) for kind in kinds}
        row = {
            "experts": e,
            "top_k": k,
            "grouped_tokens_per_s": round(tps["grouped"]),
            "masked_tokens_per_s": round(tps["masked"]),
            "dense_equal_active_tokens_per_s": round(tps["dense"]),
            "grouped_vs_dense": round(tps["grouped"] / tps["dense"], 2),
            "grouped_vs_masked": round(tps["grouped"] / tps["masked"], 2),
        }
        for kind in kinds if rss else ():
            row[f"{kind}_peak_rss_mb"] = rss[(kind, e, k)]["peak_rss_mb"]
            row[f"{kind}_rss_before_mb"] = rss[(kind, e, k)]["rss_before_mb"]
        rows.append(row)
    print(f"threads {args.threads}, {tokens} tokens a step, d_model {args.d_model}, d_expert {d_expert}")
    print(
        "experts top_k  grouped  masked  dense(equal active)  grouped/dense  grouped/masked  "
        "peak RSS MB g/m/d (+ over the start)"
    )
    for r in rows:
        mem = "/".join(str(round(r.get(f"{kind}_peak_rss_mb", 0))) for kind in kinds) if rss else "-"
        if rss:
            grow = [r[f"{kind}_peak_rss_mb"] - r[f"{kind}_rss_before_mb"] for kind in kinds]
            mem += " (+" + "/+".join(str(round(g)) for g in grow) + ")"
        print(
            f"{r['experts']:>7} {r['top_k']:>5} {r['grouped_tokens_per_s']:>8} {r['masked_tokens_per_s']:>7} "
            f"{r['dense_equal_active_tokens_per_s']:>20} {r['grouped_vs_dense']:>14} {r['grouped_vs_masked']:>15}"
            f"  {mem}"
        )
    if rss:
        print(f"RSS before building a variant (imports and the input): {rows[0]['grouped_rss_before_mb']} MB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


# -- quality ---------------------------------------------------------------------------------------


def quality_manifest(args) -> dict:
    shape = {"d_model": args.d_model, "n_layers": args.layers, "max_seq_len": args.seq}
    adapter = {"use": "text", "vocab_size": args.vocab, "tokenizer": "${out}/tokenizer"}
    data = {"files": None, "tokenizer": "${out}/tokenizer", "batch_size": args.batch}
    train = {
        "max_steps": 100000,
        "max_minutes": args.minutes,
        "lr": 0.002,
        "warmup_steps": 30,
        "eval_every": args.eval_every,
        "eval_batches": args.eval_batches,
        "checkpoint_every": None,
        "threads": args.threads,
        "progress": False,
        "plot": False,
        "baseline": "none",
    }
    more = dict(train, lr=0.001)  # the warm-started stages: a fresh schedule at the pipeline's lr
    dense_folder = {"path": "${out}/stages/dense/model", "strict": False}

    def stage(name, profile, train, block=None, init_from=None):
        model = {"profile": profile, "config": shape, "adapter": adapter}
        if block is not None:
            model["block"] = block
        if init_from is not None:
            model["init_from"] = init_from
        return {"use": "stage", "name": name, "model": model, "train": train}

    return {
        "siger": 1,
        "name": "moe-quality",
        "plugins": ["text", "moe"],
        "seed": 0,
        "data": {
            "train": {"use": "text_completion", **data, "files": ["${out}/corpus.train.jsonl"]},
            "valid": {"use": "text_completion", **data, "files": ["${out}/corpus.valid.jsonl"], "shuffle": False},
        },
        "steps": [
            {
                "use": "build-corpus",
                "config": "registry/datasets/quickstart.yaml",
                "out": "corpus.jsonl",
                "valid_fraction": 0.02,
            },
            {"use": "train-tokenizer", "files": ["${out}/corpus.train.jsonl"], "vocab_size": args.vocab},
            stage("dense", "moe_dense_base", train),
            stage("moe", "small_moe", train),
            stage("moe-noaux", "small_moe", train, block={"use": "moe", "aux_loss_weight": 0.0}),
            stage("dense-more", "moe_dense_base", more, init_from=dense_folder),
            stage("moe-warm", "small_moe", more, init_from=dense_folder),
        ],
    }


def dead_over_time(rows, parts=5):
    """The mean ``moe_dead`` of each fifth of the steps, oldest first."""
    values = [r["moe_dead"] for r in rows if "moe_dead" in r]
    if not values:
        return None
    size = max(1, len(values) // parts)
    chunks = [values[i * size : (i + 1) * size if i < parts - 1 else len(values)] for i in range(parts)]
    return [round(sum(c) / len(c), 3) for c in chunks if c]


def quality(args) -> None:
    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute

    out = Path(args.out).resolve()
    manifest = quality_manifest(args)
    resolved, pm = load_manifest(manifest, [f"out_dir={out}"], force=args.force)
    started = time.perf_counter()
    execute(resolved, pm, out_dir=out, force=args.force, resume=args.resume)
    total = time.perf_counter() - started
    stages = ["dense", "moe", "moe-noaux", "dense-more", "moe-warm"]
    budget = {"dense": 1, "moe": 1, "moe-noaux": 1, "dense-more": 2, "moe-warm": 2}
    rows = []
    for name in stages:
        lines = (out / "stages" / name / "metrics.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines if line.strip()]
        result = json.loads((out / "stages" / name / "metrics.json").read_text())["steps"][0]["results"]
        evals = [h for h in history if "valid_loss" in h]
        rows.append(
            {
                "stage": name,
                "minutes_in_total": budget[name] * args.minutes,
                "steps": result["steps"],
                "parameters": result["parameters"],
                "tokens_per_s": round(result["tokens_per_s"]),
                "valid_perplexity": round(result["valid_perplexity"], 2),
                "valid_moe_dead": evals[-1].get("valid_moe_dead") if evals else None,
                "moe_dead_by_fifths": dead_over_time(history),
                "moe_aux_last": round(history[-1]["moe_aux"], 4) if "moe_aux" in history[-1] else None,
                "valid_perplexity_by_eval": [(h["step"], round(h["valid_perplexity"], 1)) for h in evals],
            }
        )
    print(
        f"d_model {args.d_model} x {args.layers} layers, seq {args.seq} x batch {args.batch}, "
        f"{args.minutes} min a stage, {args.threads} thread(s); total {total / 60:.1f} min"
    )
    print(
        "stage       minutes  steps  params    tok/s  valid ppl  valid dead  moe_aux  moe_dead by fifths of the steps"
    )
    for r in rows:
        print(
            f"{r['stage']:<11} {r['minutes_in_total']:>7} {r['steps']:>6} {r['parameters']:>7} {r['tokens_per_s']:>8} "
            f"{r['valid_perplexity']:>10} {r['valid_moe_dead']!s:>11} {r['moe_aux_last']!s:>8}  "
            f"{r['moe_dead_by_fifths']}"
        )
    (out / "moe-quality.json").write_text(json.dumps({"args": vars(args), "total_s": total, "rows": rows}, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="tokens/s and peak RSS of the branch: grouped, masked, dense")
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--seq", type=int, default=128)
    sp.add_argument("--d-model", type=int, default=384)
    sp.add_argument("--no-rss", dest="rss", action="store_false", help="skip the child processes for peak RSS")
    sp.add_argument("--out")
    rp = sub.add_parser("rss", help="(internal) one variant alone, for its peak RSS")
    rp.add_argument("--kind", choices=["grouped", "masked", "dense"], required=True)
    rp.add_argument("--experts", type=int, required=True)
    rp.add_argument("--top-k", type=int, required=True)
    for p in (rp,):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--steps", type=int, default=3)
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--seq", type=int, default=128)
        p.add_argument("--d-model", type=int, default=384)
    qp = sub.add_parser("quality", help="validation perplexity for the same CPU minutes on the quickstart data")
    qp.add_argument("--minutes", type=float, default=3.0, help="the budget of each stage")
    qp.add_argument("--d-model", type=int, default=128)
    qp.add_argument("--layers", type=int, default=4)
    qp.add_argument("--seq", type=int, default=128)
    qp.add_argument("--batch", type=int, default=16)
    qp.add_argument("--vocab", type=int, default=4096)
    qp.add_argument("--threads", type=int, default=1)
    qp.add_argument("--eval-every", type=int, default=50)
    qp.add_argument("--eval-batches", type=int, default=10)
    qp.add_argument("--force", action="store_true")
    qp.add_argument("--resume", action="store_true")
    qp.add_argument("--out", default="runs/moe-quality")
    args = parser.parse_args()
    {"speed": speed, "rss": rss_child, "quality": quality}[args.command](args)


if __name__ == "__main__":
    main()
