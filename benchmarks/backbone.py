"""Backbone benchmark: SigerLM's SSM against the reference loop, mambapy and an equal-size GPT-2.

At the ``small`` shape (d_model 256, 8 layers, d_state 16) with a 32000-token tied embedding
and head, it measures, in one run with the implementations interleaved:

- training tokens/s (forward + backward + AdamW) at sequence lengths 512 and 2048
  (4096 tokens a step), with model-FLOPs utilisation against a matmul measured in the same run;
- prefill tokens/s (no gradients) at 2048;
- decode ms/token at contexts 128, 2048 and 8192, and how much memory decoding adds;
- peak RSS of every measurement (each runs in its own process, so peaks do not mix);
- the scan alone (forward + backward) for each scan back-end.

It prints ratios against the baselines measured in the same run; absolute numbers move with
the machine's load. Implementations:

- ``siger``: the fused scan and conv kernels, with the chunked linear cross-entropy;
- ``siger-plain-ce``: the same backbone with ``F.cross_entropy`` over full logits;
- ``reference``: the same model with the plain loop scan (``scan: reference``);
- ``mambapy``: mambapy 1.2's parallel scan with a tied embedding and head (optional extra);
- ``gpt2``: transformers' ``GPT2LMHeadModel`` with SDPA attention, no dropout, fused GELU,
  and as many layers as make its parameter count closest to SigerLM's (optional extra);
- ``gpt2-lce``: that GPT-2's hidden states with SigerLM's linear cross-entropy, to separate
  the loss from the architecture.

Run (alone on the machine; about 15 minutes on 2 cores)::

    pip install -e "core[bench]"
    python benchmarks/backbone.py --threads 2 --out docs/benchmarks/backbone.json

``--quick`` runs a tiny shape in a minute, to check that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VOCAB = 32000
IMPLS = ["siger", "siger-plain-ce", "reference", "mambapy", "gpt2", "gpt2-lce"]
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


# -- measurements, each in its own process ----------------------------------------------------
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(impl: str, shape: dict[str, int], max_len: int) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    d, n_layers, d_state, vocab = shape["d_model"], shape["n_layers"], shape["d_state"], shape["vocab"]

    if impl in ("siger", "siger-plain-ce", "reference"):
        from sigerlm.model.backbone import Backbone
        from sigerlm.model.config import SigerConfig
        from sigerlm_text.losses import linear_cross_entropy

        config = SigerConfig(
            d_model=d,
            n_layers=n_layers,
            d_state=d_state,
            max_seq_len=max_len,
            scan="reference" if impl == "reference" else "fused",
        )
        from sigerlm.model import kernels

        kernels.load()  # compiled or loaded before the baseline memory is read

        class Siger(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = nn.Embedding(vocab, d)
                nn.init.normal_(self.embedding.weight, std=0.02)
                self.backbone = Backbone(config)

            def loss(self, ids):
                hidden = self.backbone.forward_hidden(self.embedding(ids))
                if impl == "siger-plain-ce":
                    logits = hidden[:, :-1] @ self.embedding.weight.t()
                    return F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
                return linear_cross_entropy(hidden[:, :-1], self.embedding.weight, ids[:, 1:])

            def prefill(self, ids, chunk=None):
                state = None
                for start in range(0, ids.shape[1], chunk or ids.shape[1]):  # chunked: memory bounded by a chunk
                    part = ids[:, start : start + (chunk or ids.shape[1])]
                    hidden, state = self.backbone.forward_hidden(self.embedding(part), state=state, return_state=True)
                return hidden[:, -1] @ self.embedding.weight.t(), state

            def forward_last(self, ids):
                return self.prefill(ids)[0]

            def step(self, token, state):
                hidden, state = self.backbone.step(self.embedding(token), state)
                return hidden @ self.embedding.weight.t(), state

            def matmul_params(self) -> int:
                per_layer = sum(
                    p.numel() for name, p in self.backbone.layers[0].named_parameters() if name.endswith("proj.weight")
                )
                return vocab * d + n_layers * per_layer

        return Siger()

    if impl == "mambapy":
        from mambapy.mamba import Mamba, MambaConfig

        class MambaPy(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = nn.Embedding(vocab, d)
                nn.init.normal_(self.embedding.weight, std=0.02)
                # dt_rank set explicitly to SigerLM's ceil(d/16), so the parameter counts match
                self.config = MambaConfig(
                    d_model=d, n_layers=n_layers, d_state=d_state, dt_rank=-(-d // 16), pscan=True
                )
                self.mamba = Mamba(self.config)
                self.norm_f = nn.RMSNorm(d)

            def loss(self, ids):
                hidden = self.norm_f(self.mamba(self.embedding(ids)))
                logits = hidden[:, :-1] @ self.embedding.weight.t()
                return F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))

            def init_caches(self, b):
                di = self.config.d_inner
                return [(None, torch.zeros(b, di, self.config.d_conv - 1)) for _ in range(n_layers)]

            def step(self, token, caches):
                hidden, caches = self.mamba.step(self.embedding(token), caches)
                return self.norm_f(hidden) @ self.embedding.weight.t(), caches

            def forward_last(self, ids):  # the parallel scan over the whole prompt (it returns no state)
                return self.norm_f(self.mamba(self.embedding(ids)))[:, -1] @ self.embedding.weight.t()

            def prefill(self, ids):  # mambapy has no prefill with state: its own generate steps through the prompt
                caches = self.init_caches(ids.shape[0])
                for t in range(ids.shape[1]):
                    logits, caches = self.step(ids[:, t], caches)
                return logits, caches

            def matmul_params(self) -> int:
                layer = self.mamba.layers[0]
                per_layer = sum(p.numel() for name, p in layer.named_parameters() if name.endswith("proj.weight"))
                return vocab * d + n_layers * per_layer

        return MambaPy()

    if impl in ("gpt2", "gpt2-lce"):
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        from sigerlm_text.losses import linear_cross_entropy

        hf_logging.set_verbosity_error()
        target = shape["siger_params"]
        per_layer = 12 * d * d + 13 * d
        fixed = vocab * d + max_len * d + 2 * d
        gpt_layers = max(1, round((target - fixed) / per_layer))
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=d,
            n_layer=gpt_layers,
            n_head=max(1, d // 64),
            n_positions=max_len,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            activation_function="gelu_pytorch_tanh",
            bos_token_id=0,
            eos_token_id=0,
            attn_implementation="sdpa",
        )

        class GPT2(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = GPT2LMHeadModel(config)
                self.layers = gpt_layers

            def loss(self, ids):
                if impl == "gpt2-lce":
                    hidden = self.model.transformer(input_ids=ids).last_hidden_state
                    return linear_cross_entropy(hidden[:, :-1], self.model.lm_head.weight, ids[:, 1:])
                return self.model(input_ids=ids, labels=ids).loss

            def prefill(self, ids):
                out = self.model(input_ids=ids, use_cache=True)
                return out.logits[:, -1], out.past_key_values

            def forward_last(self, ids):
                return self.model(input_ids=ids, use_cache=False).logits[:, -1]

            def step(self, token, cache):
                out = self.model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
                return out.logits[:, -1], out.past_key_values

            def matmul_params(self) -> int:
                return vocab * d + gpt_layers * 12 * d * d

        return GPT2()
    raise ValueError(f"unknown implementation {impl}")


def state_bytes(state: Any) -> int:
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(s) for s in state)
    if hasattr(state, "layers"):  # transformers' DynamicCache
        return sum(
            state_bytes([getattr(layer, "keys", None), getattr(layer, "values", None)]) for layer in state.layers
        )
    return 0


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    kind = spec["kind"]
    if kind == "matmul":
        n = spec["n"]
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        return {"gflops": 2 * n**3 / statistics.median(times) / 1e9}

    if kind == "scan":
        from sigerlm.model.scan import selective_scan

        b, L, d, n = spec["batch"], spec["length"], spec["d_inner"], spec["d_state"]
        u, B, C = torch.randn(b, L, d), torch.randn(b, L, n), torch.randn(b, L, n)
        dt, A, D = torch.rand(b, L, d) * 0.1, -torch.rand(d, n) * 5, torch.randn(d)
        args = [t.requires_grad_() for t in (u, dt, A, B, C, D)]
        base = rss_mb()
        times = []
        for i in range(spec["steps"] + 1):
            start = time.perf_counter()
            y, _ = selective_scan(*args, backend=spec["backend"])
            y.sum().backward()
            if i:
                times.append(time.perf_counter() - start)
        return {"ms": 1000 * statistics.median(times), "peak_over_inputs_mb": peak_mb() - base}

    shape, impl = spec["shape"], spec["impl"]
    model = build(impl, shape, spec["max_len"])
    params = sum(p.numel() for p in model.parameters())
    base = rss_mb()
    out: dict[str, Any] = {"params": params, "matmul_params": model.matmul_params(), "rss_model_mb": base}
    if hasattr(model, "layers"):
        out["layers"] = model.layers
    vocab = shape["vocab"]

    if kind == "train":
        b, L = spec["batch"], spec["length"]
        ids = torch.randint(0, vocab, (b, L))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()
        times = []
        for i in range(spec["steps"] + 1):
            start = time.perf_counter()
            model.loss(ids).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i:  # the first step warms up
                times.append(time.perf_counter() - start)
        out["tokens_per_s"] = b * L / statistics.median(times)
    elif kind == "prefill":
        L = spec["length"]
        ids = torch.randint(0, vocab, (1, L))
        model.eval()
        times = []
        with torch.no_grad():
            for i in range(spec["steps"] + 1):
                start = time.perf_counter()
                model.forward_last(ids)
                if i:
                    times.append(time.perf_counter() - start)
        out["tokens_per_s"] = L / statistics.median(times)
    elif kind == "decode":
        ctx, new = spec["context"], spec["new_tokens"]
        ids = torch.randint(0, vocab, (1, ctx))
        model.eval()
        with torch.no_grad():
            logits, state = model.prefill(ids)
            out["rss_after_prefill_mb"] = rss_mb()
            out["state_bytes_after_prefill"] = state_bytes(state)
            times = []
            token = logits.argmax(-1)
            for _ in range(new):
                start = time.perf_counter()
                logits, state = model.step(token, state)
                token = logits.argmax(-1)
                times.append(time.perf_counter() - start)
        out["ms_per_token"] = 1000 * statistics.median(times)
        out["rss_after_decode_mb"] = rss_mb()
        out["state_bytes_after_decode"] = state_bytes(state)
    out["peak_rss_mb"] = peak_mb()
    out["peak_over_model_mb"] = out["peak_rss_mb"] - base
    return out


# -- orchestration ---------------------------------------------------------------------------
def available(impl: str) -> bool:
    try:
        if impl.startswith("gpt2"):
            import transformers  # noqa: F401
        if impl == "mambapy":
            import einops  # noqa: F401
            import mambapy  # noqa: F401
    except ImportError:
        return False
    return True


def spawn(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    parser.add_argument("--impls", nargs="*", default=IMPLS)
    parser.add_argument("--lengths", nargs="*", type=int, default=[512, 2048])
    parser.add_argument("--contexts", nargs="*", type=int, default=[128, 2048, 8192])
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["train", "prefill", "decode", "scan"],
        default=["train", "prefill", "decode", "scan"],
        help="sections to run",
    )
    parser.add_argument("--jemalloc", action="store_true", help=f"preload {JEMALLOC} in the measurements")
    parser.add_argument("--quick", action="store_true", help="a tiny shape, one round: checks the script works")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return

    shape = {"d_model": 256, "n_layers": 8, "d_state": 16, "vocab": VOCAB}
    if args.quick:
        shape = {"d_model": 32, "n_layers": 2, "d_state": 4, "vocab": 500}
        args.rounds, args.steps, args.lengths, args.contexts, args.tokens_per_step = 1, 1, [64], [16, 64], 128
    impls = [i for i in args.impls if available(i)]
    skipped = sorted(set(args.impls) - set(impls))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.jemalloc:
        if not Path(JEMALLOC).exists():
            sys.exit(f"--jemalloc: {JEMALLOC} not found (apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = JEMALLOC

    # SigerLM's parameter count (at the longest length) sets the GPT-2's depth
    probe = spawn(
        {
            "kind": "prefill",
            "impl": "siger",
            "shape": shape,
            "max_len": 8,
            "length": 8,
            "steps": 1,
            "threads": args.threads,
        },
        env,
    )
    shape["siger_params"] = probe["params"]

    jobs: list[tuple[str, dict[str, Any]]] = [("matmul", {"kind": "matmul", "n": 2048 if not args.quick else 256})]
    scan_shape = {
        "batch": max(1, args.tokens_per_step // max(args.lengths)),
        "length": max(args.lengths),
        "d_inner": 2 * shape["d_model"],
        "d_state": shape["d_state"],
    }
    for backend in ("fused", "chunked", "reference") if "scan" in args.only else ():
        jobs.append((f"scan/{backend}", dict({"kind": "scan", "backend": backend}, **scan_shape)))
    for L in args.lengths if "train" in args.only else ():
        for impl in impls:
            jobs.append(
                (
                    f"train/{L}/{impl}",
                    {
                        "kind": "train",
                        "impl": impl,
                        "length": L,
                        "batch": max(1, args.tokens_per_step // L),
                        "max_len": L,
                    },
                )
            )
    prefill_len = max(args.lengths)
    for impl in impls if "prefill" in args.only else ():
        if impl not in ("siger-plain-ce", "gpt2-lce"):
            jobs.append(
                (
                    f"prefill/{prefill_len}/{impl}",
                    {"kind": "prefill", "impl": impl, "length": prefill_len, "max_len": prefill_len},
                )
            )
    new_tokens = 8 if args.quick else 64
    for ctx in args.contexts if "decode" in args.only else ():
        for impl in impls:
            if impl in ("siger-plain-ce", "gpt2-lce", "reference"):
                continue  # decode does not use the loss or the scan
            if impl == "mambapy" and ctx > 2048:
                continue  # mambapy feeds the prompt one token at a time: minutes at 8192
            jobs.append(
                (
                    f"decode/{ctx}/{impl}",
                    {
                        "kind": "decode",
                        "impl": impl,
                        "context": ctx,
                        "new_tokens": new_tokens,
                        "max_len": ctx + new_tokens,
                    },
                )
            )

    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in jobs}
    for r in range(args.rounds):
        for name, spec in jobs:
            spec = dict(spec, shape=shape, threads=args.threads, steps=args.steps if spec["kind"] != "prefill" else 2)
            if spec.get("backend") in ("chunked", "reference"):
                spec["steps"] = 2
            if spec.get("impl") == "reference" and spec.get("length", 0) >= 2048:
                spec["steps"] = 1  # one step of the loop takes many seconds
            started = time.perf_counter()
            result = spawn(spec, env)
            result["wall_s"] = round(time.perf_counter() - started, 1)
            results[name].append(result)
            print(f"round {r + 1}/{args.rounds} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)

    def med(name: str, key: str) -> float | None:
        values = [x[key] for x in results.get(name, []) if key in x]
        return statistics.median(values) if values else None

    def one(name: str, key: str) -> Any:
        return next((x[key] for x in results.get(name, []) if key in x), None)

    matmul = med("matmul", "gflops")
    report: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "allocator": "jemalloc" if args.jemalloc else "glibc",
            "python": platform.python_version(),
            "torch": __import__("torch").__version__,
            "matmul_gflops": matmul,
        },
        "shape": shape,
        "skipped": skipped,
        "scan": {},
        "train": {},
        "prefill": {},
        "decode": {},
        "raw": results,
    }
    print(f"\nmachine: {report['machine']}\nshape: {shape}; skipped (not installed): {skipped or 'none'}")
    if "scan" in args.only:
        print(f"\n## the scan alone, forward + backward, {scan_shape}")
        print("| back-end | ms | x fused | peak over inputs MB |\n|---|---|---|---|")
        base = med("scan/fused", "ms")
        for backend in ("fused", "chunked", "reference"):
            ms = med(f"scan/{backend}", "ms")
            if ms is not None:
                report["scan"][backend] = {
                    "ms": ms,
                    "peak_over_inputs_mb": med(f"scan/{backend}", "peak_over_inputs_mb"),
                }
                print(
                    f"| {backend} | {ms:.1f} | {base / ms:.3f} | {report['scan'][backend]['peak_over_inputs_mb']:.0f} |"
                )
    if "train" in args.only:
        print(f"\n## training tokens/s (forward + backward + AdamW), {args.tokens_per_step} tokens a step")
        print("| length | impl | params | tokens/s | x siger | MFU | peak RSS MB | peak over model MB |")
        print("|---|---|---|---|---|---|---|---|")
    for L in args.lengths if "train" in args.only else ():
        base = med(f"train/{L}/siger", "tokens_per_s")
        for impl in impls:
            name = f"train/{L}/{impl}"
            tps = med(name, "tokens_per_s")
            if tps is None:
                print(f"| {L} | {impl} | - | failed: {one(name, 'error')} | | | | |")
                continue
            flops = 6 * one(name, "matmul_params")
            if impl.startswith("gpt2"):
                flops += 6 * one(name, "layers") * L * shape["d_model"]
            mfu = tps * flops / (matmul * 1e9) if matmul else None
            row = {
                "tokens_per_s": tps,
                "ratio_to_siger": tps / base if base else None,
                "mfu": mfu,
                "params": one(name, "params"),
                "peak_rss_mb": med(name, "peak_rss_mb"),
                "peak_over_model_mb": med(name, "peak_over_model_mb"),
            }
            report["train"].setdefault(str(L), {})[impl] = row
            print(
                f"| {L} | {impl} | {row['params'] / 1e6:.2f}M | {tps:.0f} | {row['ratio_to_siger']:.2f} | "
                f"{mfu:.0%} | {row['peak_rss_mb']:.0f} | {row['peak_over_model_mb']:.0f} |"
            )
    if "prefill" in args.only:
        print(f"\n## prefill tokens/s (no gradients), length {prefill_len}, batch 1")
        print("| impl | tokens/s | x siger | peak RSS MB |\n|---|---|---|---|")
    base = med(f"prefill/{prefill_len}/siger", "tokens_per_s")
    for impl in impls if "prefill" in args.only else ():
        tps = med(f"prefill/{prefill_len}/{impl}", "tokens_per_s")
        if tps is not None:
            report["prefill"][impl] = {
                "tokens_per_s": tps,
                "peak_rss_mb": med(f"prefill/{prefill_len}/{impl}", "peak_rss_mb"),
            }
            print(f"| {impl} | {tps:.0f} | {tps / base:.2f} | {report['prefill'][impl]['peak_rss_mb']:.0f} |")
    if "decode" in args.only:
        print(f"\n## decode, batch 1, {new_tokens} new tokens after the context")
        print(
            "| context | impl | ms/token | state MB | RSS after decoding MB | peak RSS MB |\n|---|---|---|---|---|---|"
        )
    for ctx in args.contexts if "decode" in args.only else ():
        for impl in impls:
            name = f"decode/{ctx}/{impl}"
            ms = med(name, "ms_per_token")
            if ms is None:
                continue
            row = {
                "ms_per_token": ms,
                "state_mb": one(name, "state_bytes_after_decode") / 2**20,
                "rss_after_decode_mb": med(name, "rss_after_decode_mb"),
                "peak_rss_mb": med(name, "peak_rss_mb"),
            }
            report["decode"].setdefault(str(ctx), {})[impl] = row
            print(
                f"| {ctx} | {impl} | {ms:.2f} | {row['state_mb']:.2f} | {row['rss_after_decode_mb']:.0f} | "
                f"{row['peak_rss_mb']:.0f} |"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
