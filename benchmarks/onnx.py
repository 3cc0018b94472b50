"""Decode and prefill speed, folder size, peak memory and perplexity of torch eager against
onnxruntime fp32 / INT8 / INT4 and transformers' GPT-2 of equal size with its KV cache.

    .venv/bin/python benchmarks/onnx.py                                   # random small, 32000 tied head
    .venv/bin/python benchmarks/onnx.py --model runs/quickstart/model     # + perplexity on its validation split

Every runtime runs in its own worker process (started once, fed tasks over a pipe), so each
one's peak RSS is its own (``VmHWM`` of the worker: Python, torch and the model folder loaded
through ``load_model`` included, which every onnxruntime worker needs too; the RSS after the
imports is printed beside it). Rounds are interleaved: each round gives every worker the same task in turn, so a
busy machine slows them alike; figures are medians over rounds.

A task is one (batch, context): a prefill of ``context`` random tokens (timed: prefill tokens/s),
then ``--steps`` decode steps that each compute the full-vocabulary logits (ms/step, one token per
row). The GPT-2 is ``GPT2LMHeadModel`` with the same width, vocabulary and tied head and the
number of layers that brings its non-embedding parameters closest to the SigerLM backbone's
(random weights: its perplexity is not meaningful and is not reported); it keeps only the last
position's logits at prefill (``logits_to_keep=1``), as the SigerLM runtimes do.

Perplexity (with ``--model`` and a validation file, default the quickstart's
``corpus.valid.jsonl`` beside the model): the first ``--ppl-tokens`` tokens of the split's texts
joined by blank lines, scored by each runtime's ``score``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this file is named onnx.py: keep its folder off the path so `import onnx` finds the package
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

RUNTIMES = ["torch", "ort-none", "ort-int8", "ort-int4", "gpt2"]


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident set in MB. Not
    ``ru_maxrss``: Linux keeps that across ``exec``, so a worker would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the worker ---------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """Load one runtime, then answer tasks (one JSON line each) until stdin closes."""
    import torch

    torch.set_num_threads(args.threads)
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager

    imported = rss_mb("VmRSS")
    if args.worker == "gpt2":  # the SigerLM model is not loaded here: its shape comes from the driver
        d, vocab, layers = (int(x) for x in args.gpt2.split(":"))
        runtime = GPT2Runtime(d, vocab, layers, args.max_positions)
    else:
        pm = make_plugin_manager()
        model = load_model(args.folder, pm)
        name = "torch" if args.worker == "torch" else "onnxruntime"
        runtime = pm.get_component("runtimes", name).build(model, options={"threads": args.threads})
        vocab = model.adapter.vocab_size
    ready = {"ready": args.worker, "rss_after_imports_mb": imported, "rss_after_load_mb": rss_mb()}
    if args.worker == "gpt2":
        ready.update(gpt2_layers=runtime.layers, gpt2_non_embedding_parameters=runtime.non_embedding)
    say(ready)
    for line in sys.stdin:
        task = json.loads(line)
        if task["kind"] == "decode":
            say(decode_task(runtime, vocab, task["batch"], task["context"], task["steps"]))
        elif task["kind"] == "perplexity":
            say(perplexity_task(runtime, task["ids"]))
        elif task["kind"] == "rss":
            say({"peak_rss_mb": rss_mb()})


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def decode_task(runtime, vocab: int, batch: int, context: int, steps: int) -> dict:
    import torch

    generator = torch.Generator().manual_seed(batch * 100003 + context)
    prompt = torch.randint(0, vocab, (batch, context), generator=generator)
    with torch.inference_mode():
        start = time.perf_counter()
        logits, state = runtime.prefill({"input_ids": prompt})
        prefill_s = time.perf_counter() - start
        ids = logits.argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            logits, state = runtime.step({"input_ids": ids}, state)
            ids = logits.argmax(-1)  # (b,): every step computes the full-vocabulary logits
        step_ms = (time.perf_counter() - start) / steps * 1e3
    return {"prefill_tokens_per_s": batch * context / prefill_s, "ms_per_step": step_ms}


def perplexity_task(runtime, ids: list[int]) -> dict:
    import torch

    tokens = torch.tensor([ids])
    with torch.inference_mode():
        logits, _ = runtime.score({"input_ids": tokens[:, :-1]})
        nll = torch.nn.functional.cross_entropy(torch.as_tensor(logits)[0].float(), tokens[0, 1:])
    return {"perplexity": math.exp(float(nll)), "positions": len(ids) - 1}


class GPT2Runtime:
    """transformers' GPT-2 behind the runtime contract's prefill/step, with its KV cache."""

    @staticmethod
    def layers_for(model) -> int:
        """GPT-2 layers whose parameters come closest to the SigerLM backbone's."""
        d = model.config.d_model
        backbone = sum(p.numel() for p in model.backbone.parameters())
        per_layer = 12 * d * d + 13 * d  # attention (4 d^2) + MLP (8 d^2) + biases and norms
        return max(1, round(backbone / per_layer))

    def __init__(self, d: int, vocab: int, layers: int, max_positions: int):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab,
            n_positions=max_positions,
            n_embd=d,
            n_layer=layers,
            n_head=max(1, d // 64),
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        self.model = GPT2LMHeadModel(config).eval()
        self.layers = layers
        self.non_embedding = sum(p.numel() for n, p in self.model.named_parameters() if "wte" not in n)

    def prefill(self, inputs, state=None):
        out = self.model(inputs["input_ids"], use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    def step(self, inputs, state):
        out = self.model(inputs["input_ids"][:, None], past_key_values=state, use_cache=True)
        return out.logits[:, -1], out.past_key_values


# -- the driver ---------------------------------------------------------------------------------
class Worker:
    def __init__(self, name: str, folder: Path, threads: int, max_positions: int, gpt2: str):
        command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--folder", str(folder)]
        command += ["--threads", str(threads), "--max-positions", str(max_positions), "--gpt2", gpt2]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.name = name
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, task: dict) -> dict:
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


def build_random(folder: Path, profile: str, vocab: int) -> Path:
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model

    torch.manual_seed(0)
    text_model(SigerConfig.from_profile(profile), vocab_size=vocab).eval().save_pretrained(folder)
    return folder


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def validation_ids(model_dir: Path, valid: Path | None, n: int) -> list[int] | None:
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_text.model import load_text_model

    valid = valid or model_dir.parent / "corpus.valid.jsonl"
    if not valid.is_file():
        return None
    tokenizer = load_text_model(model_dir, components=make_plugin_manager()).adapter.tokenizer
    texts = [json.loads(line)["text"] for line in valid.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tokenizer.encode("\n\n".join(texts))[: n + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a text model folder (default: a random --profile model)")
    parser.add_argument("--profile", default="small")
    parser.add_argument("--vocab", type=int, default=32000, help="the random model's tied vocabulary")
    parser.add_argument("--valid", type=Path, help="validation JSONL (default: corpus.valid.jsonl beside --model)")
    parser.add_argument("--ppl-tokens", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32, help="decode steps timed per task")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--contexts", default="128,2048")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-positions", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument("--gpt2", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    torch.set_num_threads(args.threads)
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx.export import export_folder
    from sigerlm_onnx.hooks import ExportOptions

    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    names = args.runtimes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or build_random(Path(tmp) / "model", args.profile, args.vocab)
        model = load_model(source, make_plugin_manager())
        folders, sizes = {}, {}
        for name in names:
            if name.startswith("ort-"):
                out = Path(tmp) / name
                export_folder(model, out, ExportOptions(quantize=name[4:], parity=False))
                folders[name] = out
                sizes[name] = {"folder_mib": folder_mib(out), "graph_mib": (out / "model.onnx").stat().st_size / 2**20}
            else:  # torch: the model folder; gpt2: its size is not measured (it is built in memory)
                folders[name] = Path(source)
                sizes[name] = {"folder_mib": folder_mib(Path(source)) if name == "torch" else None, "graph_mib": None}
        ids = validation_ids(Path(source), args.valid, args.ppl_tokens) if args.model else None
        layers = GPT2Runtime.layers_for(model)
        gpt2 = f"{model.config.d_model}:{model.adapter.vocab_size}:{layers}"
        backbone_params = sum(p.numel() for p in model.backbone.parameters())
        del model
        max_positions = max(contexts) + args.steps + 8
        workers = {name: Worker(name, folders[name], args.threads, max_positions, gpt2) for name in names}
        try:
            timings: dict[tuple, list[dict]] = {}
            for _ in range(args.rounds):
                for batch in batches:
                    for context in contexts:
                        for name, w in workers.items():
                            task = {"kind": "decode", "batch": batch, "context": context, "steps": args.steps}
                            timings.setdefault((name, batch, context), []).append(w.ask(task))
                            print(name, batch, context, timings[(name, batch, context)][-1], file=sys.stderr)
            ppl = {}
            if ids:
                for name, w in workers.items():
                    if name != "gpt2":
                        ppl[name] = w.ask({"kind": "perplexity", "ids": ids})
            peaks = {name: w.ask({"kind": "rss"})["peak_rss_mb"] for name, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
    gpt2_info = workers["gpt2"].ready if "gpt2" in workers else {}
    print(f"SigerLM backbone parameters {backbone_params}; GPT-2 {gpt2_info}", file=sys.stderr)
    report(args, workers, timings, sizes, ppl, peaks, batches, contexts)


def report(args, workers, timings, sizes, ppl, peaks, batches, contexts) -> None:
    med = lambda name, b, c, key: statistics.median(t[key] for t in timings[(name, b, c)])  # noqa: E731
    rows = []
    what = str(args.model) if args.model else f"random {args.profile}, {args.vocab}-token tied head"
    print(f"\nmodel: {what}; threads {args.threads}; {args.rounds} interleaved rounds, {args.steps} decode steps")
    print("\n| runtime | batch | context | decode ms/step | tokens/s | vs torch | prefill tokens/s | vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    for b in batches:
        for c in contexts:
            base_ms, base_pf = med("torch", b, c, "ms_per_step"), med("torch", b, c, "prefill_tokens_per_s")
            for name in workers:
                ms, pf = med(name, b, c, "ms_per_step"), med(name, b, c, "prefill_tokens_per_s")
                rows.append({"runtime": name, "batch": b, "context": c, "ms_per_step": ms, "prefill_tokens_per_s": pf})
                print(
                    f"| {name} | {b} | {c} | {ms:.2f} | {b * 1e3 / ms:.0f} | {base_ms / ms:.2f}x | {pf:.0f} | "
                    f"{pf / base_pf:.2f}x |"
                )
    print("\n| runtime | folder MiB | model.onnx MiB | RSS after imports MB | peak RSS MB | perplexity |")
    print("|---|---|---|---|---|---|")
    for name, w in workers.items():
        graph, folder = sizes[name]["graph_mib"], sizes[name]["folder_mib"]
        p = ppl.get(name, {}).get("perplexity")
        print(
            f"| {name} | {f'{folder:.1f}' if folder else '-'} | {f'{graph:.1f}' if graph else '-'} | "
            f"{w.ready['rss_after_imports_mb']:.0f} | {peaks[name]:.0f} | {f'{p:.2f}' if p else '-'} |"
        )
    if args.out:
        data = {
            "model": what,
            "threads": args.threads,
            "rounds": args.rounds,
            "steps": args.steps,
            "rows": rows,
            "sizes": sizes,
            "perplexity": ppl,
            "peak_rss_mb": peaks,
            "ready": {n: w.ready for n, w in workers.items()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
