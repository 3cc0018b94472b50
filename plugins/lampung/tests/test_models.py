"""The learned parts on toy data: alignment EM, phrase extraction, the language model, affixes."""

import math

import pytest

from sigerlm_lampung import morph
from sigerlm_lampung.align import extract_phrases, symmetrize, train_lexical
from sigerlm_lampung.learned import PhraseModel
from sigerlm_lampung.lm import EOS, MixedLM, NgramLM

PAIRS = [
    ("nyak mengan", "saya makan"),
    ("nikeu mengan", "kamu makan"),
    ("nyak mengan punyeu", "saya makan ikan"),
    ("nikeu mengan nasi", "kamu makan nasi"),
    ("yo mengan punyeu", "dia makan ikan"),
    ("yo mak mengan", "dia tidak makan"),
    ("sanak ino", "anak itu"),
    ("sanak ino mak mengan", "anak itu tidak makan"),
    ("punyeu ino", "ikan itu"),
]


def split(pairs):
    return [(a.split(), b.split()) for a, b in pairs]


def test_em_learns_the_word_translations():
    model = train_lexical(split(PAIRS), 5, 5)
    table = model.table()
    for lo, ind in [
        ("nyak", "saya"),
        ("nikeu", "kamu"),
        ("mengan", "makan"),
        ("punyeu", "ikan"),
        ("mak", "tidak"),
        ("sanak", "anak"),
        ("ino", "itu"),
        ("yo", "dia"),
    ]:
        assert max(table[lo], key=table[lo].get) == ind, lo
    # t(. | f) is a distribution for every source word
    for row in model.table(min_prob=0.0).values():
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-6)
    # the Viterbi links of "nyak mengan punyeu" / "saya makan ikan" are the diagonal
    assert sorted(model.links[2]) == [(0, 0), (1, 1), (2, 2)]
    assert model.viterbi(["yo", "mak", "mengan"], ["dia", "tidak", "makan"]) == [(0, 0), (1, 1), (2, 2)]


def test_weights_scale_a_pair():
    light = train_lexical(split(PAIRS) + [(["ino"], ["ini"])], 5, 0, weights=[1.0] * len(PAIRS) + [0.01])
    heavy = train_lexical(split(PAIRS) + [(["ino"], ["ini"])], 5, 0, weights=[1.0] * len(PAIRS) + [50.0])
    assert light.prob("ino", "itu") > light.prob("ino", "ini")
    assert heavy.prob("ino", "ini") > heavy.prob("ino", "itu")


def test_symmetrize_and_phrase_extraction():
    forward = [(0, 0), (1, 1), (2, 2)]
    backward = [(0, 0), (1, 1), (1, 2)]
    joined = symmetrize(forward, backward, 3, 3)
    assert {(0, 0), (1, 1), (2, 2)} <= joined
    phrases = set(extract_phrases(["a", "b", "c"], ["x", "y", "z"], {(0, 0), (1, 1), (2, 2)}, max_len=2))
    assert {("a", "x"), ("b", "y"), ("a b", "x y"), ("b c", "y z")} <= phrases
    assert ("a b c", "x y z") not in phrases  # longer than max_len
    # crossing links: b-z and c-y; (b, y) is not consistent, (b c, y z) is
    crossed = set(extract_phrases(["a", "b", "c"], ["x", "y", "z"], {(0, 0), (1, 2), (2, 1)}, max_len=3))
    assert ("b c", "y z") in crossed and ("b", "y") not in crossed and ("b", "z") in crossed
    # an unaligned target word may join a phrase at its edge
    loose = set(extract_phrases(["a"], ["x", "the"], {(0, 0)}, max_len=2))
    assert loose == {("a", "x"), ("a", "x the")}


