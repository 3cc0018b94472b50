"""The learned translator: a phrase table from aligned pairs and dictionaries, decoded with a
target-side n-gram language model.

Building (``PhraseModel.build``) for a language pair (a, b):
1. sentence pairs are aligned in both directions (``align.train_lexical``: IBM Model 1, then a
   diagonal prior), the Viterbi links joined with grow-diag-final-and, and every phrase pair
   consistent with the joined alignment (up to ``max_phrase`` words a side) counted;
2. dictionary word pairs are counted as phrase pairs too (each with weight ``dict_weight``),
   and help the alignment as short training pairs;
3. ``p(b | a)`` and ``p(a | b)`` are relative frequencies of the counts; the lexical tables
   ``t(b | a)`` and ``t(a | b)`` are kept for the gloss.

Decoding (``PhraseModel.translate``) is a beam search over source coverage (a stack decoder)
with a distortion limit (``max_jump``; 0 is monotone), scoring each hypothesis by
``w_tm log p(e|f) + w_inv log p(f|e) + w_lm log LM(e) + w_wp |e| + w_d |jump| + w_unk unknowns``
with a future-cost estimate of the uncovered spans. Source words without a table entry are
tried, in order, through their affixes and clitics (``morph``), a close spelling of a known
word (rapidfuzz), and otherwise copied and marked unknown.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sigerlm_lampung import morph
from sigerlm_lampung.align import extract_phrases, symmetrize, train_lexical
from sigerlm_lampung.lm import EOS

WEIGHTS = {"tm": 1.0, "inv": 0.4, "lm": 0.8, "wp": 0.3, "distortion": -1.5, "unk": -4.0, "morph": -1.0, "fuzzy": -1.5}


@dataclass
class Option:
    """One way to translate a source span."""

    target: tuple[str, ...]
    score: float  # translation-model part of the score (no LM)
    kind: str  # "phrase", "morph", "fuzzy", "unknown"
    prob: float  # p(e | f) of the entry (for confidence)
    note: str = ""


@dataclass
class Decoded:
    words: list[str]
    score: float
    spans: list[tuple[int, int, Option]]  # (start, end, option) in target order

    @property
    def unknown(self) -> list[str]:
        return [" ".join(o.target) for _, _, o in self.spans if o.kind == "unknown"]


@dataclass
class PhraseModel:
    src: str
    tgt: str
    table: dict[str, list[tuple[str, float, float]]]  # src phrase -> [(tgt phrase, log p(t|s), log p(s|t))]
    lexicon: dict[str, dict[str, float]]  # t(tgt word | src word)
    max_phrase: int = 4
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    max_jump: int = 2  # distortion limit of the decoder (0: monotone)
    _vocab: list[str] | None = None

    # -------------------------------------------------------------------- building
    @staticmethod
    def count_phrases(
        sentences: Sequence[tuple[Sequence[str], Sequence[str]]],
        dictionary: Sequence[tuple[str, str, float]] = (),
        max_phrase: int = 4,
        iterations: int = 5,
    ) -> tuple[Counter[tuple[str, str]], Any, Any]:
        """Phrase-pair counts (a -> b) from aligned sentences plus weighted dictionary pairs;
        also the two lexical models."""
        training = [(list(a), list(b)) for a, b in sentences if a and b]
        weights = [1.0] * len(training)
        for a, b, w in dictionary:
            training.append((a.split(), b.split()))
            weights.append(w)
        forward = train_lexical(training, iterations, iterations, weights=weights)
        backward = train_lexical([(b, a) for a, b in training], iterations, iterations, weights=weights)
        counts: Counter[tuple[str, str]] = Counter()
        n_sent = sum(1 for a, b in sentences if a and b)
        for k, (a, b) in enumerate(training[:n_sent]):
            links = symmetrize(forward.links[k], [(i, j) for j, i in backward.links[k]], len(a), len(b))
            for pa, pb in extract_phrases(a, b, links, max_phrase):
                counts[(pa, pb)] += 1
        for a, b, w in dictionary:
            counts[(a, b)] += w
        return counts, forward, backward

    @classmethod
    def from_counts(
        cls,
        src: str,
        tgt: str,
        counts: Counter[tuple[str, str]],
        lexicon: dict[str, dict[str, float]],
        reverse: bool = False,
        max_phrase: int = 4,
        top: int = 12,
    ) -> PhraseModel:
        """The table of one direction; ``reverse`` reads the counts as (b, a)."""
        pairs = {((b, a) if reverse else (a, b)): c for (a, b), c in counts.items()}
        src_total: Counter[str] = Counter()
        tgt_total: Counter[str] = Counter()
        for (s, t), c in pairs.items():
            src_total[s] += c
            tgt_total[t] += c
        table: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for (s, t), c in pairs.items():
            # absolute discounting keeps one-off phrases from looking certain
            p_ts = max(c - 0.3, 0.05) / src_total[s]
            p_st = max(c - 0.3, 0.05) / tgt_total[t]
            table[s].append((t, math.log(p_ts), math.log(p_st)))
        for s in table:
            table[s] = sorted(table[s], key=lambda x: -(x[1] + 0.4 * x[2]))[:top]
        return cls(src, tgt, dict(table), lexicon, max_phrase)

    # -------------------------------------------------------------------- options
    def vocab(self) -> list[str]:
        if self._vocab is None:
            self._vocab = sorted(s for s in self.table if " " not in s)
        return self._vocab

    def word_options(self, word: str) -> list[Option]:
        """Options for a single source word the table does not know."""
        w = self.weights
        out: list[Option] = []
        for a in morph.analyses(word, self.src):
            entries = self.table.get(a.stem)
            if not entries:
                continue
            for t, lp, lpi in entries[:3]:
                if " " in t:
                    continue
                realized = morph.realize(t, a.tags, self.tgt)
                score = w["tm"] * lp + w["inv"] * lpi + w["morph"] * a.depth
                note = f"{a.stem}+{'/'.join(x for x in a.tags if x)}"
                out.append(Option(tuple(realized.split()), score, "morph", math.exp(lp) * 0.8, note))
                # the bare stem (with the clitic, which carries meaning): Lampung often drops
                # derivational affixes where Indonesian has them (belei = membeli)
                bare = morph.realize(t, ("", "", a.clitic), self.tgt)
                if bare != realized:
                    out.append(
                        Option(
                            tuple(bare.split()),
                            score + w["morph"],
                            "morph",
                            math.exp(lp) * 0.6,
                            f"{a.stem} (affixes dropped)",
                        )
                    )
            if out:
                return out
        if len(word) >= 4:
            from rapidfuzz import fuzz, process

            for match, similarity, _ in process.extract(
                word, self.vocab(), scorer=fuzz.ratio, limit=3, score_cutoff=80
            ):
                for t, lp, lpi in self.table[match][:2]:
                    sim = similarity / 100
                    out.append(
                        Option(
                            tuple(t.split()),
                            w["tm"] * lp + w["inv"] * lpi + w["fuzzy"] * (1 - sim) * 5,
                            "fuzzy",
                            math.exp(lp) * sim * 0.8,
                            f"~{match}",
                        )
                    )
        return out

    def span_options(self, words: Sequence[str]) -> dict[tuple[int, int], list[Option]]:
        w = self.weights
        n = len(words)
        options: dict[tuple[int, int], list[Option]] = {}
        for i in range(n):
            for j in range(i + 1, min(n, i + self.max_phrase) + 1):
                entries = self.table.get(" ".join(words[i:j]))
                if entries:
                    options[(i, j)] = [
                        Option(tuple(t.split()), w["tm"] * lp + w["inv"] * lpi, "phrase", math.exp(lp))
                        for t, lp, lpi in entries
                    ]
            if (i, i + 1) not in options and any(c.isdigit() for c in words[i]):
                options[(i, i + 1)] = [Option((words[i],), 0.0, "number", 1.0)]  # numbers pass through
            if (i, i + 1) not in options:
                extra = self.word_options(words[i])
                # copying is always possible: names, numbers, loan words
                extra.append(Option((words[i],), w["unk"], "unknown", 0.0))
                options[(i, i + 1)] = extra
        return options

    # -------------------------------------------------------------------- decoding
    def translate(
        self, words: Sequence[str], lm: Any, beam: int = 24, max_jump: int | None = None, nbest: int = 1
    ) -> list[Decoded]:
        """Beam search; returns the ``nbest`` best complete hypotheses."""
        max_jump = self.max_jump if max_jump is None else max_jump
        n = len(words)
        if n == 0:
            return [Decoded([], 0.0, [])]
        w = self.weights
        options = self.span_options(words)
        # future cost: best TM + LM-unigram-free estimate of each span
        best_span = {span: max(o.score for o in opts) for span, opts in options.items()}
        future = [[0.0] * (n + 1) for _ in range(n + 1)]
        for length in range(1, n + 1):
            for i in range(n - length + 1):
                j = i + length
                value = best_span.get((i, j), -1e9)
                for k in range(i + 1, j):
                    value = max(value, future[i][k] + future[k][j])
                future[i][j] = value

        def future_cost(covered: int) -> float:
            total, i = 0.0, 0
            while i < n:
                if covered >> i & 1:
                    i += 1
                    continue
                j = i
                while j < n and not covered >> j & 1:
                    j += 1
                total += future[i][j]
                i = j
            return total

        by_start: list[list[tuple[tuple[int, int], list[Option]]]] = [[] for _ in range(n)]
        for span, opts in options.items():
            by_start[span[0]].append((span, opts))
        # hypothesis: (score, covered bitmask, last source end, target words, spans)
        stacks: list[dict[tuple[int, int, tuple[str, ...]], tuple[float, list[str], list]]] = [{} for _ in range(n + 1)]
        stacks[0][(0, 0, ())] = (0.0, [], [])
        full = (1 << n) - 1
        finals: list[Decoded] = []
        for size in range(n + 1):
            ranked = sorted(stacks[size].items(), key=lambda kv: -(kv[1][0] + future_cost(kv[0][0])))[:beam]
            for (covered, last, _), (score, target, spans) in ranked:
                if covered == full:
                    final = score + w["lm"] * lm.logprob(target, EOS)
                    finals.append(Decoded(list(target), final, spans))
                    continue
                first_free = next(i for i in range(n) if not covered >> i & 1)
                starts = range(first_free, min(n, first_free + max_jump + 1))
                for (i, j), opts in (span for start in starts for span in by_start[start]):
                    if abs(i - last) > max_jump:
                        continue
                    mask = ((1 << (j - i)) - 1) << i
                    if covered & mask:
                        continue
                    new_covered = covered | mask
                    if new_covered != full:
                        # no dead ends: the first gap left behind must stay within reach
                        gap = next(g for g in range(n) if not new_covered >> g & 1)
                        if abs(gap - j) > max_jump:
                            continue
                    for opt in opts:
                        new_target = list(target)
                        lm_score = 0.0
                        for word in opt.target:
                            lm_score += lm.logprob(new_target, word)
                            new_target.append(word)
                        new_score = (
                            score
                            + opt.score
                            + w["lm"] * lm_score
                            + w["wp"] * len(opt.target)
                            + w["distortion"] * abs(i - last)
                        )
                        key = (new_covered, j, tuple(new_target[-2:]))
                        stack = stacks[new_covered.bit_count()]
                        if key not in stack or stack[key][0] < new_score:
                            stack[key] = (new_score, new_target, spans + [(i, j, opt)])
        if not finals and max_jump > 0:  # cannot happen with the reach check; monotone never dead-ends
            return self.translate(words, lm, beam, 0, nbest)
        finals.sort(key=lambda d: -d.score)
        return finals[:nbest]


def confidence(decoded: Decoded, n_source: int) -> float:
    """How sure the learned stage is: the share of source words covered by the tables (affix
    and spelling readings count part), times the mean probability of the entries used."""
    if n_source == 0:
        return 0.0
    covered = 0.0
    probs = []
    for i, j, opt in decoded.spans:
        share = {"phrase": 1.0, "number": 1.0, "morph": 0.7, "fuzzy": 0.6, "unknown": 0.0}[opt.kind]
        covered += share * (j - i)
        if opt.kind != "unknown":
            probs.append(opt.prob)
    mean = sum(probs) / len(probs) if probs else 0.0
    return round(covered / n_source * (0.55 + 0.45 * mean), 4)
