"""Backbone benchmark: SigerLM's SSM against the reference loop, mambapy and an equal-size GPT-2.

At the ``small`` shape (d_model 256, 8 layers, d_state 16) with a 32000-token tied embedding
and head, it measures, in one run with the implementations interleaved:

- training tokens/s (forward + backward + AdamW) at sequence lengths 512, 2048 (4096 tokens a
  step) and 8192 (batch 1), with model-FLOPs utilisation against a matmul measured in the same
  run and the memory the step adds over the built model (activations, gradients, AdamW);
- prefill tokens/s (no gradients, batch 1) at 2048, 8192 and 32768, the same work for every
  implementation: the final hidden states, then the last position's logits (``last``) or, up to
  8192, every position's (``full``); ``siger-chunked`` prefills in pieces of 2048 with the state
  carried, so its memory does not grow with the length;
- decode ms/token at contexts 128, 2048 and 8192, and how much memory decoding adds;
  prefill's ``last`` logits and every decode step's go through one head function on every
  side (``decode_head``: sigerlm-text's head, core's row kernel for a few rows), so the
  comparison is the layers, as ``gpt2-lce`` makes it in training;
- peak RSS of every measurement (each runs in its own process, so peaks do not mix);
- the scan alone (forward + backward) for each scan back-end.

It prints ratios against the baselines measured in the same run, the CPU's model and vector
extensions, and the load average at each measurement; absolute numbers move with the
machine's load. Implementations:

- ``siger``: the fused scan and conv kernels, with the chunked linear cross-entropy;
- ``siger@base`` (with ``--base-src``): the same, from another checkout's ``core/src``;
- ``siger-plain-ce``: the same backbone with ``F.cross_entropy`` over full logits;
- ``reference``: the same model with the plain loop scan (``scan: reference``; up to 2048);
- ``mambapy``: mambapy 1.2's parallel scan with a tied embedding and head (optional extra; up
  to 2048);
- ``gpt2``: transformers' ``GPT2LMHeadModel`` with SDPA attention, no dropout, fused GELU,
  and as many layers as make its parameter count closest to SigerLM's without the position
  table (4 at ``small``), whose table is extended to the longest length (optional extra);
- ``gpt2-lce``: that GPT-2's hidden states with SigerLM's linear cross-entropy, to separate
  the loss from the architecture.

Run (alone on the machine; about 40 minutes on 2 cores)::

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
        measured_kernels().load()  # compiled or loaded before the baseline memory is read

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
                return self.head(hidden[:, -1]), state

            def forward_last(self, ids, chunk=None):  # final hidden states -> last position's logits
                return self.prefill(ids, chunk)[0]

            def forward_full(self, ids):  # final hidden states -> every position's logits
                return self.backbone.forward_hidden(self.embedding(ids)) @ self.embedding.weight.t()

            def step(self, token, state):
                hidden, state = self.backbone.step(self.embedding(token), state)
                return self.head(hidden), state

            def head(self, hidden):
                return decode_head(hidden, self.embedding.weight)

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

            def forward_last(self, ids, chunk=None):  # the parallel scan over the whole prompt (no state)
                return self.norm_f(self.mamba(self.embedding(ids)))[:, -1] @ self.embedding.weight.t()

            def forward_full(self, ids):
                return self.norm_f(self.mamba(self.embedding(ids))) @ self.embedding.weight.t()

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

        measured_kernels().load()  # the head's row kernel (decode_head), loaded as SigerLM's side loads it
        hf_logging.set_verbosity_error()
        # depth: the parameter count closest to SigerLM's without the position table, which is
        # extended to the longest length measured and costs no FLOPs (4 layers at `small`)
        target = shape["siger_params"]
        per_layer = 12 * d * d + 13 * d
        fixed = vocab * d + 2 * d
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
                out = self.model.transformer(input_ids=ids, use_cache=True)
                return decode_head(out.last_hidden_state[:, -1], self.model.lm_head.weight), out.past_key_values

            def forward_last(self, ids, chunk=None):  # final hidden states -> last position's logits
                hidden = self.model.transformer(input_ids=ids, use_cache=False).last_hidden_state
                return decode_head(hidden[:, -1], self.model.lm_head.weight)

            def forward_full(self, ids):  # every position's logits, as GPT2LMHeadModel returns them
                return self.model(input_ids=ids, use_cache=False).logits

            def step(self, token, cache):
                out = self.model.transformer(input_ids=token[:, None], past_key_values=cache, use_cache=True)
                return decode_head(out.last_hidden_state[:, -1], self.model.lm_head.weight), out.past_key_values

            def matmul_params(self) -> int:
                return vocab * d + gpt_layers * 12 * d * d

        return GPT2()
    raise ValueError(f"unknown implementation {impl}")


def check_base_src(path: str | None) -> None:
    """``--base-src`` (a ``PYTHONPATH``) must hold a ``sigerlm`` package: a missing folder would be
    skipped silently and the "base" rows would measure this checkout. A checkout from before
    sigerlm-kernels also needs its text plugin: ``BASE/core/src:BASE/plugins/text/src``."""
    folders = [Path(p) for p in (path or "").split(os.pathsep) if p]
    if path and not any((folder / "sigerlm" / "__init__.py").is_file() for folder in folders):
        sys.exit(f"--base-src {path}: no sigerlm package there (e.g. git worktree add /tmp/base18 8db10b9)")


def measured_kernels() -> Any:
    """The compiled kernels of the checkout measured: sigerlm-kernels', or core's own in a
    ``--base-src`` from before they moved to that package."""
    try:
        from sigerlm.model import kernels  # type: ignore[attr-defined]
    except ImportError:
        from sigerlm_kernels import kernels
    return kernels


def decode_head(hidden: Any, weight: Any) -> Any:
    """The last position's logits, the same product on every side: sigerlm-text's head (the
    row kernel for a decode step's few rows) where the measured checkout has that kernel, else the
    matmul (the checkout before issue 18)."""
    if not hasattr(measured_kernels(), "loaded"):
        return hidden @ weight.t()
    from sigerlm_text.model import head_logits

    return head_logits(hidden, weight)


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

    if kind == "profile":
        return dict(out, **profile_step(model, spec))
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
                if spec.get("logits") == "full":
                    model.forward_full(ids)
                else:
                    model.forward_last(ids, spec.get("chunk"))
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


def profile_step(model: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """One training step (after a warm-up step) under ``torch.profiler``: self CPU time per op
    (autograd Functions, such as the fused scan, appear under their own names, their backward
    as ``...Backward``) and, through forward hooks, the forward time of each layer."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    b, L = spec["batch"], spec["length"]
    ids = torch.randint(0, spec["shape"]["vocab"], (b, L))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    handles = []
    for name, module in model.named_modules():
        if name.startswith("backbone.layers.") and name.count(".") == 2 or name == "backbone.norm_f":
            ranges: list[Any] = []
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, a, n=name, r=ranges: r.append(record_function(f"## forward {n}").__enter__())
                )
            )
            handles.append(module.register_forward_hook(lambda m, a, o, r=ranges: r.pop().__exit__(None, None, None)))

    def step() -> None:
        with record_function("## forward + loss"):
            loss = model.loss(ids)
        with record_function("## backward"):
            loss.backward()
        with record_function("## optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    for h in handles:
        h.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events if not e.key.startswith("## ")) / 1e3
    ops = sorted(
        ((e.key, e.self_cpu_time_total / 1e3, e.count) for e in events if not e.key.startswith("## ")),
        key=lambda x: -x[1],
    )
    ranges = {e.key[3:]: e.cpu_time_total / 1e3 for e in events if e.key.startswith("## ")}
    return {"step_ms": wall * 1e3, "self_ms_total": total, "ops": ops[:30], "ranges_ms": ranges}


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


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and the vector extensions that matter to the kernels and to torch."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"]
    return {"model": model, "vector": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def spawn(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    if spec.get("impl", "").endswith("@base"):  # the same measurement on another checkout's sigerlm
        env = dict(env, PYTHONPATH=spec["base_src"])
        spec = dict(spec, impl=spec["impl"].removesuffix("@base"))
    proc = subprocess.run(
        [sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


LONG_ONLY_FAST = ("reference", "mambapy")  # minutes a step or several GB beyond 2048 positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    parser.add_argument("--impls", nargs="*", default=IMPLS)
    parser.add_argument("--lengths", nargs="*", type=int, default=[512, 2048, 8192], help="training lengths")
    parser.add_argument("--prefill-lengths", nargs="*", type=int, default=[2048, 8192, 32768])
    parser.add_argument(
        "--prefill-chunk", type=int, default=2048, help="siger-chunked prefills in pieces of this many positions"
    )
    parser.add_argument("--full-logits-max", type=int, default=8192, help="full-logits prefill up to this length")
    parser.add_argument("--contexts", nargs="*", type=int, default=[128, 2048, 8192])
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument(
        "--base-src",
        help="also measure siger from another checkout's core/src (impl siger@base), e.g. the commit before a change",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["train", "prefill", "decode", "scan", "profile"],
        default=["train", "prefill", "decode", "scan"],
        help="sections to run (profile: one siger training step per length under torch.profiler)",
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
        args.rounds, args.steps, args.tokens_per_step = 1, 1, 128
        args.lengths, args.prefill_lengths, args.contexts, args.prefill_chunk = [64, 128], [64, 256], [16, 64], 32
        args.full_logits_max = 64
    impls = [i for i in args.impls if available(i)]
    check_base_src(args.base_src)
    if args.base_src:
        impls.insert(1, "siger@base")
    skipped = sorted(set(args.impls) - set(impls))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.jemalloc:
        if not Path(JEMALLOC).exists():
            sys.exit(f"--jemalloc: {JEMALLOC} not found (apt-get install libjemalloc2)")
        env["LD_PRELOAD"] = JEMALLOC

    # SigerLM's parameter count sets the GPT-2's depth
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

    def runs_at(impl: str, length: int) -> bool:
        return impl not in LONG_ONLY_FAST or length <= 2048

    jobs: list[tuple[str, dict[str, Any]]] = [("matmul", {"kind": "matmul", "n": 2048 if not args.quick else 256})]
    scan_shape = {
        "batch": max(1, args.tokens_per_step // 2048),
        "length": 2048 if not args.quick else 64,
        "d_inner": 2 * shape["d_model"],
        "d_state": shape["d_state"],
    }
    for backend in ("fused", "chunked", "reference") if "scan" in args.only else ():
        jobs.append((f"scan/{backend}", dict({"kind": "scan", "backend": backend}, **scan_shape)))
    for L in args.lengths if "train" in args.only else ():
        for impl in impls:
            if runs_at(impl, L):
                spec = {"kind": "train", "impl": impl, "length": L, "batch": max(1, args.tokens_per_step // L)}
                jobs.append((f"train/{L}/{impl}", dict(spec, max_len=L)))
    for L in args.lengths if "profile" in args.only else ():
        spec = {"kind": "profile", "impl": "siger", "length": L, "batch": max(1, args.tokens_per_step // L)}
        jobs.append((f"profile/{L}", dict(spec, max_len=L)))
    prefill_impls = [i for i in impls if i not in ("siger-plain-ce", "gpt2-lce")]
    for L in args.prefill_lengths if "prefill" in args.only else ():
        for logits in ("last", "full") if L <= args.full_logits_max else ("last",):
            for impl in prefill_impls + (["siger-chunked"] if L > args.prefill_chunk and logits == "last" else []):
                if not runs_at(impl, L):
                    continue
                spec = {"kind": "prefill", "impl": impl, "length": L, "max_len": L, "logits": logits}
                if impl == "siger-chunked":
                    spec.update(impl="siger", chunk=args.prefill_chunk)
                jobs.append((f"prefill/{L}/{logits}/{impl}", spec))
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

    cpu = cpu_info()
    print(f"cpu: {cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['vector'])}; {len(jobs)} jobs", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in jobs}
    for r in range(args.rounds):
        for name, spec in jobs:
            steps = args.steps if spec["kind"] not in ("prefill",) else 2
            spec = dict(spec, shape=shape, threads=args.threads, steps=steps, base_src=args.base_src)
            if spec.get("backend") in ("chunked", "reference"):
                spec["steps"] = 2
            if spec.get("impl") == "reference" and spec.get("length", 0) >= 2048:
                spec["steps"] = 1  # one step of the loop takes many seconds
            if spec["kind"] == "train" and spec["length"] >= 8192:
                spec["steps"] = min(spec["steps"], 2)
            if spec["kind"] == "prefill" and spec["length"] >= 32768:
                spec["steps"] = 1  # GPT-2's attention at 32768 takes about a minute a pass on one core
            started = time.perf_counter()
            result = spawn(spec, env)
            result["wall_s"] = round(time.perf_counter() - started, 1)
            result["loadavg"] = os.getloadavg()[0]
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
            "cpu": cpu["model"],
            "vector_extensions": cpu["vector"],
            "cores": cpu["cores"],
            "threads": args.threads,
            "allocator": "jemalloc" if args.jemalloc else "glibc",
            "python": platform.python_version(),
            "torch": __import__("torch").__version__,
            "matmul_gflops": matmul,
            "loadavg_during": [x["loadavg"] for rows in results.values() for x in rows],
        },
        "shape": shape,
        "skipped": skipped,
        "scan": {},
        "train": {},
        "prefill": {},
        "decode": {},
        "raw": results,
    }
    loads = report["machine"]["loadavg_during"]
    print(f"\nmachine: {report['machine'] | {'loadavg_during': [min(loads), max(loads)]}}")
    print(f"shape: {shape}; skipped (not installed): {skipped or 'none'}")
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

    def mfu(name: str, tps: float, L: int, impl: str, passes: int) -> float | None:
        """Model-FLOPs utilisation: 2 FLOPs per weight-matrix parameter per token and pass
        (3 passes training, 1 prefill), plus GPT-2's attention (2 * L * d per layer and pass, causal)."""
        flops = passes * 2 * one(name, "matmul_params")
        if impl.startswith("gpt2"):
            flops += passes * 2 * one(name, "layers") * L * shape["d_model"]
        return tps * flops / (matmul * 1e9) if matmul else None

    if "train" in args.only:
        print(
            f"\n## training tokens/s (forward + backward + AdamW), {args.tokens_per_step} tokens a step "
            "(or one sequence)"
        )
        print("| length | impl | params | tokens/s | x siger | x gpt2-lce | MFU | peak RSS MB | peak over model MB |")
        print("|---|---|---|---|---|---|---|---|---|")
    for L in args.lengths if "train" in args.only else ():
        base = med(f"train/{L}/siger", "tokens_per_s")
        lce = med(f"train/{L}/gpt2-lce", "tokens_per_s")
        for impl in impls:
            name = f"train/{L}/{impl}"
            if name not in results:
                continue
            tps = med(name, "tokens_per_s")
            if tps is None:
                print(f"| {L} | {impl} | - | failed: {one(name, 'error')} | | | | | |")
                continue
            row = {
                "tokens_per_s": tps,
                "ratio_to_siger": tps / base if base else None,
                "ratio_to_gpt2_lce": tps / lce if lce else None,
                "mfu": mfu(name, tps, L, impl, 3),
                "params": one(name, "params"),
                "peak_rss_mb": med(name, "peak_rss_mb"),
                "peak_over_model_mb": med(name, "peak_over_model_mb"),
            }
            report["train"].setdefault(str(L), {})[impl] = row
            print(
                f"| {L} | {impl} | {row['params'] / 1e6:.2f}M | {tps:.0f} | {fmt(row['ratio_to_siger'])} | "
                f"{fmt(row['ratio_to_gpt2_lce'])} | {fmt(row['mfu'], '.0%')} | {row['peak_rss_mb']:.0f} | "
                f"{row['peak_over_model_mb']:.0f} |"
            )
    if "prefill" in args.only:
        print("\n## prefill tokens/s (no gradients), batch 1: the final hidden states, then the last position's")
        print("## logits (last) or every position's (full), the same work for every implementation")
        print("| length | logits | impl | tokens/s | x siger | x gpt2 | MFU | peak RSS MB | peak over model MB |")
        print("|---|---|---|---|---|---|---|---|---|")
    for L in args.prefill_lengths if "prefill" in args.only else ():
        for logits in ("last", "full"):
            base = med(f"prefill/{L}/{logits}/siger", "tokens_per_s")
            gpt = med(f"prefill/{L}/{logits}/gpt2", "tokens_per_s")
            for impl in prefill_impls + ["siger-chunked"]:
                name = f"prefill/{L}/{logits}/{impl}"
                if name not in results:
                    continue
                tps = med(name, "tokens_per_s")
                if tps is None:
                    print(f"| {L} | {logits} | {impl} | failed: {one(name, 'error')} | | | | | |")
                    continue
                row = {
                    "tokens_per_s": tps,
                    "ratio_to_siger": tps / base if base else None,
                    "ratio_to_gpt2": tps / gpt if gpt else None,
                    "mfu": mfu(name, tps, L, impl, 1) if logits == "full" else None,
                    "peak_rss_mb": med(name, "peak_rss_mb"),
                    "peak_over_model_mb": med(name, "peak_over_model_mb"),
                }
                report["prefill"].setdefault(f"{L}/{logits}", {})[impl] = row
                print(
                    f"| {L} | {logits} | {impl} | {tps:.0f} | {fmt(row['ratio_to_siger'])} | "
                    f"{fmt(row['ratio_to_gpt2'])} | {fmt(row['mfu'], '.0%')} | {row['peak_rss_mb']:.0f} | "
                    f"{row['peak_over_model_mb']:.0f} |"
                )
    for L in args.lengths if "profile" in args.only else ():
        prof = next((x for x in results[f"profile/{L}"] if "ops" in x), None)
        if prof is None:
            print(f"\n## profile at {L}: failed: {one(f'profile/{L}', 'error')}")
            continue
        report.setdefault("profile", {})[str(L)] = prof
        print(f"\n## profile of one siger training step at {L} ({prof['step_ms']:.0f} ms under the profiler)")
        print("| range | ms | share of the step |\n|---|---|---|")
        for key, ms in sorted(prof["ranges_ms"].items(), key=lambda kv: -kv[1]):
            if not key.startswith("forward backbone.layers.") or key.endswith(".0"):
                print(f"| {key} | {ms:.0f} | {ms / prof['step_ms']:.1%} |")
        layers = [ms for key, ms in prof["ranges_ms"].items() if key.startswith("forward backbone.layers.")]
        if layers:
            print(f"| forward, each of {len(layers)} layers (median) | {statistics.median(layers):.0f} | |")
        print("| op (self time) | ms | share of the step | calls |\n|---|---|---|---|")
        for key, ms, count in prof["ops"][:20]:
            print(f"| {key} | {ms:.0f} | {ms / prof['step_ms']:.1%} | {count} |")
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


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
