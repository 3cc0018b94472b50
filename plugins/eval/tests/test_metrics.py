"""Text metrics against hand counts and against sacrebleu / rouge-score called directly."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from sigerlm_eval import metrics
from sigerlm_eval.diversity import scores


def test_distinct_and_repetition_by_hand():
    texts = ["a b a b", "a c"]
    # unigrams a b a b a c: 3 distinct of 6; bigrams ab ba ab ac: 3 of 4
    assert metrics.distinct(texts, 1) == pytest.approx(3 / 6)
    assert metrics.distinct(texts, 2) == pytest.approx(3 / 4)
    assert metrics.distinct(["a"], 2) == 0.0
    # 3-grams of "x y z x y z": xyz yzx zxy xyz -> one of four seen before
    assert metrics.repetition_rate("x y z x y z") == pytest.approx(1 / 4)
    assert metrics.repetition_ratio("x x x y") == pytest.approx(1 - 2 / 4)
    assert metrics.repetition_ratio("") == 0.0


def test_self_bleu_equals_sacrebleu_directly():
    texts = ["saya makan nasi di rumah", "saya makan ikan di rumah", "kami pergi ke pasar pagi ini"]
    expected = sum(
        sacrebleu.sentence_bleu(t, [o for j, o in enumerate(texts) if j != i]).score for i, t in enumerate(texts)
    ) / len(texts)
    assert metrics.self_bleu(texts) == pytest.approx(expected)
    assert metrics.self_bleu(["same words here", "same words here"]) == pytest.approx(100.0)
    assert scores([texts])["self_bleu"] == pytest.approx(expected)


def test_bleu_chrf_rouge_equal_the_libraries():
    hyps = ["saya mau makan nasi", "dia pergi ke pasar", "anak itu belajar"]
    refs = ["saya mau makan nasi goreng", "dia pergi ke pasar pagi", "anak itu membaca buku"]
    assert metrics.bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert metrics.chrf(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    assert metrics.chrf(hyps, refs, 0) == pytest.approx(sacrebleu.CHRF().corpus_score(hyps, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    direct = [scorer.score(r, h) for h, r in zip(hyps, refs, strict=True)]
    got = metrics.rouge(hyps, refs)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert got[key] == pytest.approx(100 * sum(d[key].fmeasure for d in direct) / 3)


def test_rouge_keeps_non_ascii_words():
    # rouge-score's default tokenizer drops every non a-z0-9 character: these would score 0 or 100
    assert metrics.rouge(["ṅyak mengan"], ["ṅyak mengan"])["rouge1"] == pytest.approx(100)
    assert metrics.rouge(["ṅyak"], ["ṅyok"])["rouge1"] == 0


def test_generation_checks():
    row = {
        "min_chars": 10,
        "expected_contains": ["def"],
        "expected_not_contains": ["<|user|>"],
        "max_repetition_ratio": 0.5,
    }
    assert metrics.check(row, "def area(w, h): return w * h") == []
    assert metrics.check(row, "short") == ["min_chars", "expected_contains"]
    assert metrics.check(row, "def x <|user|> lagi") == ["expected_not_contains"]
    assert metrics.check(row, "def def def def def def") == ["max_repetition_ratio"]
