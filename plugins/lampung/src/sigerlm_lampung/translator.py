"""The translator: stages tried in order, each answering (translation, stage, confidence).

1. ``exact``: the normalised sentence is a known pair (the most frequent target wins).
2. ``fuzzy``: a known sentence differs only in spelling (same number of words, every word a
   close spelling of its partner: rapidfuzz ratio over the sentence and per word).
3. ``learned``: the phrase-based translator of ``learned.py`` (alignments, phrase table,
   affixes, target language model). Unknown words are copied and listed in ``unknown``.
4. ``model``: when the learned confidence is below ``fallback_below`` and a generator is
   given, a SigerLM model is asked, with the lookup and learned candidates as hints.

Languages are ISO 639-3: ``abl`` (Lampung dialect O / Nyo), ``ind``, ``eng``. Lampung <->
English is direct where the data has Lampung-English pairs (exact lookup, or a learned
translation that knows every word) and pivots through Indonesian otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError
from sigerlm_lampung.data import DictEntry, Pair
from sigerlm_lampung.learned import PhraseModel, confidence
from sigerlm_lampung.lm import MixedLM, NgramLM
from sigerlm_lampung.text import alternatives, first_alternatives, normalize, restore_surface, strip_glosses, tokenize

log = logging.getLogger("sigerlm.lampung")

LANGS = ("abl", "ind", "eng")
ALIASES = {"lo": "abl", "lampung": "abl", "nyo": "abl", "id": "ind", "indonesian": "ind", "en": "eng", "english": "eng"}
MAX_DECODE_WORDS = 40
_SPEAKER = re.compile(r"(?:^|\s)([A-Z][\w'-]*):\s")


def lang_code(value: str) -> str:
    """``abl``/``ind``/``eng`` from a code or an alias (``lo``, ``id``, ``en``...)."""
    code = ALIASES.get(value.strip().lower(), value.strip().lower())
    if code not in LANGS:
        raise SigerError(f"unknown language '{value}': use one of {', '.join(LANGS)} (or lo, id, en)")
    return code


@dataclass
class Result:
    text: str
    stage: str
    confidence: float
    source: str
    direction: str
    unknown: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)

    @property
    def marked(self) -> str:
        """The translation with copied unknown words marked ``*like this*``."""
        unknown = set(self.unknown)
        return " ".join(f"*{w}*" if w.lower() in unknown else w for w in self.text.split())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "marked": self.marked}


# ------------------------------------------------------------------------------ training data
def split_turns(a: str, b: str) -> list[tuple[str, str]]:
    """A dialogue joined into one string, cut at its speaker labels (``Andi: ... Dewi: ...``)
    when both sides have the same speakers in the same order; else the pair itself."""
    sa, sb = _SPEAKER.findall(a), _SPEAKER.findall(b)
    if len(sa) < 2 or sa != sb:
        return [(a, b)]
    pa = [p for p in _SPEAKER.split(a) if p is not None]
    pb = [p for p in _SPEAKER.split(b) if p is not None]
    # split() alternates text, speaker, text...; join each speaker with its words
    ta = [f"{pa[k]}: {pa[k + 1]}" for k in range(1, len(pa) - 1, 2)]
    tb = [f"{pb[k]}: {pb[k + 1]}" for k in range(1, len(pb) - 1, 2)]
    return list(zip(ta, tb, strict=True)) if len(ta) == len(tb) else [(a, b)]


@dataclass
class TrainingData:
    """What the learned stage of one language pair is built from."""

    sentences: list[tuple[list[str], list[str]]] = field(default_factory=list)
    dictionary: list[tuple[str, str, float]] = field(default_factory=list)
    exact: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    exact_back: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def word_entries(pair: Pair, a: str, b: str) -> list[tuple[str, str]]:
    """Word-list rows (one or two words a side, alternatives split) as dictionary entries."""
    raw_a = {"abl": pair.lampung, "ind": pair.indonesian, "eng": pair.english}[a]
    raw_b = {"abl": pair.lampung, "ind": pair.indonesian, "eng": pair.english}[b]
    alts_a, alts_b = alternatives(raw_a), alternatives(raw_b)
    if not alts_a or not alts_b or max(len(x.split()) for x in alts_a + alts_b) > 2:
        return []
    return [(x, y) for x in alts_a[:4] for y in alts_b[:4]]


def collect(
    pairs: Iterable[Pair], a: str, b: str, meizano: Sequence[DictEntry] = (), extra_words: Sequence[Pair] = ()
) -> TrainingData:
    """Sentences, dictionary entries and exact-lookup tables for the pair (a, b)."""
    data = TrainingData()
    for pair in pairs:
        sa, sb = pair.side(a), pair.side(b)
        if not sa or not sb:
            continue
        data.exact[sa][sb] += 1
        data.exact_back[sb][sa] += 1
        entries = word_entries(pair, a, b)
        if entries:
            for x, y in entries:
                data.dictionary.append((x, y, 2.0))
            continue
        if pair.type == "dictionary":  # a headword and its definition: usable when the definition is short
            if len(sb.split()) <= 3 and len(sa.split()) <= 2:
                data.dictionary.append((sa, sb, 1.0))
            continue
        # the raw sides (cut into turns by their speaker labels) read as Pair.lo / .id / .en are:
        # Lampung and Indonesian with their first slash alternative and no glosses; English as
        # written ("he/she" is the templates' English for the one Lampung "yo")
        raw = {
            "abl": first_alternatives(strip_glosses(pair.lampung)),
            "ind": first_alternatives(strip_glosses(pair.indonesian)),
            "eng": pair.english,
        }
        for ta, tb in split_turns(raw[a], raw[b]):
            wa, wb = tokenize(ta), tokenize(tb)
            if wa and wb and len(wa) <= 60 and len(wb) <= 60:
                data.sentences.append((wa, wb))
    for pair in extra_words:
        for x, y in word_entries(pair, a, b):
            data.dictionary.append((x, y, 2.0))
            data.exact[x][y] += 1
            data.exact_back[y][x] += 1
    if meizano and {a, b} == {"abl", "ind"}:
        by_ind: dict[str, list[DictEntry]] = defaultdict(list)
        for entry in meizano:
            by_ind[entry.indonesian].append(entry)
        for ind, entries in by_ind.items():
            o_forms = [e for e in entries if e.dialect != "api"]
            for e in o_forms or entries:
                weight = {"nyo": 1.0, "": 0.5}.get(e.dialect, 0.15)
                x, y = (e.lampung, ind) if a == "abl" else (ind, e.lampung)
                data.dictionary.append((x, y, weight))
    return data


# ------------------------------------------------------------------------------ the system
@dataclass
class PairSystem:
    """Lookup tables and learned phrase models of one language pair, both directions."""

    a: str
    b: str
    exact: dict[str, dict[str, Counter[str]]]  # by direction "a-b"
    models: dict[str, PhraseModel]

    @classmethod
    def build(cls, data: TrainingData, a: str, b: str, max_phrase: int = 4, iterations: int = 5) -> PairSystem:
        counts, forward, backward = PhraseModel.count_phrases(data.sentences, data.dictionary, max_phrase, iterations)
        models = {
            f"{a}-{b}": PhraseModel.from_counts(a, b, counts, forward.table(), max_phrase=max_phrase),
            f"{b}-{a}": PhraseModel.from_counts(b, a, counts, backward.table(), reverse=True, max_phrase=max_phrase),
        }
        return cls(a, b, {f"{a}-{b}": dict(data.exact), f"{b}-{a}": dict(data.exact_back)}, models)


class Translator:
    """All stages for every direction between ``abl``, ``ind`` and ``eng``.

    ``extend`` (optional) builds the English systems on first use: ``extend() -> (systems,
    language models)``, so Lampung <-> Indonesian work never pays for them.
    """

    def __init__(
        self,
        systems: dict[tuple[str, str], PairSystem],
        lms: dict[str, Any],
        generate: Callable[[str], str] | None = None,
        fallback_below: float = 0.5,
        fuzzy_cutoff: float = 88.0,
        extend: Callable[[], tuple[dict, dict]] | None = None,
    ):
        self.systems, self.lms = dict(systems), dict(lms)
        self.generate = generate
        self.fallback_below = fallback_below
        self.fuzzy_cutoff = fuzzy_cutoff
        self.extend = extend
        self._fuzzy_keys: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        data_dir: str | Path | None = None,
        train: Sequence[Pair] | None = None,
        meizano: Sequence[DictEntry] | None = None,
        meizano_path: str | Path | None = None,
        english: bool | str = True,
        general_lms: dict[str, NgramLM] | None = None,
        generate: Callable[[str], str] | None = None,
        fallback_below: float = 0.5,
        iterations: int = 5,
    ) -> Translator:
        """Build from the data folder: ``train`` pairs (default: train + valid splits), the
        dictionaries, and for English the Indonesian-English parallel file. ``english``:
        True builds the English systems now, ``"lazy"`` on first use, False never."""
        from sigerlm_lampung import data as d

        if train is None:
            train = d.dedup(d.load_split("train", data_dir) + d.load_split("valid", data_dir))
        if general_lms is None:
            general_lms = general_language_models(data_dir, english=english is True)
        systems, lms = build_lampung_parts(data_dir, train, meizano, meizano_path, general_lms, iterations)

        @functools.cache  # translators made from this one's tables share the English systems too
        def extend() -> tuple[dict, dict]:
            general = (
                general_lms
                if "eng" in general_lms
                else {**general_lms, **general_language_models(data_dir, only=("eng",))}
            )
            return build_english_parts(data_dir, train, general, iterations)

        translator = cls(systems, lms, generate, fallback_below, extend=extend if english else None)
        if english is True:
            translator.ensure_english()
        return translator

    def ensure_english(self) -> None:
        with self._lock:
            if ("ind", "eng") not in self.systems and self.extend is not None:
                systems, lms = self.extend()
                self.systems.update(systems)
                self.lms.update(lms)

    # ------------------------------------------------------------------ stages
    def _system(self, src: str, tgt: str) -> tuple[PairSystem, str]:
        if "eng" in (src, tgt):
            self.ensure_english()
        for (a, b), system in self.systems.items():
            if (a, b) in ((src, tgt), (tgt, src)):
                return system, f"{src}-{tgt}"
        raise SigerError(f"no translation data for {src} -> {tgt}")

    def exact(self, norm: str, src: str, tgt: str) -> Result | None:
        system, direction = self._system(src, tgt)
        targets = system.exact[direction].get(norm)
        if not targets:
            return None
        (best, count), total = targets.most_common(1)[0], sum(targets.values())
        return Result(
            best,
            "exact",
            round(0.9 + 0.1 * count / total, 4),
            norm,
            direction,
            candidates=[t for t, _ in targets.most_common(3)],
        )

    def fuzzy(self, norm: str, src: str, tgt: str) -> Result | None:
        from rapidfuzz import fuzz, process

        system, direction = self._system(src, tgt)
        keys = self._fuzzy_keys.get(direction)
        if keys is None:
            keys = self._fuzzy_keys[direction] = [k for k in system.exact[direction] if len(k) >= 8]
        words = norm.split()
        for key, score, _ in process.extract(norm, keys, scorer=fuzz.ratio, limit=5, score_cutoff=self.fuzzy_cutoff):
            other = key.split()
            if len(other) != len(words):
                continue
            # a near miss differs only where the input has a word the tables do not know (a
            # misspelling), never by swapping one known word for another (kamu / kami)
            known = system.models[direction].table
            if all(
                a == b or (a not in known and min(len(a), len(b)) >= 3 and fuzz.ratio(a, b) >= 75)
                for a, b in zip(words, other, strict=True)
            ):
                found = self.exact(key, src, tgt)
                if found is not None:
                    return Result(
                        found.text, "fuzzy", round(0.85 * score / 100, 4), norm, direction, candidates=found.candidates
                    )
        return None

    def learned(self, norm: str, src: str, tgt: str, nbest: int = 3) -> Result:
        system, direction = self._system(src, tgt)
        words = norm.split()
        if len(words) > MAX_DECODE_WORDS:  # a long unpunctuated text: decode it in windows
            parts = [
                self.learned(" ".join(words[k : k + MAX_DECODE_WORDS]), src, tgt, nbest=1)
                for k in range(0, len(words), MAX_DECODE_WORDS)
            ]
            return combine([(p.source, p) for p in parts], norm, direction)
        decoded = system.models[direction].translate(words, self.lms[tgt], nbest=nbest)
        best = decoded[0]
        return Result(
            " ".join(best.words),
            "learned",
            confidence(best, len(words)),
            norm,
            direction,
            unknown=best.unknown,
            candidates=[" ".join(d.words) for d in decoded],
        )

    def lookup_or_learned(self, norm: str, src: str, tgt: str) -> Result:
        return self.exact(norm, src, tgt) or self.fuzzy(norm, src, tgt) or self.learned(norm, src, tgt)

    def _english(self, norm: str, src: str, tgt: str) -> Result:
        """Lampung <-> English: direct where the pairs know the sentence or every word, else via Indonesian."""
        direct = self.lookup_or_learned(norm, src, tgt)
        if direct.stage != "learned" or (not direct.unknown and direct.confidence >= 0.6):
            return direct
        first = self.lookup_or_learned(norm, src, "ind")
        second = self.lookup_or_learned(first.text, "ind", tgt)
        pivot = Result(
            second.text,
            f"pivot:{first.stage}+{second.stage}",
            round(first.confidence * second.confidence, 4),
            norm,
            f"{src}-{tgt}",
            unknown=sorted(set(first.unknown) | set(second.unknown)),
            candidates=[second.text, direct.text],
        )
        return pivot if pivot.confidence >= direct.confidence else direct

    def _one(self, norm: str, src: str, tgt: str) -> Result:
        if "eng" in (src, tgt) and "abl" in (src, tgt):
            return self._english(norm, src, tgt)
        return self.lookup_or_learned(norm, src, tgt)

    def translate(self, text: str, src: str, tgt: str, allow_model: bool = True) -> Result:
        """Translate one text; ``src``/``tgt`` are language codes or aliases.

        A text of several sentences (or dialogue turns) that is not known as a whole is
        translated a sentence at a time, each keeping its capital and final punctuation."""
        src, tgt = lang_code(src), lang_code(tgt)
        if src == tgt:
            raise SigerError(f"source and target language are both {src}")
        if not isinstance(text, str):
            raise SigerError(f"text to translate must be a string, not {type(text).__name__}")
        norm = normalize(text)
        if not norm:
            return Result("", "empty", 0.0, text, f"{src}-{tgt}")
        segments = [seg for seg in split_sentences(text) if normalize(seg)]
        result = self._one(norm, src, tgt)
        if len(segments) > 1 and result.stage not in ("exact", "fuzzy"):
            parts = [(seg, self._one(normalize(seg), src, tgt)) for seg in segments]
            result = combine(parts, norm, f"{src}-{tgt}")
        else:
            result.text = restore_surface(text, result.text)
        if result.confidence < self.fallback_below and self.generate is not None and allow_model:
            result = self.model_fallback(text, src, tgt, result)
            result.text = restore_surface(text, result.text)
        result.source = text
        return result

    def translate_batch(self, texts: Sequence[str], src: str, tgt: str, allow_model: bool = True) -> list[Result]:
        return [self.translate(t, src, tgt, allow_model) for t in texts]

    def model_fallback(self, text: str, src: str, tgt: str, hint: Result) -> Result:
        prompt = fallback_prompt(text, src, tgt, hint)
        try:
            answer = (self.generate(prompt) or "").strip().splitlines()
        except Exception as exc:
            log.warning("model fallback failed (%s); keeping the %s answer", exc, hint.stage)
            return hint
        answer_text = normalize(answer[0]) if answer else ""
        if not answer_text or answer_text == normalize(text):
            return hint  # nothing, or the source copied back: not a translation
        return Result(
            answer_text,
            "model",
            round(max(0.3, hint.confidence), 4),
            hint.source,
            hint.direction,
            unknown=hint.unknown,
            candidates=[hint.text] + hint.candidates,
        )

    # ------------------------------------------------------------------ gloss
    def gloss(self, text: str, src: str = "abl", tgt: str = "ind") -> list[dict[str, Any]]:
        """Word-by-word gloss: each word's readings with where they come from (the ``/reason`` view).

        A phrase-table reading carries ``p`` = p(translation | word) and ``alignment`` = the
        word-alignment probability t(translation | word) learned by EM (0 for phrases)."""
        src, tgt = lang_code(src), lang_code(tgt)
        system, direction = self._system(src, tgt)
        model = system.models[direction]
        out = []
        for word in tokenize(text):
            readings = []
            for t, lp, _ in model.table.get(word, [])[:3]:
                readings.append(
                    {
                        "translation": t,
                        "p": round(math.exp(lp), 3),
                        "from": "phrase table",
                        "alignment": round(model.lexicon.get(word, {}).get(t, 0.0), 3),
                    }
                )
            if not readings:
                for opt in model.word_options(word)[:3]:
                    readings.append(
                        {
                            "translation": " ".join(opt.target),
                            "p": round(opt.prob, 3),
                            "from": f"{opt.kind} ({opt.note})",
                        }
                    )
            exact = system.exact[direction].get(word)
            if exact and not readings:
                readings.append({"translation": exact.most_common(1)[0][0], "p": 1.0, "from": "lookup"})
            out.append(
                {"word": word, "readings": readings or [{"translation": word, "p": 0.0, "from": "unknown (copied)"}]}
            )
        return out


def build_lampung_parts(
    data_dir: str | Path | None,
    train: Sequence[Pair],
    meizano: Sequence[DictEntry] | None,
    meizano_path: str | Path | None,
    general_lms: dict[str, NgramLM],
    iterations: int = 5,
) -> tuple[dict[tuple[str, str], PairSystem], dict[str, Any]]:
    """The Lampung <-> Indonesian system and the two languages' models."""
    from sigerlm_lampung import data as d

    if meizano is None:
        meizano = d.load_meizano(data_dir, meizano_path)
    words = d.load_word_pairs(data_dir)
    systems = {
        ("abl", "ind"): PairSystem.build(
            collect(train, "abl", "ind", meizano, words), "abl", "ind", iterations=iterations
        )
    }
    lms = {
        "abl": NgramLM.fit([p.lo for p in train if p.type != "dictionary"] + words_side(words, "abl")),
        "ind": _mix(NgramLM.fit([p.id for p in train if p.type != "dictionary"]), general_lms.get("ind")),
    }
    return systems, lms


