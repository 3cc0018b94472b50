"""Reading and checking the Lampung pair files (JSONL, one pair a line)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sigerlm.io import read_jsonl

REQUIRED = ("lampung", "indonesian")
#: Files with their own schema, which the pair checks do not apply to.
OWN_SCHEMA = {"meizano_lampung_dictionary.jsonl"}


@dataclass
class FileReport:
    path: str
    rows: int = 0
    with_english: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_pair_file(path: Path, name: str | None = None) -> FileReport:
    """Count rows, sources and quality flags; list lines that are not valid pairs."""
    report = FileReport(name or str(path))
    sources: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    for number, row, error in read_jsonl(path):
        if error is not None:
            report.problems.append(f"line {number}: {error}")
            continue
        if not isinstance(row, dict):
            report.problems.append(f"line {number}: not an object")
            continue
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            report.problems.append(f"line {number}: missing {', '.join(missing)}")
            continue
        report.rows += 1
        report.with_english += bool(str(row.get("english") or "").strip())
        sources[str(row.get("source", "?"))] += 1
        for flag in row.get("quality_flags") or []:
            flags[str(flag)] += 1
    report.sources, report.flags = dict(sources), dict(flags)
    return report


def check_pair_files(lampung_dir: Path) -> list[FileReport]:
    """Check every pair file under ``lampung/splits`` and ``lampung/sources``."""
    files = sorted(p for sub in ("splits", "sources") for p in (lampung_dir / sub).glob("*.jsonl"))
    if not files:
        from sigerlm.errors import SigerError

        raise SigerError(f"no Lampung pair files (*.jsonl) under {lampung_dir}/splits or {lampung_dir}/sources")
    return [check_pair_file(p, str(p.relative_to(lampung_dir))) for p in files if p.name not in OWN_SCHEMA]