def test_language_model_is_a_distribution_and_prefers_seen_orders():
    lm = NgramLM.fit(["saya mau makan ikan", "kamu mau makan nasi", "dia tidak makan", "anak itu tidak makan"])
    for history in ([], ["saya"], ["saya", "mau"], ["zzz", "yyy"]):
        total = sum(math.exp(lm.logprob(history, w)) for w in lm.vocab | {EOS} if w != "<s>")
        assert 0.95 < total <= 1 + 1e-9  # what is missing is kept for words never seen
    assert lm.score(["saya", "mau", "makan", "ikan"]) > lm.score(["ikan", "makan", "mau", "saya"])
    assert lm.logprob(["saya"], "qwerty") < lm.logprob(["saya"], "nasi")  # unknown words cost more
    mixed = MixedLM([lm, NgramLM.fit(["the cat sat"])], [0.5, 0.5])
    assert mixed.score(["saya", "mau", "makan"]) > mixed.score(["makan", "mau", "saya"])


def test_affixes_are_taken_off_and_put_back():
    readings = {(a.stem, a.tags) for a in morph.analyses("membeli", "ind")}
    assert ("beli", ("N", "", "")) in readings
    assert ("pukul", ("N", "", "")) in {(a.stem, a.tags) for a in morph.analyses("memukul", "ind")}
    assert ("tulis", ("di", "kan", "nya")) in {(a.stem, a.tags) for a in morph.analyses("dituliskannya", "ind")}
    assert ("rumah", ("", "", "mu")) in {(a.stem, a.tags) for a in morph.analyses("rumahmu", "ind")}
    assert ("kabar", ("", "", "nya")) in {(a.stem, a.tags) for a in morph.analyses("kabarno", "abl")}
    assert ("tinjuk", ("N", "", "")) in {(a.stem, a.tags) for a in morph.analyses("ninjuk", "abl")}
    assert morph.realize("pukul", ("N", "", ""), "ind") == "memukul"
    assert morph.realize("tulis", ("di", "kan", "nya"), "ind") == "dituliskannya"
    assert morph.realize("sapu", ("N", "", ""), "ind") == "menyapu"
    assert morph.realize("tinjuk", ("N", "", ""), "abl") == "ninjuk"
    assert morph.realize("nuwo", ("", "", "mu"), "abl") == "nuwo meu"
    assert morph.realize("kabar", ("", "", "nya"), "abl") == "kabarno"
    assert morph.analyses("di", "ind") == [] and morph.analyses("rumah", "fra") == []


def test_a_phrase_model_translates_unseen_combinations():
    from collections import Counter

    counts, forward, backward = PhraseModel.count_phrases(split(PAIRS), [("kuyuk", "anjing", 2.0)])
    assert isinstance(counts, Counter) and counts[("mengan", "makan")] > 0
    lo_ind = PhraseModel.from_counts("abl", "ind", counts, forward.table())
    ind_lo = PhraseModel.from_counts("ind", "abl", counts, backward.table(), reverse=True)
    lm_ind = NgramLM.fit([b for _, b in PAIRS])
    lm_lo = NgramLM.fit([a for a, _ in PAIRS])
    best = lo_ind.translate(["kuyuk", "ino", "mak", "mengan", "punyeu"], lm_ind)[0]
    assert best.words == ["anjing", "itu", "tidak", "makan", "ikan"] and not best.unknown
    assert ind_lo.translate(["anjing", "itu", "tidak", "makan", "ikan"], lm_lo)[0].words == [
        "kuyuk",
        "ino",
        "mak",
        "mengan",
        "punyeu",
    ]
    copied = lo_ind.translate(["kuyuk", "xyzzy"], lm_ind)[0]
    assert copied.words == ["anjing", "xyzzy"] and copied.unknown == ["xyzzy"]


@pytest.mark.parametrize("beam", [1, 2, 24])
def test_the_decoder_always_finishes(beam):
    counts, forward, _ = PhraseModel.count_phrases(split(PAIRS))
    lo_ind = PhraseModel.from_counts("abl", "ind", counts, forward.table())
    lm = NgramLM.fit([b for _, b in PAIRS])
    words = ["yo", "mak", "mengan", "punyeu", "ino", "zz", "sanak", "nyak", "mengan", "nasi", "qq", "ino"] * 3
    best = lo_ind.translate(words, lm, beam=beam)
    assert best and len(best[0].words) >= len(words) - 3
    covered = sorted(k for i, j, _ in best[0].spans for k in range(i, j))
    assert covered == list(range(len(words)))  # every source word translated exactly once