def build_english_parts(
    data_dir: str | Path | None, train: Sequence[Pair], general_lms: dict[str, NgramLM], iterations: int = 5
) -> tuple[dict[tuple[str, str], PairSystem], dict[str, Any]]:
    """Lampung <-> English from the pairs with English, Indonesian <-> English from those and the
    Indonesian-English parallel file, and the English language model."""
    from sigerlm_lampung import data as d

    with_en = [p for p in train if p.en]
    parallel = d.load_parallel_ind_eng(data_dir)
    systems = {("abl", "eng"): PairSystem.build(collect(with_en, "abl", "eng"), "abl", "eng", iterations=iterations)}
    ind_eng = collect(with_en, "ind", "eng")
    ind_eng.sentences += [(i.split(), e.split()) for i, e in parallel]
    for i, e in parallel:
        ind_eng.exact[i][e] += 1
        ind_eng.exact_back[e][i] += 1
    systems[("ind", "eng")] = PairSystem.build(ind_eng, "ind", "eng", iterations=iterations)
    lms = {"eng": _mix(NgramLM.fit([p.en for p in with_en] + [e for _, e in parallel]), general_lms.get("eng"))}
    return systems, lms


_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences and speaker labels of a text: cut after ``. ! ? : ;`` and at line breaks."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def combine(parts: Sequence[tuple[str, Result]], norm: str, direction: str) -> Result:
    """One result from the translations of a text's sentences: the texts joined, the weakest
    stage named, the confidence weighted by sentence length."""
    order = ["exact", "fuzzy", "learned"]
    stages = [r.stage for _, r in parts]
    stage = max(stages, key=lambda st: order.index(st) if st in order else len(order))
    sizes = [max(len(normalize(seg).split()), 1) for seg, _ in parts]
    confidence = sum(r.confidence * n for (_, r), n in zip(parts, sizes, strict=True)) / sum(sizes)
    unknown = list(dict.fromkeys(w for _, r in parts for w in r.unknown))
    text = " ".join(restore_surface(seg, r.text) for seg, r in parts if r.text)
    return Result(
        text,
        stage,
        round(confidence, 4),
        norm,
        direction,
        unknown=unknown,
        candidates=[" ".join(r.text for _, r in parts)],
    )


