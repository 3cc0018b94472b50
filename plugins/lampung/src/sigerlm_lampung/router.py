"""The router: which language a message is in, and what the user asks for.

``LanguageId`` is a multinomial naive Bayes over character n-grams (1 to 4 characters of each
word padded with spaces), trained from the data: Lampung O (the Lampung sides of the pairs),
Indonesian and English (the pairs' other sides and the general corpora), and ``other``: the
Indonesian regional languages of ``general/corpus/parallel_ind_local.jsonl`` and the NusaX
columns (Javanese, Sundanese, Minang, Madurese, Betawi, ...), which look like Lampung to a
careless classifier.

``route(message)`` finds an explicit request first (``terjemahkan ke bahasa Lampung: ...``,
``translate to English: ...``, ``apa arti ...``) and otherwise looks at the language of a bare
message: Lampung goes to ``lampung_to_id``, anything else to ``general_chat``.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigerlm_lampung.text import normalize

LABELS = ("abl", "ind", "eng", "other")
INTENTS = ("lampung_to_id", "id_to_lampung", "lampung_to_en", "en_to_lampung", "general_chat")
LOCAL_COLUMNS = (
    "jav",
    "sun",
    "min",
    "mad",
    "bew",
    "btk",
    "mak",
    "bug",
    "ban",
    "ace",
    "bjn",
    "mui",
    "rej",
    "abs",
    "bhp",
    "nij",
    "bbc",
)


def char_ngrams(text: str, max_n: int = 4) -> Counter[str]:
    out: Counter[str] = Counter()
    for word in normalize(text).split():
        padded = f" {word} "
        for n in range(1, max_n + 1):
            for i in range(len(padded) - n + 1):
                out[padded[i : i + n]] += 1
        out[f"W:{word}"] += 2  # whole words weigh a little more
    return out


class LanguageId:
    def __init__(self, alpha: float = 0.1):
        self.alpha = alpha
        self.counts: dict[str, Counter[str]] = {}
        self.priors: dict[str, float] = {}

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> LanguageId:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        docs: Counter[str] = Counter()
        for text, label in zip(texts, labels, strict=True):
            counts[label].update(char_ngrams(text))
            docs[label] += 1
        self.counts = dict(counts)
        self.totals = {k: sum(c.values()) for k, c in counts.items()}
        self.vocab = len(set().union(*counts.values())) if counts else 1
        # uniform priors: the mix of training texts says nothing about what users type
        self.priors = {k: math.log(1 / len(docs)) for k in docs}
        return self

    def scores(self, text: str) -> dict[str, float]:
        grams = char_ngrams(text)
        out = {}
        for label, counts in self.counts.items():
            denom = math.log(self.totals[label] + self.alpha * self.vocab)
            out[label] = self.priors[label] + sum(
                c * (math.log(counts.get(g, 0) + self.alpha) - denom) for g, c in grams.items()
            )
        return out

    def predict(self, text: str) -> tuple[str, float]:
        """(label, probability) for ``text``; ``("other", 0.0)`` for text without words."""
        scores = self.scores(text)
        if not normalize(text) or not scores:
            return "other", 0.0
        best = max(scores, key=scores.__getitem__)
        total = sum(math.exp(s - scores[best]) for s in scores.values())
        return best, round(1 / total, 4)


@dataclass
class Example:
    text: str
    label: str
    human: bool = False  # a human-written Lampung pair (rajotuho, smt): held out apart
    lexicon: bool = False  # a dictionary word: always trained on, never held out


def language_data(data_dir: str | Path | None = None, per_label: int = 4000, seed: int = 0) -> list[Example]:
    """Examples from the data folder: sentences (at most ``per_label`` a label, besides the
    human-written Lampung pairs) and dictionary words (meizano's Lampung O and untagged words,
    the kamus headwords, meizano's Indonesian headwords)."""
    from sigerlm.io import read_jsonl
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_lampung import data as d

    pairs = d.dedup(d.load_split("train", data_dir) + d.load_split("valid", data_dir))
    by_label: dict[str, list[str]] = defaultdict(list)
    human: list[Example] = []
    lexicon: list[Example] = []
    for p in pairs:
        if p.type == "dictionary":
            lexicon.append(Example(p.lampung, "abl", lexicon=True))
            continue
        if p.is_human:
            human += [Example(p.lampung, "abl", human=True), Example(p.indonesian, "ind", human=True)]
        else:
            by_label["abl"].append(p.lampung)
            by_label["ind"].append(p.indonesian)
        if p.english:
            by_label["eng"].append(p.english)
    for entry in d.load_meizano(data_dir):
        if entry.dialect != "api":
            lexicon.append(Example(entry.lampung, "abl", lexicon=True))
    lexicon += [Example(w, "ind", lexicon=True) for w in sorted({e.indonesian for e in d.load_meizano(data_dir)})]
    for lang in ("ind", "eng"):
        by_label[lang] += d.load_monolingual(data_dir, lang, per_label)
    root = find_data_dir(data_dir) / "general" / "corpus"
    for name in ("parallel_ind_local.jsonl", "parallel_ind_eng.jsonl"):
        file = root / name
        if not file.is_file():
            continue
        for number, row, error in read_jsonl(file):
            if error is None and isinstance(row, dict):
                for col in LOCAL_COLUMNS:
                    if isinstance(row.get(col), str) and row[col].strip():
                        by_label["other"].append(row[col])
            if number >= per_label:  # enough rows: the file is large
                break
    rng = random.Random(seed)
    out: list[Example] = []
    for label in LABELS:
        texts = list(dict.fromkeys(t for t in by_label[label] if normalize(t)))
        rng.shuffle(texts)
        out += [Example(t, label) for t in texts[:per_label]]
    out += [e for e in human if normalize(e.text)] + [e for e in lexicon if normalize(e.text)]
    rng.shuffle(out)
    return out


def train_language_id(
    data_dir: str | Path | None = None, per_label: int = 4000, heldout: float = 0.2, seed: int = 0
) -> tuple[LanguageId, dict[str, Any]]:
    """Train on all but a held-out part, report accuracy there, then refit on everything.

    The held-out part is a random ``heldout`` share of the sentences plus every human-written
    Lampung pair (both sides), so the report also says how the identifier does on Lampung
    written by people rather than the templated and synthetic sentences most rows are."""
    examples = language_data(data_dir, per_label, seed)
    sentences = [e for e in examples if not e.lexicon and not e.human]
    cut = int(len(sentences) * (1 - heldout))
    train = sentences[:cut] + [e for e in examples if e.lexicon]
    model = LanguageId().fit([e.text for e in train], [e.label for e in train])
    report = heldout_report(model, [(e.text, e.label) for e in sentences[cut:]])
    human = [(e.text, e.label) for e in examples if e.human]
    if human:
        report["human_written"] = heldout_report(model, human)
        longer = [(t, label) for t, label in human if len(normalize(t).split()) >= 3]
        report["human_written_3_words"] = heldout_report(model, longer)
    model = LanguageId().fit([e.text for e in examples], [e.label for e in examples])
    return model, report


def heldout_report(model: LanguageId, test: Sequence[tuple[str, str]]) -> dict[str, Any]:
    predicted = [model.predict(t)[0] for t, _ in test]
    gold = [label for _, label in test]
    three = [(p, g) for p, g in zip(predicted, gold, strict=True) if g in ("abl", "ind", "eng")]
    per_label = {}
    for label in LABELS:
        rows = [(p, g) for p, g in zip(predicted, gold, strict=True) if g == label]
        if rows:
            per_label[label] = {"n": len(rows), "accuracy": round(100 * sum(p == g for p, g in rows) / len(rows), 2)}
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for p, g in zip(predicted, gold, strict=True):
        confusion[g][p] += 1
    return {
        "n": len(test),
        "accuracy_4way": round(100 * sum(p == g for p, g in zip(predicted, gold, strict=True)) / max(len(gold), 1), 2),
        # Lampung vs Indonesian vs English: texts of those three, any wrong label counts as an error
        "accuracy_abl_ind_eng": round(100 * sum(p == g for p, g in three) / max(len(three), 1), 2),
        "per_label": per_label,
        "confusion": {g: dict(c) for g, c in confusion.items()},
    }


# ------------------------------------------------------------------------------ intents
_TO_LAMPUNG = r"(?:bahasa\s+|basa\s+)?lampung(?:\s+(?:o|nyo|nyow|dialek\s+o))?"
_TO_INDONESIAN = r"(?:bahasa\s+)?indonesia"
_TO_ENGLISH = r"(?:bahasa\s+)?(?:inggris|english)"
_LEAD = r"^\s*(?:tolong\s+|please\s+|coba\s+)?"
_SEP = r"\s*[:\-]?\s*"
REQUESTS = [
    (
        re.compile(
            _LEAD
            + r"(?:terjemahkan|artikan|translate)(?:\s+(?:ini|this|kalimat\s+ini))?\s+(?:ke|kedalam|ke\s+dalam|to|into)\s+"  # noqa: E501
            + _TO_LAMPUNG
            + _SEP
            + r"(?P<text>.+)$",
            re.IGNORECASE | re.DOTALL,
        ),
        "to_abl",
    ),
    (
        re.compile(
            _LEAD
            + r"(?:terjemahkan|artikan|translate)(?:\s+(?:ini|this|kalimat\s+ini))?\s+(?:ke|kedalam|ke\s+dalam|to|into)\s+"  # noqa: E501
            + _TO_INDONESIAN
            + _SEP
            + r"(?P<text>.+)$",
            re.IGNORECASE | re.DOTALL,
        ),
        "to_ind",
    ),
    (
        re.compile(
            _LEAD
            + r"(?:terjemahkan|artikan|translate)(?:\s+(?:ini|this|kalimat\s+ini))?\s+(?:ke|kedalam|ke\s+dalam|to|into)\s+"  # noqa: E501
            + _TO_ENGLISH
            + _SEP
            + r"(?P<text>.+)$",
            re.IGNORECASE | re.DOTALL,
        ),
        "to_eng",
    ),
    (
        re.compile(
            _LEAD + r"(?:apa\s+arti(?:nya)?|arti(?:\s+dari)?|what\s+does)\s+(?P<text>.+?)(?:\s+mean)?\s*\??$",
            re.IGNORECASE | re.DOTALL,
        ),
        "meaning",
    ),
    (
        re.compile(r"^\s*(?P<text>.+?)\s+(?:dalam|in)\s+(?:bahasa\s+)?lampung\s*\??$", re.IGNORECASE | re.DOTALL),
        "to_abl",
    ),
]


@dataclass
class Route:
    intent: str
    text: str
    language: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "text": self.text, "language": self.language, "confidence": self.confidence}


