"""The corpus builder: many sources in, one shuffled, deduplicated JSONL corpus and a report out.

A dataset config (YAML or JSON) lists sources, each with a format, a weight, a row cap, a
language tag and a dedup policy. Paths are relative to the data folder (``--data-dir``,
``$SIGER_DATA_DIR`` or ``../shared/data``) unless absolute. Formats:

- ``text``: ``{field: text}`` rows -> ``{"text": ...}``;
- ``instruction``: ``{instruction, input?, output, system?, reasoning?}`` -> a conversation;
- ``chat``: ``{messages: [{role, content}]}`` -> a conversation;
- ``parallel``: two fields of a pair (``source_field`` -> ``target_field``) with an
  ``instruction`` -> a conversation (a translation task).

Sources of one config are all text or all conversations; the corpus is read by the
``text_completion`` or the ``chat_jsonl`` dataset. Bad rows (invalid JSON, missing fields,
wrong types, empty text) are counted and reported as ``file:line: reason``; they never stop the
build and are never dropped silently. The same config and seed give the same corpus.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sigerlm.errors import SigerError
from sigerlm.io import atomic_write, read_jsonl
from sigerlm_text.chat import RowError, check_messages, instruction_to_messages

TEXT_FORMATS = {"text"}


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["text", "instruction", "chat", "parallel"]
    name: str | None = None
    field: str = "text"
    source_field: str | None = None
    target_field: str | None = None
    instruction: str | None = None
    system: str | None = None
    lang: str | None = Field(None, description="ISO 639-3 tag recorded on each row.")
    weight: float = Field(
        1.0, gt=0, description="Copies of each row: 2.5 = twice, plus a third time for half the rows."
    )
    max_rows: int | None = Field(None, ge=1, description="Keep at most this many rows (a seeded sample).")
    dedup: Literal["exact", "normalized", "none"] = "exact"
    skip_empty: bool = Field(
        False, description="Rows whose text fields are empty are counted as skipped, not reported as bad."
    )


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    seed: int = 0
    max_repeat: float = Field(4.0, ge=1, description="Weights above this are capped (and reported).")
    sources: list[Source] = Field(min_length=1)


def load_config(path: str | Path) -> CorpusConfig:
    path = Path(path)
    if not path.is_file():
        raise SigerError(f"{path}: dataset config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SigerError(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None
    try:
        config = CorpusConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SigerError("\n".join(lines)) from None
    kinds = {s.format in TEXT_FORMATS for s in config.sources}
    if len(kinds) > 1:
        raise SigerError(f"{path}: mixes text and conversation sources; build them as two corpora")
    for i, s in enumerate(config.sources):
        if s.format == "parallel" and not (s.source_field and s.target_field and s.instruction):
            raise SigerError(f"{path}: sources[{i}]: parallel needs source_field, target_field and instruction")
    return config


def _normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip()


def _text_field(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise RowError(f"missing field '{key}'")
    if not isinstance(value, str):
        raise RowError(f"'{key}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"'{key}' is empty")
    return value


def _row_to_record(source: Source, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RowError("not an object")
    if source.format == "text":
        return {"text": _text_field(row, source.field)}
    if source.format == "instruction":
        messages = instruction_to_messages(row)
    elif source.format == "chat":
        messages = check_messages(row.get("messages"))
    else:
        pair = [_text_field(row, key).strip() for key in (source.source_field, source.target_field)]
        messages = [
            {"role": "user", "content": f"{source.instruction}\n\n{pair[0]}"},
            {"role": "assistant", "content": pair[1]},
        ]
    if source.system:
        messages = [{"role": "system", "content": source.system}] + [m for m in messages if m["role"] != "system"]
    return {"messages": messages}


def build_corpus(
    config: CorpusConfig,
    data_dir: Path,
    out: Path,
    tokenizer: Any = None,
    seed: int | None = None,
    valid_fraction: float = 0.0,
) -> dict[str, Any]:
    """Write the corpus to ``out`` and its report to ``out.report.json``; return the report.

    With ``valid_fraction``, that share of the rows (after shuffling, whole copies of a row
    kept together) goes to ``<out stem>.valid.jsonl`` and the rest to ``<out stem>.train.jsonl``."""
    seed = config.seed if seed is None else seed
    rng = random.Random(seed)
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    report: dict[str, Any] = {"name": config.name, "seed": seed, "sources": [], "bad_rows": []}
    for index, source in enumerate(config.sources):
        path = Path(source.path) if Path(source.path).is_absolute() else data_dir / source.path
        name = source.name or f"{Path(source.path).stem}:{source.format}"
        stats = {
            "source": name,
            "path": str(path),
            "read": 0,
            "bad": 0,
            "skipped_empty": 0,
            "duplicates": 0,
            "over_max_rows": 0,
            "kept": 0,
            "written": 0,
            "weight": source.weight,
            "oversampling_capped": False,
        }
        if not path.is_file():
            raise SigerError(f"sources[{index}]: {path} not found")
        kept: list[dict[str, Any]] = []
        for number, row, error in read_jsonl(path):
            stats["read"] += 1
            try:
                if error is not None:
                    raise RowError(error)
                record = _row_to_record(source, row)
            except RowError as exc:
                if source.skip_empty and str(exc).endswith("is empty"):
                    stats["skipped_empty"] += 1
                    continue
                stats["bad"] += 1
                report["bad_rows"].append(f"{path}:{number}: {exc}")
                continue
            if source.dedup != "none":
                key = json.dumps(record, sort_keys=True, ensure_ascii=False)
                key = _normalize(key) if source.dedup == "normalized" else key
                if key in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(key)
            record.update(source=name, **({"lang": source.lang} if source.lang else {}))
            kept.append(record)
        if source.max_rows is not None and len(kept) > source.max_rows:
            stats["over_max_rows"] = len(kept) - source.max_rows
            kept = rng.sample(kept, source.max_rows)
        stats["kept"] = len(kept)
        weight = source.weight
        if weight > config.max_repeat:
            weight = config.max_repeat
            stats["oversampling_capped"] = True
        whole, fraction = int(weight), weight - int(weight)
        for record in kept:
            copies = whole + (1 if rng.random() < fraction else 0)
            records.extend([record] * copies)
            stats["written"] += copies
        report["sources"].append(stats)
    rng.shuffle(records)
    if valid_fraction > 0:
        unique = list({json.dumps(r, sort_keys=True, ensure_ascii=False): None for r in records})
        held = set(unique[: max(1, int(len(unique) * valid_fraction))])
        valid = [r for r in records if json.dumps(r, sort_keys=True, ensure_ascii=False) in held]
        records = [r for r in records if json.dumps(r, sort_keys=True, ensure_ascii=False) not in held]
        stem = out.with_suffix("")
        atomic_write(Path(f"{stem}.valid.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in valid))
        out = Path(f"{stem}.train.jsonl")
        report["valid_rows"] = len(valid)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    report["rows"] = len(records)
    report["bad"] = sum(s["bad"] for s in report["sources"])
    report["duplicates"] = sum(s["duplicates"] for s in report["sources"])
    if tokenizer is not None:
        report["tokenizer"] = tokenizer.hash
        for stats in report["sources"]:
            stats["tokens"] = 0
        by_name = {s["source"]: s for s in report["sources"]}
        for record in records:
            content = record["text"] if "text" in record else "".join(m["content"] for m in record["messages"])
            by_name[record["source"]]["tokens"] += len(tokenizer.encode(content, allow_special=False))
        report["tokens"] = sum(s["tokens"] for s in report["sources"])
    atomic_write(out, text)
    atomic_write(Path(f"{out}.report.json"), json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report
