"""Indonesian and Lampung (dialect O) affixes and clitics, for words the tables do not know.

A word is analysed as ``prefix + stem + suffix + clitic``, each affix a language-neutral tag:

| tag | Indonesian | Lampung O | meaning |
|---|---|---|---|
| ``di`` | di- | di- | passive |
| ``N`` | me-, mem-, men-, meng-, meny- | ng-, nge-, ny-, m-, n- | active (nasal) |
| ``ber`` | ber-, be- | be-, ber- | intransitive / having |
| ``ter`` | ter- | te-, ter- | accidental / superlative |
| ``ke`` / ``se`` | ke-, se- | ke-, se- | |
| ``kan`` | -kan | -ke, -kon | causative / benefactive |
| ``i`` / ``an`` | -i / -an | -i / -an | |
| ``nya`` | -nya | -no, -ni | his / her / its, the |
| ``ku`` / ``mu`` | -ku / -mu | -ku / -mu, -meu, the word ``meu`` | my / your |
| ``lah``, ``kah``, ``pun`` | -lah, -kah, -pun | -lah, -kah | particles |

``analyses(word, lang)`` lists the readings whose stem is at least three letters long;
the translator keeps the ones whose stem it can translate. ``realize(stem, tags, lang)``
rebuilds a word from a stem and tags with the nasal assimilation of each language
(Indonesian ``meN- + pukul = memukul``, Lampung ``N- + tinjuk = ninjuk``).
Pronoun forms (``saya``/``aku`` = ``nyak``, ``kamu`` = ``nikeu``/``niku``, ``dia`` = ``yo``) are
whole words and come from the tables learned from the data.
"""

from __future__ import annotations

from dataclasses import dataclass

VOWELS = set("aeiou")

PREFIXES = {
    "ind": [
        ("di", "di"),
        ("meny", "N"),
        ("meng", "N"),
        ("mem", "N"),
        ("men", "N"),
        ("me", "N"),
        ("ber", "ber"),
        ("be", "ber"),
        ("ter", "ter"),
        ("ke", "ke"),
        ("se", "se"),
    ],
    "abl": [
        ("di", "di"),
        ("nge", "N"),
        ("ng", "N"),
        ("ny", "N"),
        ("m", "N"),
        ("n", "N"),
        ("ber", "ber"),
        ("be", "ber"),
        ("ter", "ter"),
        ("te", "ter"),
        ("ke", "ke"),
        ("se", "se"),
    ],
}
SUFFIXES = {
    "ind": [("kan", "kan"), ("i", "i"), ("an", "an")],
    "abl": [("kon", "kan"), ("ke", "kan"), ("i", "i"), ("an", "an")],
}
CLITICS = {
    "ind": [("nya", "nya"), ("ku", "ku"), ("mu", "mu"), ("lah", "lah"), ("kah", "kah"), ("pun", "pun")],
    "abl": [("no", "nya"), ("ni", "nya"), ("ku", "ku"), ("meu", "mu"), ("mu", "mu"), ("lah", "lah"), ("kah", "kah")],
}
#: Surface form of each tag when building a word in a language (nasal ``N`` is handled apart).
SURFACE = {
    "ind": {
        "di": "di",
        "ber": "ber",
        "ter": "ter",
        "ke": "ke",
        "se": "se",
        "kan": "kan",
        "i": "i",
        "an": "an",
        "nya": "nya",
        "ku": "ku",
        "mu": "mu",
        "lah": "lah",
        "kah": "kah",
        "pun": "pun",
    },
    "abl": {
        "di": "di",
        "ber": "be",
        "ter": "te",
        "ke": "ke",
        "se": "se",
        "kan": "ke",
        "i": "i",
        "an": "an",
        # -mu is a separate word in the pairs (badanmu = badan meu: 242 of 245 in train)
        "nya": "no",
        "ku": "ku",
        "mu": " meu",
        "lah": "lah",
        "kah": "kah",
        "pun": "pun",
    },
}
MIN_STEM = 3


@dataclass(frozen=True)
class Analysis:
    stem: str
    prefix: str = ""
    suffix: str = ""
    clitic: str = ""

    @property
    def tags(self) -> tuple[str, str, str]:
        return self.prefix, self.suffix, self.clitic

    @property
    def depth(self) -> int:
        return sum(bool(t) for t in self.tags)


def _nasal_stems(lang: str, surface: str, rest: str) -> list[str]:
    """Stems a nasal prefix may have eaten the first consonant of."""
    stems = [rest]
    if not rest or rest[0] not in VOWELS:
        return stems
    if lang == "ind":
        restore = {"meny": ["s"], "mem": ["p"], "men": ["t"], "meng": ["k"]}.get(surface, [])
    else:
        restore = {"ny": ["s", "c"], "m": ["p"], "n": ["t"], "ng": ["k"]}.get(surface, [])
    return stems + [c + rest for c in restore]


def analyses(word: str, lang: str) -> list[Analysis]:
    """Readings of ``word`` as prefix + stem + suffix + clitic, fewest affixes first."""
    if lang not in PREFIXES:
        return []
    out: list[Analysis] = []
    clitic_cuts = [(word, "")] + [(word[: -len(s)], tag) for s, tag in CLITICS[lang] if word.endswith(s)]
    for base, clitic in clitic_cuts:
        suffix_cuts = [(base, "")] + [(base[: -len(s)], tag) for s, tag in SUFFIXES[lang] if base.endswith(s)]
        for body, suffix in suffix_cuts:
            out.append(Analysis(body, "", suffix, clitic))
            for surface, tag in PREFIXES[lang]:
                if body.startswith(surface) and len(body) > len(surface):
                    rest = body[len(surface) :]
                    stems = _nasal_stems(lang, surface, rest) if tag == "N" else [rest]
                    for stem in stems:
                        out.append(Analysis(stem, tag, suffix, clitic))
    seen: set[Analysis] = set()
    unique = []
    for a in sorted(out, key=lambda a: (a.depth, -len(a.stem))):
        if a.depth and len(a.stem) >= MIN_STEM and a not in seen and a.stem != word:
            seen.add(a)
            unique.append(a)
    return unique


def nasalize(stem: str, lang: str) -> str:
    """The active (nasal) form of a stem."""
    if not stem:
        return stem
    first = stem[0]
    if lang == "ind":
        if first in "bfv":
            return "mem" + stem
        if first == "p":
            return "mem" + stem[1:]
        if first in "dcjz":
            return "men" + stem
        if first == "t":
            return "men" + stem[1:]
        if first == "s":
            return "meny" + stem[1:]
        if first == "k":
            return "meng" + stem[1:]
        if first in VOWELS or first in "gh":
            return "meng" + stem
        return "me" + stem
    if first == "p":
        return "m" + stem[1:]
    if first == "t":
        return "n" + stem[1:]
    if first == "k":
        return "ng" + stem[1:]
    if first in "sc":
        return "ny" + stem[1:]
    if first in VOWELS:
        return "ng" + stem
    return "nge" + stem


def realize(stem: str, tags: tuple[str, str, str], lang: str) -> str:
    """Build a word of ``lang`` from ``stem`` and (prefix, suffix, clitic) tags."""
    prefix, suffix, clitic = tags
    surface = SURFACE[lang]
    word = stem + (surface[suffix] if suffix else "")
    if prefix == "N":
        word = nasalize(word, lang)
    elif prefix:
        word = surface[prefix] + word
    return word + (surface[clitic] if clitic else "")
