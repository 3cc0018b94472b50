"""Instruction and chat datasets built from the pairs, for every direction.

Rows follow the original SigerLM instruction format (``Terjemahkan Lampung O ke Bahasa
Indonesia`` ...; ``Lampung Nyo`` for dialect ``nyo``): ``{"instruction", "input", "output"}``
for ``instruction_jsonl`` and ``{"messages": [...]}`` for ``chat_jsonl`` of sigerlm-text.
The order is shuffled with the seed, so the same seed gives the same files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sigerlm_lampung.data import Pair

DIRECTIONS = ("abl-ind", "ind-abl", "abl-eng", "eng-abl")


def instruction(src: str, tgt: str, dialect: str = "o") -> str:
    lampung = "Lampung Nyo" if dialect == "nyo" else "Lampung O"
    if "eng" in (src, tgt):
        names = {"abl": lampung, "eng": "English", "ind": "Indonesian"}
        return f"Translate {names[src]} to {names[tgt]}"
    names = {"abl": lampung, "ind": "Bahasa Indonesia"}
    return f"Terjemahkan {names[src]} ke {names[tgt]}"


def raw_side(pair: Pair, lang: str) -> str:
    return {"abl": pair.lampung, "ind": pair.indonesian, "eng": pair.english}[lang].strip()


def instruction_rows(
    pairs: Sequence[Pair], directions: Sequence[str] = DIRECTIONS, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per pair and direction (directions whose sides exist), shuffled with ``seed``."""
    from sigerlm.errors import SigerError

    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise SigerError(f"unknown direction(s) {', '.join(unknown)}: use {', '.join(DIRECTIONS)}")
    rows = []
    for pair in pairs:
        for direction in directions:
            src, tgt = direction.split("-")
            source, target = raw_side(pair, src), raw_side(pair, tgt)
            if source and target:
                rows.append(
                    {
                        "instruction": instruction(src, tgt, pair.dialect),
                        "input": source,
                        "output": target,
                        "direction": direction,
                        "source": pair.source,
                    }
                )
    random.Random(seed).shuffle(rows)
    return rows


def chat_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{r['instruction']}: {r['input']}"},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in rows
    ]


def write_datasets(
    out: str | Path,
    split: str = "train",
    seed: int = 0,
    data_dir: str | Path | None = None,
    directions: Sequence[str] = DIRECTIONS,
) -> dict[str, Any]:
    """Write ``instructions.jsonl`` and ``chat.jsonl`` under ``out``; returns counts."""
    from sigerlm.io import atomic_write
    from sigerlm_lampung.data import load_split

    rows = instruction_rows(load_split(split, data_dir), directions, seed)
    out = Path(out)
    atomic_write(out / "instructions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write(out / "chat.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_rows(rows)))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["direction"]] = counts.get(r["direction"], 0) + 1
    return {
        "rows": len(rows),
        "by_direction": counts,
        "files": [str(out / "instructions.jsonl"), str(out / "chat.jsonl")],
    }