class Router:
    def __init__(self, language_id: LanguageId, min_confidence: float = 0.6):
        self.language_id = language_id
        self.min_confidence = min_confidence

    def route(self, message: str) -> Route:
        text = message.strip().strip("\"'“”")
        for pattern, kind in REQUESTS:
            match = pattern.match(text)
            if not match:
                continue
            body = match.group("text").strip().strip("\"'“”")
            lang, conf = self.language_id.predict(body)
            if kind == "to_abl":
                return Route("en_to_lampung" if lang == "eng" else "id_to_lampung", body, lang, conf)
            if kind == "to_eng":
                return Route("lampung_to_en", body, lang, conf)
            if kind in ("to_ind", "meaning"):
                if kind == "meaning" and lang == "eng":
                    return Route("en_to_lampung", body, lang, conf)
                return Route("lampung_to_id", body, lang, conf)
        lang, conf = self.language_id.predict(text)
        if lang == "abl" and conf >= self.min_confidence:
            return Route("lampung_to_id", text, lang, conf)
        return Route("general_chat", text, lang, conf)


def route_accuracy(router: Router, cases: Iterable[tuple[str, str]]) -> float:
    cases = list(cases)
    return round(100 * sum(router.route(m).intent == intent for m, intent in cases) / max(len(cases), 1), 2)
