"""Word alignment learned from parallel sentences, and the phrase pairs it licenses.

Glossary: ``f`` source words of a pair (length ``m``), ``e`` target words (length ``n``);
``t(e | f)`` the lexical translation table; ``NULL`` a source word every target word may
align to.

``train_lexical`` runs EM for IBM Model 1, then continues with a diagonal alignment prior in
the style of fast_align (Dyer et al. 2013; an IBM Model 2 whose distortion is one tension
parameter): ``p(i | j, m, n) ∝ exp(-tension * |i/m - j/n|)``. Every co-occurrence of a
(source, target) word pair in a sentence pair is one entry of flat numpy arrays, so an EM
iteration is a few gathers and ``bincount``s, not a Python loop over words.

``symmetrize`` joins the two directions' Viterbi alignments with grow-diag-final-and;
``extract_phrases`` lists the phrase pairs consistent with an alignment (Koehn et al. 2003).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NULL = "<null>"


@dataclass
class LexicalModel:
    """``t(e | f)`` over word ids; ``prob`` looks words up by string."""

    src_vocab: dict[str, int]
    tgt_vocab: dict[str, int]
    pair_f: np.ndarray  # (p,) source id of each known pair
    pair_e: np.ndarray  # (p,) target id
    t: np.ndarray  # (p,) t(e | f)
    tension: float
    #: Viterbi links of each training pair: ``links[k]`` lists (i, j), source i aligned to target j
    links: list[list[tuple[int, int]]] | None = None

    def prob(self, f: str, e: str) -> float:
        if getattr(self, "_index", None) is None:
            self._index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(self.pair_f, self.pair_e, strict=True))}
        k = self._index.get((self.src_vocab.get(f, -1), self.tgt_vocab.get(e, -1)))
        return float(self.t[k]) if k is not None else 0.0

    def table(self, min_prob: float = 0.01) -> dict[str, dict[str, float]]:
        """``{f: {e: t(e|f)}}`` for entries above ``min_prob`` (NULL excluded)."""
        inv_src = {i: w for w, i in self.src_vocab.items()}
        inv_tgt = {i: w for w, i in self.tgt_vocab.items()}
        out: dict[str, dict[str, float]] = {}
        for f, e, p in zip(self.pair_f, self.pair_e, self.t, strict=True):
            if p >= min_prob and inv_src[int(f)] != NULL:
                out.setdefault(inv_src[int(f)], {})[inv_tgt[int(e)]] = float(p)
        return out

    def viterbi(self, src: Sequence[str], tgt: Sequence[str]) -> list[tuple[int, int]]:
        """Links ``(i, j)``: source position i (0-based) aligned to target position j."""
        m, n = len(src), len(tgt)
        links = []
        for j, e in enumerate(tgt):
            best, best_i = self.prob(NULL, e) * _null_weight(m), -1
            for i, f in enumerate(src):
                p = self.prob(f, e) * np.exp(-self.tension * abs((i + 0.5) / m - (j + 0.5) / n))
                if p > best:
                    best, best_i = p, i
            if best_i >= 0:
                links.append((best_i, j))
        return links


def _null_weight(m: int) -> float:
    return 1.0 / (m + 1)


def train_lexical(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]],
    model1_iterations: int = 5,
    diagonal_iterations: int = 5,
    tension: float = 4.0,
    weights: Sequence[float] | None = None,
) -> LexicalModel:
    """EM for ``t(e | f)`` on (source words, target words) pairs; ``weights`` scale each pair's counts."""
    src_vocab: dict[str, int] = {NULL: 0}
    tgt_vocab: dict[str, int] = {}
    # one entry per (pair, source position incl. NULL, target position)
    ent_f, ent_e, ent_tok, ent_prior, ent_w, ent_pair, ent_i, ent_j = [], [], [], [], [], [], [], []
    token = 0
    for k, (src, tgt) in enumerate(pairs):
        if not src or not tgt:
            continue
        m, n = len(src), len(tgt)
        f_ids = np.array([0] + [src_vocab.setdefault(w, len(src_vocab)) for w in src])
        e_ids = np.array([tgt_vocab.setdefault(w, len(tgt_vocab)) for w in tgt])
        i_pos = (np.arange(m) + 0.5) / m
        j_pos = (np.arange(n) + 0.5) / n
        prior = np.exp(-np.abs(i_pos[:, None] - j_pos[None, :]))  # (m, n); raised to tension below
        prior = np.vstack([np.full((1, n), -1.0), prior])  # NULL row marked -1
        size = (m + 1) * n
        ent_f.append(np.broadcast_to(f_ids[:, None], (m + 1, n)).ravel())
        ent_e.append(np.broadcast_to(e_ids[None, :], (m + 1, n)).ravel())
        ent_tok.append(np.broadcast_to(np.arange(token, token + n)[None, :], (m + 1, n)).ravel())
        ent_prior.append(prior.reshape(-1))
        ent_w.append(np.full(size, 1.0 if weights is None else float(weights[k])))
        ent_pair.append(np.full(size, k))
        ent_i.append(np.broadcast_to(np.arange(-1, m)[:, None], (m + 1, n)).ravel())  # -1: NULL
        ent_j.append(np.broadcast_to(np.arange(n)[None, :], (m + 1, n)).ravel())
        token += n
    if not ent_f:
        raise ValueError("no sentence pairs to align")
    f = np.concatenate(ent_f)
    e = np.concatenate(ent_e)
    tok = np.concatenate(ent_tok)
    base_prior = np.concatenate(ent_prior)
    w = np.concatenate(ent_w)
    key = f.astype(np.int64) * len(tgt_vocab) + e
    uniq, pid = np.unique(key, return_inverse=True)
    pair_f, pair_e = (uniq // len(tgt_vocab)).astype(np.int64), (uniq % len(tgt_vocab)).astype(np.int64)
    t = np.full(len(uniq), 1.0 / len(tgt_vocab))
    null = base_prior < 0
    for it in range(model1_iterations + diagonal_iterations):
        if it < model1_iterations:
            prior = np.ones_like(base_prior)
        else:
            prior = np.where(null, 1.0, base_prior**tension)
            # NULL competes with the mean diagonal weight of the sentence's words
        score = t[pid] * prior
        denom = np.bincount(tok, weights=score, minlength=token)
        post = score / denom[tok] * w
        counts = np.bincount(pid, weights=post, minlength=len(uniq))
        totals = np.bincount(pair_f, weights=counts, minlength=len(src_vocab))
        t = counts / np.maximum(totals[pair_f], 1e-300)
    # Viterbi: for every target token the best source position under the final model
    score = t[pid] * prior
    order = np.lexsort((-score, tok))
    first = order[np.r_[True, tok[order][1:] != tok[order][:-1]]]
    pair_k, src_i, tgt_j = np.concatenate(ent_pair), np.concatenate(ent_i), np.concatenate(ent_j)
    links: list[list[tuple[int, int]]] = [[] for _ in pairs]
    for k, i, j in zip(pair_k[first], src_i[first], tgt_j[first], strict=True):
        if i >= 0:
            links[int(k)].append((int(i), int(j)))
    return LexicalModel(src_vocab, tgt_vocab, pair_f, pair_e, t, tension if diagonal_iterations else 0.0, links)


def symmetrize(forward: list[tuple[int, int]], backward: list[tuple[int, int]], m: int, n: int) -> set[tuple[int, int]]:
    """grow-diag-final-and of a source->target and a target->source alignment (both as (i, j))."""
    fwd, bwd = set(forward), set(backward)
    alignment = fwd & bwd
    union = fwd | bwd
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    added = True
    while added:
        added = False
        for i, j in sorted(alignment):
            for di, dj in neighbours:
                ni, nj = i + di, j + dj
                if (ni, nj) in union and (ni, nj) not in alignment:
                    src_free = all((ni, x) not in alignment for x in range(n))
                    tgt_free = all((x, nj) not in alignment for x in range(m))
                    if src_free or tgt_free:
                        alignment.add((ni, nj))
                        added = True
    for i, j in sorted(union):  # final-and: unaligned on both sides
        if (
            (i, j) not in alignment
            and all((i, x) not in alignment for x in range(n))
            and all((x, j) not in alignment for x in range(m))
        ):
            alignment.add((i, j))
    return alignment


def extract_phrases(
    src: Sequence[str], tgt: Sequence[str], alignment: set[tuple[int, int]], max_len: int = 4
) -> list[tuple[str, str]]:
    """Phrase pairs (source phrase, target phrase) consistent with ``alignment``: no word inside
    the pair is aligned outside it; unaligned target words at the edges may join."""
    m, n = len(src), len(tgt)
    out: list[tuple[str, str]] = []
    tgt_of_src: list[list[int]] = [[] for _ in range(m)]
    src_of_tgt: list[list[int]] = [[] for _ in range(n)]
    for i, j in alignment:
        tgt_of_src[i].append(j)
        src_of_tgt[j].append(i)
    for i1 in range(m):
        j1, j2 = n, -1
        for i2 in range(i1, min(m, i1 + max_len)):
            for j in tgt_of_src[i2]:
                j1, j2 = min(j1, j), max(j2, j)
            if j2 < 0 or j2 - j1 >= max_len:
                continue
            if any(not (i1 <= i <= i2) for j in range(j1, j2 + 1) for i in src_of_tgt[j]):
                continue
            a = j1
            while a >= 0 and (a == j1 or not src_of_tgt[a]) and j2 - a < max_len:
                b = j2
                while b < n and (b == j2 or not src_of_tgt[b]) and b - a < max_len:
                    out.append((" ".join(src[i1 : i2 + 1]), " ".join(tgt[a : b + 1])))
                    b += 1
                a -= 1
    return out
