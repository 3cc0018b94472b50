"""Reading and checking the Lampung pair files (JSONL, one pair a line)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sigerlm.io import read_jsonl
from sigerlm_lampung.text import first_alternatives, normalize, strip_glosses

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


# --- loading pairs for translation -------------------------------------------------------------

#: Rows with these flags are skipped; ``suspect_swapped_sides`` rows are swapped instead.
SKIP_FLAGS = {"misaligned_turns", "scrape_noise"}
DIALECT_A_FLAG = "dialect_A_article"
SWAP_FLAG = "suspect_swapped_sides"
HUMAN_SOURCES = ("rajotuho", "smt")  # source tags (prefixes) of the human-written sentence pairs
MEIZANO_FILE = "meizano_lampung_dictionary.jsonl"


@dataclass(frozen=True)
class Pair:
    """One cleaned pair: the raw sides (flags applied) plus their normalised forms."""

    lampung: str
    indonesian: str
    english: str = ""
    source: str = ""
    type: str = ""
    dialect: str = "o"

    @cached_property
    def lo(self) -> str:
        return normalize(first_alternatives(strip_glosses(self.lampung)))

    @cached_property
    def id(self) -> str:
        return normalize(first_alternatives(strip_glosses(self.indonesian)))

    @cached_property
    def en(self) -> str:
        return normalize(self.english)

    def side(self, lang: str) -> str:
        """The normalised side in ``abl``, ``ind`` or ``eng``."""
        return {"abl": self.lo, "ind": self.id, "eng": self.en}[lang]

    @property
    def is_human(self) -> bool:
        return self.source.startswith(HUMAN_SOURCES)

    @property
    def is_template(self) -> bool:
        return self.type == "synthetic_composition"


def clean_row(row: Any, keep_dialect_a: bool = False) -> Pair | None:
    """A ``Pair`` from a pair-file row with its quality flags honoured, or None to skip it."""
    if not isinstance(row, dict):
        return None
    lampung, indonesian = str(row.get("lampung") or "").strip(), str(row.get("indonesian") or "").strip()
    if not lampung or not indonesian:
        return None
    flags = set(row.get("quality_flags") or [])
    if flags & SKIP_FLAGS or (DIALECT_A_FLAG in flags and not keep_dialect_a):
        return None
    if SWAP_FLAG in flags:
        lampung, indonesian = indonesian, lampung
    if lampung.startswith("=") or indonesian.startswith("="):
        return None
    return Pair(
        lampung,
        indonesian,
        str(row.get("english") or "").strip(),
        str(row.get("source") or ""),
        str(row.get("type") or ""),
        str(row.get("dialect") or "o"),
    )


def read_pairs(path: Path, keep_dialect_a: bool = False) -> list[Pair]:
    """Cleaned, deduplicated pairs of one pair file; broken lines raise a clear error."""
    from sigerlm.errors import SigerError

    if not path.is_file():
        raise SigerError(f"Lampung pair file not found: {path}")
    out: list[Pair] = []
    for number, row, error in read_jsonl(path):
        if error is not None:
            raise SigerError(f"{path}:{number}: {error}")
        pair = clean_row(row, keep_dialect_a)
        if pair is not None:
            out.append(pair)
    return dedup(out)


def dedup(pairs: list[Pair]) -> list[Pair]:
    """Drop pairs whose normalised (lampung, indonesian, english) was already seen; keep order."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for p in pairs:
        key = (p.lo, p.id, p.en)
        if key not in seen and p.lo and p.id:
            seen.add(key)
            out.append(p)
    return out


def lampung_dir(data_dir: str | Path | None = None) -> Path:
    """``<data>/lampung`` (``data_dir``, ``$SIGER_DATA_DIR`` or ``../shared/data``)."""
    from sigerlm.errors import SigerError
    from sigerlm.paths import data_dir as find_data_dir

    root = find_data_dir(data_dir)
    folder = root / "lampung" if (root / "lampung").is_dir() else root
    if not (folder / "splits").is_dir():
        raise SigerError(f"no Lampung data under {root}: expected {root}/lampung/splits/*.jsonl")
    return folder


