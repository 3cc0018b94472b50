"""Reading training text from plain text and JSONL files, one document at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sigerlm.errors import SigerError
from sigerlm.io import read_jsonl


def iter_documents(paths: Iterable[str | Path], fields: Sequence[str] = ()) -> Iterator[str]:
    """Documents of text files (one per non-empty line) and JSONL files (every string field of
    each row, or only ``fields``). Lines that are not JSON are an error naming file and line."""
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
        if not files:
            raise SigerError(f"{path}: no .txt or .jsonl files")
        for file in files:
            if not file.is_file():
                raise SigerError(f"{file}: file not found")
            if file.suffix != ".jsonl":
                with file.open(encoding="utf-8") as handle:
                    yield from (line.rstrip("\n") for line in handle if line.strip())
                continue
            for number, row, error in read_jsonl(file):
                if error is not None:
                    raise SigerError(f"{file}:{number}: {error}")
                yield from _strings(row, fields)


def _strings(value: object, fields: Sequence[str]) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if fields and key not in fields:
                if isinstance(item, (dict, list)):
                    yield from _strings(item, fields)
                continue
            if isinstance(item, str):
                if item.strip():
                    yield item
            elif isinstance(item, (dict, list)):
                yield from _strings(item, ())
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, fields)
    elif isinstance(value, str) and value.strip():
        yield value
