"""Tokenization throughput: SigerLM's trained ByteLevel BPE against tiktoken's cl100k_base.

Both encode the same documents (the text of ../shared/data/general/corpus/*.jsonl, one
document a row), batched, with the same number of threads, interleaved over rounds. Prints
MB/s and the ratio. Run alone:

    python benchmarks/tokenization.py --threads 2 --vocab-size 8000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1024, help="documents per encode_batch call")
    parser.add_argument("--limit-mb", type=float, default=0, help="use only this many MB of text (0: all)")
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its pool

    from sigerlm.paths import data_dir
    from sigerlm_text.corpus_text import iter_documents
    from sigerlm_text.tokenizers.bpe import BPETokenizer
    from sigerlm_text.tokenizers.tiktoken_fallback import TiktokenTokenizer

    root = data_dir()
    docs = []
    size = 0
    for file in sorted((root / "general" / "corpus").glob("*.jsonl")):
        for line in file.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text") or json.loads(line).get("ind") or ""
            if text:
                docs.append(text)
                size += len(text.encode("utf-8"))
        if args.limit_mb and size > args.limit_mb * 1e6:
            break
    started = time.perf_counter()
    bpe = BPETokenizer.train(iter_documents([root]), vocab_size=args.vocab_size)
    train_s = time.perf_counter() - started
    tik = TiktokenTokenizer()

    def run(tok) -> float:
        start = time.perf_counter()
        for i in range(0, len(docs), args.batch):
            if tok.kind == "tiktoken":
                tok._enc.encode_ordinary_batch(docs[i : i + args.batch], num_threads=args.threads)
            else:
                tok.encode_batch(docs[i : i + args.batch], allow_special=False)
        return size / 1e6 / (time.perf_counter() - start)

    results: dict[str, list[float]] = {"bpe": [], "tiktoken": []}
    for _ in range(args.rounds):
        results["bpe"].append(run(bpe))
        results["tiktoken"].append(run(tik))
    bpe_mbs, tik_mbs = statistics.median(results["bpe"]), statistics.median(results["tiktoken"])
    tokens_bpe = sum(len(x) for x in bpe.encode_batch(docs[:2000], allow_special=False))
    tokens_tik = sum(len(x) for x in tik.encode_batch(docs[:2000], allow_special=False))
    chars = sum(len(d) for d in docs[:2000])
    print(
        f"text: {size / 1e6:.1f} MB in {len(docs)} documents; threads {args.threads}; "
        f"BPE ({bpe.vocab_size} tokens) trained on all of {root} in {train_s:.1f} s",
        file=sys.stderr,
    )
    print("| tokenizer | vocabulary | MB/s (batched) | x tiktoken | characters per token |")
    print("|---|---|---|---|---|")
    print(f"| SigerLM BPE | {bpe.vocab_size} | {bpe_mbs:.2f} | {bpe_mbs / tik_mbs:.2f} | {chars / tokens_bpe:.2f} |")
    print(f"| tiktoken cl100k_base | {tik.vocab_size} | {tik_mbs:.2f} | 1.00 | {chars / tokens_tik:.2f} |")


if __name__ == "__main__":
    main()