def words_side(pairs: Sequence[Pair], lang: str) -> list[str]:
    return [p.side(lang) for p in pairs if p.side(lang)]


def _mix(in_domain: NgramLM, general: NgramLM | None) -> Any:
    return in_domain if general is None else MixedLM([in_domain, general], [0.7, 0.3])


def general_language_models(
    data_dir: str | Path | None = None,
    english: bool = True,
    max_sentences: int = 20000,
    only: Sequence[str] | None = None,
) -> dict[str, NgramLM]:
    """Trigram models of the general Indonesian (and English) corpus, when the data has one."""
    from sigerlm_lampung.data import load_monolingual

    out = {}
    for lang in only or (("ind", "eng") if english else ("ind",)):
        sentences = load_monolingual(data_dir, lang, max_sentences)
        if sentences:
            out[lang] = NgramLM.fit(sentences)
    return out


def fallback_prompt(text: str, src: str, tgt: str, hint: Result) -> str:
    """The model's instruction, in the format of the original instruction data, with hints."""
    names = {"abl": "Lampung O", "ind": "Bahasa Indonesia", "eng": "English"}
    if tgt == "eng" or src == "eng":
        instruction = f"Translate {names[src]} to {names[tgt]}"
    else:
        instruction = f"Terjemahkan {names[src]} ke {names[tgt]}"
    hints = [c for c in dict.fromkeys([hint.text] + hint.candidates) if c]
    lines = [f"{instruction}: {text}"]
    if hints:
        lines.append("Petunjuk (kandidat): " + " | ".join(hints[:3]))
    if hint.unknown:
        lines.append("Kata tidak dikenal: " + ", ".join(hint.unknown))
    return "\n".join(lines)


def format_gloss(rows: list[dict]) -> str:
    """``Translator.gloss`` rows as text, a line a word (``siger lampung gloss``, the chat's reasoning)."""
    lines = []
    for row in rows:
        readings = "; ".join(
            f"{r['translation']} ({r['from']}, p={r['p']}"
            + (f", t={r['alignment']}" if r.get("alignment") else "")
            + ")"
            for r in row["readings"]
        )
        lines.append(f"{row['word']}: {readings}")
    return "\n".join(lines)
