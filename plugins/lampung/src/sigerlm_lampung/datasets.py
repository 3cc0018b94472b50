"""The ``lampung-parallel`` dataset: pairs -> instruction rows -> sigerlm-text's ``instruction_jsonl``.

The rows are written once (seeded from the run) to a JSONL file in the run folder, or in the
cache folder when the run has none, and read through sigerlm-text's tokenised cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sigerlm.io import atomic_write
from sigerlm_lampung.builders import instruction_rows
from sigerlm_lampung.data import load_split


def lampung_parallel(
    run: Any,
    split: str,
    directions: list[str],
    data_dir: str | None,
    tokenizer: str | None,
    seq_len: int | None,
    batch_size: int,
    shuffle: bool,
) -> Any:
    from sigerlm_text import datasets as d

    seed = getattr(run, "seed", 0)
    rows = instruction_rows(load_split(split, data_dir), directions, seed)
    text = "".join(
        json.dumps({k: r[k] for k in ("instruction", "input", "output")}, ensure_ascii=False) + "\n" for r in rows
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    out_dir = getattr(run, "out_dir", None)
    folder = (
        Path(out_dir)
        if out_dir is not None
        else Path(os.environ.get("SIGER_CACHE_DIR") or Path.home() / ".cache" / "sigerlm") / "lampung"
    )
    file = folder / f"lampung-{split}-{digest}.jsonl"
    if not file.is_file():
        atomic_write(file, text)
    length = d.resolve_seq_len(run, seq_len)
    return d.InstructionJsonl(run, d.resolve_tokenizer(run, tokenizer), [file], length, batch_size, shuffle, {})
