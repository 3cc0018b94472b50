"""LoRA tuning against full fine-tuning of the same model: step time and peak memory.

Both tune the ``small`` SigerLM (d_model 256, 8 layers, d_state 16, vocab 32000 tied, 11.7M
parameters) on the same random batches with AdamW: ``full`` trains every parameter, ``lora``
trains rank-``r`` adapters on in_proj, out_proj, x_proj and dt_proj with the base frozen.
Each mode runs in its own process (peak RSS is per process), alternating, ``--rounds`` times;
the report gives medians and the ratios lora / full: step time, peak RSS (glibc malloc), and,
free of allocator effects, the bytes autograd saves for backward and the trainable state
(gradients and AdamW's moments). Run alone:

    python benchmarks/lora.py --threads 2 --out docs/benchmarks/lora.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from backbone import JEMALLOC, peak_mb, rss_mb


def job(spec: dict) -> dict:
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import lm_forward, text_model

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    config = SigerConfig.from_profile("tiny" if spec["quick"] else "small", max_seq_len=spec["seq_len"])
    model = text_model(config, spec["vocab"]).train()
    if spec["mode"] == "lora":
        from sigerlm_lora import LoraConfig, add_adapter, train_only

        add_adapter(model, "default", LoraConfig(rank=spec["rank"], alpha=2 * spec["rank"]))
        trainable, total = train_only(model, "default")
    else:
        trainable = total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    base_rss = rss_mb()
    g = torch.Generator().manual_seed(1)
    times = []
    for step in range(spec["warmup"] + spec["steps"]):
        ids = torch.randint(0, spec["vocab"], (spec["batch"], spec["seq_len"] + 1), generator=g)
        start = time.perf_counter()
        loss = lm_forward(model, ids[:, :-1], labels=ids[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    peak = peak_mb()
    tokens = spec["batch"] * spec["seq_len"]
    # exact accounting, free of allocator effects: what autograd keeps for backward, and the
    # trainable state (gradients + AdamW's two moments)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = lm_forward(model, ids[:, :-1], labels=ids[:, 1:]).loss
    del loss
    moments = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t) and t.ndim > 0
    )
    return {
        "step_ms": 1000 * statistics.median(times),
        "tokens_per_s": tokens / statistics.median(times),
        "peak_rss_mb": peak,
        "training_mb": peak - base_rss,
        "saved_activations_mb": sum(saved.values()) / 2**20,
        "trainable_state_mb": (moments + 4 * trainable) / 2**20,
        "trainable": trainable,
        "parameters": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the tiny profile, a few steps: checks that it runs")
    parser.add_argument("--jemalloc", action="store_true", help=f"preload {JEMALLOC} in the measurements")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(json.loads(args.job))))
        return
    if args.quick:
        args.batch, args.seq_len, args.steps, args.warmup, args.rounds = 2, 32, 2, 1, 1
    env = dict(os.environ)
    if args.jemalloc:
        if not Path(JEMALLOC).exists():
            sys.exit(f"--jemalloc: {JEMALLOC} not found (apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = JEMALLOC
    runs: dict[str, list[dict]] = {"full": [], "lora": []}
    for _ in range(args.rounds):
        for mode in runs:  # alternate, so drifting machine load hits both alike
            spec = {
                "mode": mode,
                "threads": args.threads,
                "batch": args.batch,
                "seq_len": args.seq_len,
                "rank": args.rank,
                "steps": args.steps,
                "warmup": args.warmup,
                "quick": args.quick,
                "vocab": 512 if args.quick else 32000,
            }
            proc = subprocess.run(
                [sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True, env=env
            )
            if proc.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = {}
    for mode, rows in runs.items():
        summary[mode] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    ratios = {
        "step_time_lora_over_full": summary["lora"]["step_ms"] / summary["full"]["step_ms"],
        "peak_rss_lora_over_full": summary["lora"]["peak_rss_mb"] / summary["full"]["peak_rss_mb"],
        "training_memory_lora_over_full": summary["lora"]["training_mb"] / max(summary["full"]["training_mb"], 1e-9),
        "saved_activations_lora_over_full": summary["lora"]["saved_activations_mb"]
        / summary["full"]["saved_activations_mb"],
        "trainable_state_lora_over_full": summary["lora"]["trainable_state_mb"] / summary["full"]["trainable_state_mb"],
        "trainable_fraction": summary["lora"]["trainable"] / summary["lora"]["parameters"],
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "job")}
    settings["allocator"] = "jemalloc" if args.jemalloc else "glibc"
    report = {"settings": settings, "results": summary, "ratios": ratios, "rounds": runs}
    print(
        f"{'mode':6} {'step ms':>9} {'tok/s':>8} {'peak RSS MB':>12} {'training MB':>12} {'saved act MB':>13} "
        f"{'grad+adam MB':>13} {'trainable':>12}"
    )
    for mode, row in summary.items():
        print(
            f"{mode:6} {row['step_ms']:9.1f} {row['tokens_per_s']:8.0f} {row['peak_rss_mb']:12.0f} "
            f"{row['training_mb']:12.0f} {row['saved_activations_mb']:13.1f} {row['trainable_state_mb']:13.1f} "
            f"{int(row['trainable']):12,d}"
        )
    print("lora / full: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
