"""Text metrics on plain strings (no model): BLEU and chrF through sacrebleu, ROUGE through
rouge-score, distinct-n, repetition, self-BLEU and the harness's generation checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def words(text: str) -> list[str]:
    return text.lower().split()


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str], word_order: int = 2) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)], word_order=word_order).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (x100) over pairs; tokens are split on whitespace and lower-cased, so
    non-English text keeps its letters (rouge-score's default tokenizer drops all but a-z0-9)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_WhitespaceTokenizer())
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references, strict=True):
        for key, score in scorer.score(ref, hyp).items():
            totals[key] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {key: 100 * value / n for key, value in totals.items()}


class _WhitespaceTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return words(text)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all texts (Li et al., 2016); 0 with none."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of a text's word n-grams that already occurred earlier in it."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repetition_ratio(text: str) -> float:
    """The harness's ``max_repetition_ratio`` measure: 1 - distinct words / words (0 when empty)."""
    tokens = words(text)
    return 1 - len(set(tokens)) / len(tokens) if tokens else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Mean sentence BLEU of each text against all the others as references (lower: more diverse)."""
    import sacrebleu

    if len(texts) < 2:
        return 0.0
    scores = [
        sacrebleu.sentence_bleu(text, [other for j, other in enumerate(texts) if j != i]).score
        for i, text in enumerate(texts)
    ]
    return float(sum(scores) / len(scores))


def check(row: dict[str, Any], text: str) -> list[str]:
    """The checks a harness row asks for that ``text`` fails (empty: it passes)."""
    failed = []
    if len(text.strip()) < int(row.get("min_chars", 0) or 0):
        failed.append("min_chars")
    if any(s.lower() not in text.lower() for s in row.get("expected_contains") or []):
        failed.append("expected_contains")
    if any(s.lower() in text.lower() for s in row.get("expected_not_contains") or []):
        failed.append("expected_not_contains")
    limit = row.get("max_repetition_ratio")
    if limit is not None and repetition_ratio(text) > float(limit):
        failed.append("max_repetition_ratio")
    return failed
