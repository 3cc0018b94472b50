"""Normalisation and tokenisation shared by every stage (lookup keys, alignment, evaluation).

``normalize`` makes two spellings of one sentence compare equal: Unicode NFC, lower case,
every apostrophe-like mark as ``'`` (``na’en`` = ``na'en``), punctuation removed except
apostrophes and hyphens inside a word (``anai-anai``), whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({c: "'" for c in "\u2019\u2018\u02bc\u0060\u00b4\u2032"})
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014"})
# a word: letters/digits, with inner apostrophes or hyphens (na'en, anai-anai)
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_PARENS = re.compile(r"\([^)]*\)")


def normalize(text: str) -> str:
    """Lower-cased words joined by single spaces (see the module docstring)."""
    return " ".join(tokenize(text))


def tokenize(text: str) -> list[str]:
    """The normalised words of ``text``."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).translate(_DASHES).lower()
    return _WORD.findall(text)


def strip_glosses(text: str) -> str:
    """Drop parenthesised glosses: ``kiyay (abang)`` -> ``kiyay``."""
    return _PARENS.sub(" ", text)


def first_alternatives(text: str) -> str:
    """Keep the first of slash-joined alternatives inside a sentence: ``Ikam/nyak ago`` -> ``Ikam ago``."""
    return " ".join(part.split("/")[0] if "/" in part and part.strip("/") else part for part in text.split())


def alternatives(text: str) -> list[str]:
    """Alternatives of a short entry, joined by ``/`` or ``,``: ``Iyo/iyyo/yo`` -> three."""
    out = []
    for part in re.split(r"[/,;]", strip_glosses(text)):
        norm = normalize(part)
        if norm and norm not in out:
            out.append(norm)
    return out


def restore_surface(source: str, translation: str) -> str:
    """Give a normalised translation the source's sentence shape: its capital first letter and
    its final ``?``, ``!``, ``.``, ``:`` or ``;``."""
    if not translation:
        return translation
    src = source.strip()
    # names and other capitalised words copied from the source keep their capital
    capitals = {
        w.lower(): w
        for w in _WORD.findall(unicodedata.normalize("NFC", src).translate(_APOSTROPHES))[1:]
        if w[:1].isupper()
    }
    out = " ".join(capitals.get(w, w) for w in translation.split(" ")) if capitals else translation
    if src[:1].isupper():
        out = out[:1].upper() + out[1:]
    if src[-1:] and src[-1] in "?!.:;":
        out += src[-1]
    return out