def load_split(split: str, data_dir: str | Path | None = None, keep_dialect_a: bool = False) -> list[Pair]:
    """The cleaned pairs of ``splits/<split>.jsonl`` (``train`` or ``valid``)."""
    return read_pairs(lampung_dir(data_dir) / "splits" / f"{split}.jsonl", keep_dialect_a)


@dataclass(frozen=True)
class DictEntry:
    indonesian: str  # normalised
    lampung: str  # normalised
    dialect: str  # "nyo", "", "api"


def read_meizano(path: Path) -> list[DictEntry]:
    """The meizano Indonesian -> Lampung dictionary (GPL-3.0), read from its path at run time.

    Glosses in parentheses are dropped, alternatives joined by ``.`` or ``/`` split, punctuation
    removed. Never bundle this file or tables derived from it into a package.
    """
    from sigerlm.errors import SigerError
    from sigerlm_lampung.text import normalize, strip_glosses

    if not path.is_file():
        raise SigerError(f"meizano dictionary not found: {path}")
    out: list[DictEntry] = []
    seen: set[tuple[str, str]] = set()
    for number, row, error in read_jsonl(path):
        if error is not None or not isinstance(row, dict):
            raise SigerError(f"{path}:{number}: {error or 'not an object'}")
        ind = normalize(strip_glosses(str(row.get("indonesian") or "")))
        dialect = str(row.get("dialect") or "")
        for alt in str(row.get("lampung") or "").replace("/", ".").split("."):
            lo = normalize(strip_glosses(alt))
            if ind and lo and (ind, lo) not in seen:
                seen.add((ind, lo))
                out.append(DictEntry(ind, lo, dialect))
    return out


def load_meizano(data_dir: str | Path | None = None, path: str | Path | None = None) -> list[DictEntry]:
    """The meizano dictionary from ``path`` or ``<data>/lampung/sources``; [] when absent."""
    file = Path(path) if path is not None else lampung_dir(data_dir) / "sources" / MEIZANO_FILE
    if path is None and not file.is_file():
        return []
    return read_meizano(file)


def load_word_pairs(data_dir: str | Path | None = None) -> list[Pair]:
    """``sources/kamus_full_word_pairs.jsonl`` (not in the splits); [] when absent."""
    file = lampung_dir(data_dir) / "sources" / "kamus_full_word_pairs.jsonl"
    return read_pairs(file) if file.is_file() else []


def load_parallel_ind_eng(data_dir: str | Path | None = None, limit: int | None = None) -> list[tuple[str, str]]:
    """Normalised (indonesian, english) pairs of ``general/corpus/parallel_ind_eng.jsonl``; [] when absent."""
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_lampung.text import normalize

    file = find_data_dir(data_dir) / "general" / "corpus" / "parallel_ind_eng.jsonl"
    out: list[tuple[str, str]] = []
    if not file.is_file():
        return out
    for _, row, error in read_jsonl(file):
        if error is None and isinstance(row, dict) and row.get("ind") and row.get("eng"):
            ind, eng = normalize(str(row["ind"])), normalize(str(row["eng"]))
            if ind and eng and len(ind.split()) <= 40:
                out.append((ind, eng))
                if limit and len(out) >= limit:
                    break
    return out


def load_monolingual(data_dir: str | Path | None, lang: str, max_sentences: int = 30000) -> list[str]:
    """Normalised sentences of ``general/corpus/<indonesian|english>.jsonl`` for the language models."""
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_lampung.text import normalize

    name = {"ind": "indonesian", "eng": "english"}[lang]
    file = find_data_dir(data_dir) / "general" / "corpus" / f"{name}.jsonl"
    out: list[str] = []
    if not file.is_file():
        return out
    import re

    for _, row, error in read_jsonl(file):
        if error is not None or not isinstance(row, dict):
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", str(row.get("text") or "")):
            norm = normalize(sentence)
            if 2 <= len(norm.split()) <= 40:
                out.append(norm)
        if len(out) >= max_sentences:
            break
    return out[:max_sentences]
