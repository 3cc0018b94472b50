"""Serving benchmark: streaming clients against a real ``siger serve`` on 127.0.0.1.

For 1, 4 and 16 concurrent clients, each streaming ``/v1/generate`` requests one after
another: tokens/s over all clients, request latency p50/p99 and time to first token p50. The
same 16-client load is then run against a server started with ``--max-batch 1`` (one request
decoded at a time, the others wait), so the speed-up of the shared decode batch is a ratio
measured in the same run, as is 16 clients' throughput over one client's.

The model is a random one of the ``small`` shape (d_model 256, 8 layers, vocabulary 8000) unless
``--model`` names a model folder; its end tokens (and tokens that are not whole characters)
are silenced so every request decodes exactly ``--new-tokens`` tokens and every token streams.
The server gets ``--threads`` torch threads; the clients run in this process (asyncio, a
minimal HTTP client).

``--runtimes torch,onnxruntime`` also exports the model (sigerlm-onnx, ``--onnx-quantize``) and
runs the largest client count against a server started with ``--runtime onnxruntime`` on the
export; the two batched servers are run one after the other, alternating ``--rounds`` times, and
the ratio of their median tokens/s is reported.

    python benchmarks/serve.py --threads 1 --out docs/benchmarks/serve.json
    python benchmarks/serve.py --quick          # a tiny model and little load (a smoke test)
    python benchmarks/serve.py --runtimes torch,onnxruntime --clients 16 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/onnx.py is beside this file: keep the folder off the path so `import onnx` finds the package
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

TEXT = (
    "Nyak haga mengan di pekon. Saya mau makan di kampung. I want to eat in the village. "
    "Tabik pun, api kabar? Halo, apa kabar? Baik, terima kasih. Kota Bandar Lampung ada di Sumatra. "
)


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # Debian's libjemalloc2


def build_model(folder: Path, quick: bool) -> Path:
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    words = TEXT.split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    tok = BPETokenizer.train(texts, vocab_size=300 if quick else 1000, min_frequency=1)
    config = SigerConfig.from_profile("tiny" if quick else "small")
    torch.manual_seed(0)
    model = text_model(config, vocab_size=300 if quick else 8000, tokenizer=tok).eval()
    with torch.no_grad():  # every request runs to max_new_tokens, and every token shows as text
        for i in range(model.adapter.vocab_size):
            if i >= tok.vocab_size or "\ufffd" in tok.decode([i]) or i in tok.special_tokens.values():
                model.adapter.embedding.weight[i] = 0
    model.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(
        self,
        model: Path,
        db: Path,
        threads: int,
        max_batch: int,
        max_new_tokens: int,
        malloc: str | None,
        runtime: str = "torch",
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        plugins = "text,serving" if runtime == "torch" else "text,serving,onnx"
        env = {**os.environ, "SIGER_LOAD_PLUGINS": plugins, "OMP_NUM_THREADS": str(threads)}
        if malloc:
            env["LD_PRELOAD"] = malloc
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sigerlm.cli import main; main()",
                "serve",
                str(model),
                "--port",
                str(self.port),
                "--db",
                str(db),
                "--threads",
                str(threads),
                "--max-batch",
                str(max_batch),
                "--max-streams-per-key",
                "64",
                "--max-new-tokens",
                str(max_new_tokens),
                "--log-level",
                "warning",
                "--runtime",
                runtime,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited: " + self.proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_request(port: int, i: int, new_tokens: int) -> dict:
    """One streamed /v1/generate over a plain asyncio connection: a minimal HTTP/1.1 client
    (chunked transfer, SSE lines), so the clients, which share the machine with the server,
    cost as little CPU as possible."""
    body = json.dumps(
        {"prompt": f"Saya mau makan di kampung {i}", "max_new_tokens": new_tokens, "stream": True}
    ).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"HTTP {status!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # headers
    first, tokens, buffer = None, 0, b""
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            break
        buffer += await reader.readexactly(size)
        await reader.readexactly(2)
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            if block.startswith(b"event: delta") and first is None:
                first = time.perf_counter() - start
            elif block.startswith(b"event: done"):
                tokens = json.loads(block.split(b"data: ", 1)[1])["usage"]["completion_tokens"]
            elif block.startswith(b"event: error"):
                raise RuntimeError(block.decode())
    writer.close()
    return {"latency": time.perf_counter() - start, "first": first or 0.0, "tokens": tokens}


async def load(port: int, clients: int, requests_each: int, new_tokens: int) -> dict:
    await one_request(port, -1, 4)  # warm up

    async def worker(c: int) -> list[dict]:
        return [await one_request(port, c * 1000 + r, new_tokens) for r in range(requests_each)]

    start = time.perf_counter()
    results = [r for rows in await asyncio.gather(*(worker(c) for c in range(clients))) for r in rows]
    wall = time.perf_counter() - start
    latencies = sorted(r["latency"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "first_token_p50_s": percentile(sorted(r["first"] for r in results), 50),
        "errors": sum(r["tokens"] != new_tokens for r in results),
    }


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: a random small model)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3, help="requests per client, one after another")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--quick", action="store_true", help="a tiny model and little load")
    parser.add_argument(
        "--malloc",
        default=JEMALLOC if Path(JEMALLOC).exists() else None,
        help="a malloc library preloaded into the server (default: jemalloc when installed; '' for glibc)",
    )
    parser.add_argument("--runtimes", default="torch", help="torch,onnxruntime: compare at the largest client count")
    parser.add_argument("--onnx-quantize", default="none", choices=["none", "int8", "int4"])
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the runtime comparison")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.requests, args.clients = 16, 1, [1, 4]
    runtimes = args.runtimes.split(",")
    if runtimes != ["torch"]:
        return compare_runtimes(args, runtimes)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / "model", args.quick)
        rows = []
        server = Server(model, Path(tmp) / "a.db", args.threads, 32, args.new_tokens, args.malloc)
        try:
            for n in args.clients:
                rows.append({"mode": "batched", **asyncio.run(load(server.port, n, args.requests, args.new_tokens))})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            server.stop()
        most = max(args.clients)
        server = Server(model, Path(tmp) / "b.db", args.threads, 1, args.new_tokens, args.malloc)
        try:
            rows.append(
                {"mode": "one-at-a-time", **asyncio.run(load(server.port, most, args.requests, args.new_tokens))}
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            server.stop()
    one = next(r for r in rows if r["mode"] == "batched" and r["clients"] == min(args.clients))
    top = next(r for r in rows if r["mode"] == "batched" and r["clients"] == most)
    serial = rows[-1]
    report = {
        "threads": args.threads,
        "malloc": args.malloc or "glibc",
        "new_tokens": args.new_tokens,
        "requests_per_client": args.requests,
        "model": str(args.model) if args.model else ("random tiny" if args.quick else "random small (vocab 8000)"),
        "rows": rows,
        f"throughput_{most}_over_{min(args.clients)}": top["tokens_per_s"] / one["tokens_per_s"],
        "batched_over_one_at_a_time": top["tokens_per_s"] / serial["tokens_per_s"],
    }
    print("| mode | clients | tokens/s | latency p50 s | latency p99 s | first token p50 s | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['clients']} | {r['tokens_per_s']:.0f} | {r['latency_p50_s']:.3f} | "
            f"{r['latency_p99_s']:.3f} | {r['first_token_p50_s']:.3f} | {r['errors']} |"
        )
    print(
        f"\n{most} clients / {min(args.clients)} client throughput: "
        f"{report[f'throughput_{most}_over_{min(args.clients)}']:.2f}x; batched / one-at-a-time at {most} clients: "
        f"{report['batched_over_one_at_a_time']:.2f}x"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def export_onnx(model: Path, out: Path, quantize: str) -> Path:
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx.export import export_folder
    from sigerlm_onnx.hooks import ExportOptions

    return export_folder(load_model(model, make_plugin_manager()), out, ExportOptions(quantize=quantize, parity=False))


def compare_runtimes(args: argparse.Namespace, runtimes: list[str]) -> None:
    """The largest client count against one batched server per runtime, alternating."""
    most = max(args.clients)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / "model", args.quick)
        folders = {"torch": model}
        if "onnxruntime" in runtimes:
            folders["onnxruntime"] = export_onnx(model, Path(tmp) / "onnx", args.onnx_quantize)
        rows: list[dict] = []
        for r in range(args.rounds):
            for runtime in runtimes:
                db = Path(tmp) / f"{runtime}{r}.db"
                server = Server(folders[runtime], db, args.threads, 32, args.new_tokens, args.malloc, runtime)
                try:
                    row = asyncio.run(load(server.port, most, args.requests, args.new_tokens))
                finally:
                    server.stop()
                rows.append({"runtime": runtime, "round": r, **row})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    median = {rt: statistics.median(r["tokens_per_s"] for r in rows if r["runtime"] == rt) for rt in runtimes}
    print("| runtime | clients | tokens/s (median) | latency p50 s | first token p50 s | errors |")
    print("|---|---|---|---|---|---|")
    for rt in runtimes:
        mine = [r for r in rows if r["runtime"] == rt]
        lat = statistics.median(r["latency_p50_s"] for r in mine)
        first = statistics.median(r["first_token_p50_s"] for r in mine)
        errors = sum(r["errors"] for r in mine)
        print(f"| {rt} | {most} | {median[rt]:.0f} | {lat:.3f} | {first:.3f} | {errors} |")
    base = runtimes[0]
    for rt in runtimes[1:]:
        print(f"\n{rt} / {base} at {most} streaming clients: {median[rt] / median[base]:.2f}x")
    if args.out:
        report = {
            "threads": args.threads,
            "new_tokens": args.new_tokens,
            "requests_per_client": args.requests,
            "onnx_quantize": args.onnx_quantize,
            "model": str(args.model) if args.model else ("random tiny" if args.quick else "random small (vocab 8000)"),
            "rows": rows,
            "median_tokens_per_s": median,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
