"""Decode speed of torch eager against onnxruntime fp32 / INT8 / INT4, interleaved in one run.

    .venv/bin/python benchmarks/onnx.py [--profile small] [--vocab 32000] [--steps 100] [--threads 1]

A random model of the profile's shape with a tied head of ``--vocab`` tokens is exported with
each quantization; every round times each runtime once (batch 1 and 16), so a busy machine
slows them alike. Prints ms/token (median of rounds), the ratio to torch and the graph size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# this file is named onnx.py: keep its folder off the path so `import onnx` finds the package
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="small")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,16")
    args = parser.parse_args()

    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.runtime import TorchRuntime
    from sigerlm_onnx.export import export_folder
    from sigerlm_onnx.hooks import ExportOptions
    from sigerlm_onnx.runtime import OnnxRuntime
    from sigerlm_text.model import text_model

    torch.manual_seed(0)
    model = text_model(SigerConfig.from_profile(args.profile), vocab_size=args.vocab).eval()
    runtimes = {"torch": TorchRuntime(model, threads=args.threads)}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q in ("none", "int8", "int4"):
            out = Path(tmp) / q
            export_folder(model, out, ExportOptions(quantize=q, parity=False))
            runtimes[f"ort-{q}"] = OnnxRuntime(model, threads=args.threads, folder=out)
            sizes[f"ort-{q}"] = (out / "model.onnx").stat().st_size / 2**20
        for batch in (int(b) for b in args.batches.split(",")):
            times: dict[str, list[float]] = {name: [] for name in runtimes}
            for _ in range(args.rounds):
                for name, rt in runtimes.items():
                    ids = torch.zeros(batch, dtype=torch.long)
                    _, state = rt.prefill({"input_ids": torch.zeros(batch, 8, dtype=torch.long)})
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        logits, state = rt.step({"input_ids": ids}, state)
                    times[name].append((time.perf_counter() - start) / args.steps * 1e3)
            base = statistics.median(times["torch"])
            for name, values in times.items():
                ms = statistics.median(values)
                size = f"{sizes[name]:.1f} MiB" if name in sizes else "-"
                print(f"batch {batch:2d} {name:9s} {ms:7.2f} ms/step  {base / ms:5.2f}x torch  graph {size}")


if __name__ == "__main__":
    main()
