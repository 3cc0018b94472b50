"""A small word n-gram language model: interpolated Kneser-Ney (absolute discount 0.75).

``NgramLM.fit(sentences, order=3)`` counts n-grams of normalised sentences (with ``<s>`` and
``</s>``); ``logprob(history, word)`` is the natural-log probability of ``word`` after the
last ``order - 1`` words of ``history``. Unseen words get the unigram floor ``1 / (V + 1)``
scaled down, so copied unknown words cost something but do not stop a hypothesis.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

BOS, EOS = "<s>", "</s>"
DISCOUNT = 0.75


class _SentenceScore:
    def logprob(self, history: Sequence[str], word: str) -> float:
        raise NotImplementedError

    def score(self, words: Sequence[str]) -> float:
        """Log-probability of a whole sentence, ``</s>`` included."""
        total, history = 0.0, []
        for w in list(words) + [EOS]:
            total += self.logprob(history, w)
            history.append(w)
        return total


class NgramLM(_SentenceScore):
    def __init__(self, order: int = 3):
        self.order = order
        self.counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    @classmethod
    def fit(cls, sentences: Iterable[str | Sequence[str]], order: int = 3, weight: int = 1) -> NgramLM:
        lm = cls(order)
        lm.add(sentences, weight)
        lm.finish()
        return lm

    def add(self, sentences: Iterable[str | Sequence[str]], weight: int = 1) -> None:
        top = self.counts[self.order]
        for sentence in sentences:
            words = sentence.split() if isinstance(sentence, str) else list(sentence)
            padded = [BOS] * (self.order - 1) + words + [EOS]
            for k in range(self.order - 1, len(padded)):
                top[tuple(padded[k - self.order + 1 : k + 1])] += weight

    def finish(self) -> None:
        """Derive the lower orders' continuation counts and the normalisers."""
        n = self.order
        for k in range(n - 1, 0, -1):  # continuation counts: distinct left contexts
            lower: Counter[tuple[str, ...]] = Counter()
            for gram in self.counts[k + 1]:
                lower[gram[1:]] += 1
            self.counts[k] = lower
        self.context_total: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(n + 1)]
        self.context_types: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(n + 1)]
        for k in range(1, n + 1):
            for gram, c in self.counts[k].items():
                self.context_total[k][gram[:-1]] += c
                self.context_types[k][gram[:-1]] += 1
        self.vocab = {g[0] for g in self.counts[1]}
        self._cache.clear()

    def _prob(self, context: tuple[str, ...], word: str) -> float:
        k = len(context) + 1
        if k == 1:
            total = self.context_total[1][()]
            types = self.context_types[1][()]
            c = self.counts[1].get((word,), 0)
            uniform = 1.0 / (len(self.vocab) + 1)
            return max(c - DISCOUNT, 0) / total + DISCOUNT * types / total * uniform if total else uniform
        lower = self._prob(context[1:], word)
        total = self.context_total[k].get(context, 0)
        if not total:
            return lower
        c = self.counts[k].get(context + (word,), 0)
        return (max(c - DISCOUNT, 0) + DISCOUNT * self.context_types[k][context] * lower) / total

    def logprob(self, history: Sequence[str], word: str) -> float:
        context = tuple(([BOS] * (self.order - 1) + list(history))[-(self.order - 1) :]) if self.order > 1 else ()
        key = (context, word)
        value = self._cache.get(key)
        if value is None:
            p = self._prob(context, word)
            if word not in self.vocab and word != EOS:
                p *= 0.1  # an unknown (copied) word
            value = math.log(p)
            if len(self._cache) < 2_000_000:
                self._cache[key] = value
        return value


class MixedLM(_SentenceScore):
    """Linear interpolation of language models: ``p = sum(w_k p_k)``."""

    def __init__(self, models: Sequence[NgramLM], weights: Sequence[float]):
        self.models, self.weights = list(models), list(weights)
        self.order = max(m.order for m in self.models)
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    def logprob(self, history: Sequence[str], word: str) -> float:
        key = (tuple(history[-(self.order - 1) :]), word)
        value = self._cache.get(key)
        if value is None:
            mixed = zip(self.models, self.weights, strict=True)
            value = math.log(sum(w * math.exp(m.logprob(history, word)) for m, w in mixed))
            if len(self._cache) < 2_000_000:
                self._cache[key] = value
        return value
