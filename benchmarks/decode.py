"""Decode benchmark: batch-1 generation cost at growing contexts.

For SigerLM's cached generator (prefill once, in chunks of 512 positions as the torch runtime
does, then one ``step`` a token), for uncached
recomputation (the whole sequence again for every token, what the original SigerLM did), and
(optional extra) for transformers' GPT-2 of equal size with its KV cache, and (optional extra,
llama-cpp-python) for llama.cpp running the same model exported as GGUF f32/q8_0/q4_0, and (with
sigerlm-onnx) for the onnxruntime runtime on the same model exported as ONNX fp32/INT8/INT4: tokens/s and
ms/token after contexts of 128, 2048 and 8192 tokens, and peak RSS. Each measurement runs in
its own process. Run alone:

    python benchmarks/decode.py --threads 2 --out docs/benchmarks/decode.json
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
from backbone import VOCAB, build, check_base_src, peak_mb, rss_mb

# the folder off the path again (also the script's own entry): benchmarks/onnx.py would shadow `import onnx`
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def job(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    impl, ctx, new = spec["impl"], spec["context"], spec["new_tokens"]
    shape = {"d_model": 256, "n_layers": 8, "d_state": 16, "vocab": VOCAB, "siger_params": 11696384}
    model = build("gpt2" if impl == "gpt2" else "siger", shape, ctx + new + 1).eval()
    base = rss_mb()
    ids = torch.randint(0, VOCAB, (1, ctx))
    times = []
    with torch.no_grad():
        if impl == "uncached":
            seq = ids
            for _ in range(new):
                start = time.perf_counter()
                token = model.forward_last(seq).argmax(-1)
                seq = torch.cat([seq, token[:, None]], dim=1)
                times.append(time.perf_counter() - start)
        else:
            logits, state = model.prefill(ids, chunk=512) if impl == "cached" else model.prefill(ids)
            token = logits.argmax(-1)
            for _ in range(new):
                start = time.perf_counter()
                logits, state = model.step(token, state)
                token = logits.argmax(-1)
                times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    return {"ms_per_token": ms, "tokens_per_s": 1000 / ms, "peak_rss_mb": peak_mb(), "rss_model_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contexts", nargs="*", type=int, default=[128, 2048, 8192])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--uncached-tokens", type=int, default=4, help="recomputation is slow: fewer tokens")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base-src", help="also measure the cached generator on another checkout's core/src")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        spec = json.loads(args.job)
        impl = spec["impl"]
        if impl == "export":
            print(json.dumps(export_job(spec)))
        elif impl.startswith("llama.cpp"):
            print(json.dumps(llama_job(spec)))
        else:
            print(json.dumps(ort_job(spec) if impl.startswith("ort") else job(spec)))
        return
    check_base_src(args.base_src)
    impls = ["cached"] + (["cached@base"] if args.base_src else []) + ["uncached"]
    try:
        import transformers  # noqa: F401

        impls.append("gpt2")
    except ImportError:
        pass
    impls += exported_impls()
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for ctx in args.contexts:
            for impl in impls:
                new = args.uncached_tokens if impl == "uncached" else args.new_tokens
                spec = {"impl": impl, "context": ctx, "new_tokens": new, "threads": args.threads}
                spec.update(EXPORTS.get(impl, {}))
                env = None
                if impl == "cached@base":  # the same generator on another checkout's sigerlm
                    spec["impl"], env = "cached", dict(os.environ, PYTHONPATH=args.base_src)
                proc = subprocess.run(
                    [sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True, env=env
                )
                out = (
                    json.loads(proc.stdout.strip().splitlines()[-1])
                    if proc.returncode == 0
                    else {"error": proc.stderr[-300:]}
                )
                results.setdefault(f"{impl}/{ctx}", []).append(out)
                print(f"{impl} {ctx}: {out}", file=sys.stderr, flush=True)
    report = {"threads": args.threads, "rows": {}}
    print("| context | implementation | ms/token | tokens/s | x cached | peak RSS MB |\n|---|---|---|---|---|---|")
    for ctx in args.contexts:
        base = statistics.median(r["ms_per_token"] for r in results[f"cached/{ctx}"] if "ms_per_token" in r)
        for impl in impls:
            rows = [r for r in results[f"{impl}/{ctx}"] if "ms_per_token" in r]
            if not rows:
                print(f"| {ctx} | {impl} | failed | | | |")
                continue
            ms = statistics.median(r["ms_per_token"] for r in rows)
            peak = statistics.median(r["peak_rss_mb"] for r in rows)
            report["rows"][f"{impl}/{ctx}"] = {"ms_per_token": ms, "peak_rss_mb": peak}
            print(f"| {ctx} | {impl} | {ms:.2f} | {1000 / ms:.1f} | {base / ms:.3f} | {peak:.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


# -- llama.cpp and onnxruntime on the same model, exported once ------------------------------------
#: impl -> {"gguf": path} or {"folder": path}, filled by exported_impls
EXPORTS: dict[str, dict] = {}


def exported_impls() -> list[str]:
    """``llama.cpp-f32``, ``-q8_0``, ``-q4_0`` when llama-cpp-python and gguf are installed, and
    ``ort-fp32``, ``-int8``, ``-int4`` when sigerlm-onnx and onnxruntime are: one random model of
    the torch rows' shape (d_model 256, 8 layers, d_state 16, a 32000-row tied embedding),
    exported by ``siger export gguf``'s and ``siger export onnx``'s exporters, in a process of
    its own (this one stays small: a job's peak RSS starts from what it was forked from)."""
    import atexit
    import importlib.util
    import shutil
    import tempfile

    kinds = [
        kind
        for kind, modules in (("gguf", ("gguf", "llama_cpp")), ("onnx", ("sigerlm_onnx", "onnxruntime")))
        if all(importlib.util.find_spec(m) for m in modules)
    ]
    if not kinds:
        return []
    spec = {"impl": "export", "folder": tempfile.mkdtemp(prefix="decode-exports-"), "kinds": kinds}
    atexit.register(shutil.rmtree, spec["folder"], True)
    proc = subprocess.run([sys.executable, __file__, "--job", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"llama.cpp and onnxruntime rows left out: the export failed: {proc.stderr[-300:]}", file=sys.stderr)
        return []
    EXPORTS.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return list(EXPORTS)


def export_job(spec: dict) -> dict:
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    torch.manual_seed(0)
    texts = [f"{i} siger decode benchmark text, number {i * 7}." for i in range(500)]
    config = SigerConfig(d_model=256, n_layers=8, d_state=16)
    model = text_model(config, VOCAB, BPETokenizer.train(texts, vocab_size=512, min_frequency=1)).eval()
    folder, out = Path(spec["folder"]), {}
    if "gguf" in spec["kinds"]:
        exporter = make_plugin_manager().get_component("exporters", "gguf")
        for k in ("f32", "q8_0", "q4_0"):
            out[f"llama.cpp-{k}"] = {"gguf": str(exporter.build(model, folder / f"{k}.gguf", options={"type": k}))}
    if "onnx" in spec["kinds"]:
        from sigerlm_onnx.export import export_folder
        from sigerlm_onnx.hooks import ExportOptions

        for k, quantize in (("fp32", "none"), ("int8", "int8"), ("int4", "int4")):
            export_folder(model, folder / f"onnx-{k}", ExportOptions(quantize=quantize, parity=False))
            out[f"ort-{k}"] = {"folder": str(folder / f"onnx-{k}")}
    return out


def ort_job(spec: dict) -> dict:
    """The onnxruntime runtime (``siger generate --runtime onnxruntime``) on an exported folder:
    prefill ``context`` random ids, then ``new_tokens`` greedy steps, each timed with its argmax."""
    import torch

    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager

    torch.set_num_threads(spec["threads"])
    pm = make_plugin_manager()
    runtime = pm.get_component("runtimes", "onnxruntime").build(
        load_model(spec["folder"], pm), options={"threads": spec["threads"]}
    )
    base = rss_mb()
    ids = torch.randint(0, VOCAB, (1, spec["context"]), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        logits, state = runtime.prefill({"input_ids": ids})
        token = torch.as_tensor(logits).argmax(-1)
        for _ in range(spec["new_tokens"]):
            start = time.perf_counter()
            logits, state = runtime.step({"input_ids": token}, state)
            token = torch.as_tensor(logits).argmax(-1)
            times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    return {"ms_per_token": ms, "tokens_per_s": 1000 / ms, "peak_rss_mb": peak_mb(), "rss_model_mb": base}


def llama_job(spec: dict) -> dict:
    """Prefill ``context`` random ids in batches of 512, then ``new_tokens`` greedy steps, each
    timed with its argmax (as the torch rows are)."""
    import llama_cpp
    import numpy as np

    ctx, new = spec["context"], spec["new_tokens"]
    base = rss_mb()
    llm = llama_cpp.Llama(spec["gguf"], n_ctx=ctx + new + 8, n_batch=512, n_threads=spec["threads"], verbose=False)

    def last_argmax() -> int:  # the last position's logits (llm.scores holds them only with logits_all)
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(VOCAB,)).argmax())

    llm.eval(np.random.default_rng(0).integers(0, VOCAB, ctx).tolist())
    times = []
    token = last_argmax()
    for _ in range(new):
        start = time.perf_counter()
        llm.eval([token])
        token = last_argmax()
        times.append(time.perf_counter() - start)
    llm.close()
    ms = 1000 * statistics.median(times)
    return {"ms_per_token": ms, "tokens_per_s": 1000 / ms, "peak_rss_mb": peak_mb(), "rss_model_mb": base}


if __name__ == "__main__":
    main()
