"""Privacy screening and the domain policy for learning intake (torch-free).

``redact(text)`` replaces e-mail addresses, phone numbers, Indonesian NIK and NPWP numbers,
payment card numbers (Luhn-checked), secrets (API keys and tokens, PEM private keys, webhook
URLs, ``password: ...``) with ``[REDACTED_<KIND>]`` and counts them. Numbers are found also
when written in full-width or other Unicode digits and when glued to letters (``NIK3201...``,
``wa0812...``). ``screen(record, domain)`` applies it to every text field of a record, checks the
domain against the policy (``DOMAINS``) and decides candidate or quarantine: records from
high-risk domains and records in which an identity number, card number or secret was found go
to quarantine.

The redactor is measured on a labelled set in the serving tests (``redaction_set.jsonl``);
docs/serving.md states its recall and false-positive rate.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Any

#: The domains intake accepts, and the risk of each. Others are refused (422).
DOMAINS: dict[str, str] = {
    "general": "normal",
    "chat": "normal",
    "translation": "normal",
    "language": "normal",
    "culture": "normal",
    "education": "normal",
    "science": "normal",
    "coding": "normal",
    "support": "normal",
    "crm": "high",
    "household_finance": "high",
    "finance": "high",
    "health": "high",
    "legal": "high",
    "hr": "high",
}
HIGH_RISK_DOMAINS = frozenset(d for d, risk in DOMAINS.items() if risk == "high")
#: Redaction kinds whose presence sends a record to quarantine whatever its domain.
SENSITIVE_KINDS = frozenset({"nik", "npwp", "card", "secret"})
KINDS = ("secret", "email", "npwp", "nik", "card", "phone")


class DomainError(ValueError):
    """A domain that is not in the policy's list."""


def normalize_domain(domain: str) -> str:
    """``"Household-Finance "`` -> ``household_finance``; a domain not in ``DOMAINS`` raises."""
    name = re.sub(r"[\s\-]+", "_", domain.strip().lower())
    if name not in DOMAINS:
        raise DomainError(f"unknown domain {domain[:64]!r}: intake takes one of {', '.join(sorted(DOMAINS))}")
    return name


# -- secrets ----------------------------------------------------------------------------------
_SECRET = re.compile(
    r"(?:"
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"  # PEM / PGP private keys, to their end
    r"(?:.*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:\-\s]*)"
    r"|\b(?:sk|rk)[-_](?:proj[-_]|live[-_]|test[-_]|ant[-_](?:api\d\d[-_])?|svcacct[-_])?[A-Za-z0-9_\-]{16,}"
    r"|\bwhsec_[A-Za-z0-9]{16,}"  # Stripe webhook secrets
    r"|\bhf_[A-Za-z0-9]{20,}"  # Hugging Face tokens
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|\bnpm_[A-Za-z0-9]{30,}"
    r"|\bpypi-[A-Za-z0-9_\-]{40,}"
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|\bxapp-[A-Za-z0-9\-]{10,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\bya29\.[0-9A-Za-z_\-]{20,}"  # Google OAuth access tokens
    r"|\bSG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"  # SendGrid
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{16,}=*"  # Authorization: Bearer ...
    r"|(?i:\b(?:token|basic)\s+)(?=[A-Za-z0-9._~+/\-]*\d)[A-Za-z0-9._~+/\-]{16,}=*"
    r")",
    re.DOTALL,
)
#: ``password: value``, ``api_key = "value"``, ``kata sandi: value``: the name and its value
_KEY_VALUE = re.compile(
    r"(?i:\b(?:api[_\- ]?key|apikey|api[_\- ]?token|secret[_\- ]?key|secret|client[_\- ]?secret|auth[_\- ]?token"
    r"|access[_\- ]?token|refresh[_\- ]?token|access[_\- ]?key|private[_\- ]?key|token|password|passwd|pwd"
    r"|passphrase|kata[_\- ]?sandi|sandi|pin)(?:nya)?[\"']?\s*(?::|=>?)\s*)"
    r"(?:\"[^\"\n]{4,200}\"|'[^'\n]{4,200}'|[^\s\"',;()\[\]{}<>]{4,200}+(?![(\[]))"
    r"|(?i:\b(?:password|passwd|kata[_\- ]?sandi|sandi|pin)(?:nya)?\s+(?:is|adalah|:)\s+)"
    r"(?=\S*[\d!@#$%^&*])[^\s\"',;]{4,200}"
)
_URL = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>()\[\]{}]+", re.I)
_WEBHOOK_HOSTS = re.compile(
    r"^(?:hooks\.slack\.com|(?:[a-z0-9\-]+\.)?discord(?:app)?\.com/api/webhooks|outlook\.office\.com/webhook"
    r"|[a-z0-9\-]+\.webhook\.office\.com|api\.telegram\.org/bot|hooks\.zapier\.com|maker\.ifttt\.com"
    r"|chat\.googleapis\.com/v1/spaces)",
    re.I,
)
_HOOK_SEGMENT = re.compile(r"(?:web)?hooks?[a-z0-9]{0,2}", re.I)
_SECRET_QUERY = re.compile(
    r"[?&#](?:token|access_token|api_?key|key|secret|sig|signature|password|pwd|auth|code)=[^&\s]{6,}", re.I
)
_URL_CREDENTIALS = re.compile(r"^[a-z]+://[^/@\s:]+:[^/@\s]+@", re.I)


def _secret_url(url: str) -> bool:
    """A webhook URL (a known service's, or a ``/hooks/`` or ``/webhook/`` path followed by a
    token), a URL with a password in it, or one carrying a token in its query."""
    rest = url.split("://", 1)[1]
    if _WEBHOOK_HOSTS.match(rest) or _SECRET_QUERY.search(url) or _URL_CREDENTIALS.match(url):
        return True
    path = rest.split("?", 1)[0].split("#", 1)[0].split("/")[1:]
    for k, segment in enumerate(path):
        if _HOOK_SEGMENT.fullmatch(segment):
            tail = "/".join(path[k + 1 :])
            return len(tail) >= 16 and any(ch.isdigit() for ch in tail)
    return False


# -- e-mail ------------------------------------------------------------------------------------
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")

# -- numbers -----------------------------------------------------------------------------------
#: NPWP in its printed form 12.345.678.9-012.345
_NPWP = re.compile(r"(?<!\d)\d{2}\.\d{3}\.\d{3}\.\d[.\-]\d{3}\.\d{3}(?!\d)")
#: a run of digit groups joined by single separators, after an optional "+" or "("
_RUN = re.compile(r"(?<!\d)([+(]?)(\d+(?:(?:[ .\-/]|\) ?| ?\(|\)-)\d+)*)")
_GROUP = re.compile(r"\d+")
_KEYWORD = re.compile(
    r"(?i)\b(npwp|nik|ktp|kartu|card|cc|visa|mastercard|debit|kredit|credit"
    r"|hp|telp|tel|telepon|phone|ponsel|wa|whatsapp)[\s.:#]*(?:saya|anda|ku|nya)?[\s.:#]*$"
)
_CARD_WORDS = frozenset({"kartu", "card", "cc", "visa", "mastercard", "debit", "kredit", "credit"})
_PHONE_WORDS = frozenset({"hp", "telp", "tel", "telepon", "phone", "ponsel", "wa", "whatsapp"})


def luhn_ok(digits: str) -> bool:
    total, double = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def looks_like_nik(digits: str) -> bool:
    """An Indonesian NIK: 16 digits, a province code (11-94), then the district and subdistrict,
    then the birth date DDMMYY (day + 40 for women)."""
    if len(digits) != 16 or not 11 <= int(digits[:2]) <= 94:
        return False
    day, month = int(digits[6:8]), int(digits[8:10])
    return (1 <= day <= 31 or 41 <= day <= 71) and 1 <= month <= 12


def _phone(prefix: str, digits: str, groups: list[str]) -> bool:
    """An Indonesian phone number (08.., 628.., 0062.., a landline with its area code) or an
    international one written with ``+``. After the first group every group has 3+ digits
    (2+ after a ``+``), so dates and times (``01.02.2024 10.30``) are not phone numbers."""
    short = [len(g) < (2 if prefix == "+" else 3) for g in groups[1:]]
    if any(short[:-1]) or (short and short[-1] and not (len(groups[0]) >= 3 and len(groups[-1]) == 2)):
        return False  # only a last group of 2 digits is allowed ("0812-3456-78")
    n = len(digits)
    if prefix == "+":
        return 8 <= n <= 15
    if digits.startswith("0062"):
        return 12 <= n <= 17
    if digits.startswith("08"):
        return 10 <= n <= 13
    if digits.startswith("628"):
        return 11 <= n <= 14
    if digits.startswith("62") and len(groups) > 1 and len(groups[0]) == 2:
        return 10 <= n <= 14  # 62 21 555 1234
    if digits[:2] in ("02", "03", "04", "05", "06", "07", "09"):  # a landline: area code, then 5-8 digits
        return 9 <= n <= 12 and (len(groups) == 1 or 3 <= len(groups[0]) <= 4)
    return False


def _classify(prefix: str, groups: list[str], before: str) -> str | None:
    """The kind of a number written as ``groups`` (digit strings) after ``prefix`` (``+``,
    ``(`` or nothing); ``before`` is the text just before it (a keyword such as NIK or kartu)."""
    digits = "".join(groups)
    n = len(digits)
    keyword = _KEYWORD.search(before)
    key = keyword.group(1).lower() if keyword else ""
    spaced = any(len(g) < 3 for g in groups[1:])  # 1- and 2-digit groups: a date, a time, a list
    if prefix == "+":
        return "phone" if _phone(prefix, digits, groups) else None
    if key == "npwp" and n in (15, 16) and not spaced:
        return "npwp"
    if key in _CARD_WORDS and 13 <= n <= 19 and not spaced:
        return "card"
    if n == 16 and not spaced and (key in ("nik", "ktp") or (looks_like_nik(digits) and len(groups) == 1)):
        return "nik"
    if 13 <= n <= 19 and not spaced and digits[0] in "23456" and luhn_ok(digits):
        if not (n <= 14 and _phone(prefix, digits, groups)):
            return "card"
    if _phone(prefix, digits, groups):
        return "phone"
    if key in _PHONE_WORDS and digits[0] == "8" and 9 <= n <= 12 and not spaced:
        return "phone"  # "HP 812 3456 7890"
    if n == 16 and looks_like_nik(digits) and not spaced:
        return "nik"
    return None


def _number_spans(text: str, mask: bytearray) -> list[tuple[int, int, str]]:
    """Numbers of each kind in ``text`` (folded) outside the spans ``mask`` already marks."""
    found = []

    def take(start: int, end: int, kind: str) -> bool:
        if any(mask[start:end]):
            return False
        mask[start:end] = b"\x01" * (end - start)
        found.append((start, end, kind))
        return True

    for m in _NPWP.finditer(text):
        take(m.start(), m.end(), "npwp")
    for m in _RUN.finditer(text):
        prefix, base = m.group(1), m.start(2)
        groups = [(g.start() + base, g.end() + base, g.group()) for g in _GROUP.finditer(m.group(2))]
        i = 0
        while i < len(groups):
            # the longest window of groups from i (at most 19 digits) that is a number of some kind
            lead = prefix if i == 0 else ""
            ends, total = [], 0
            for j in range(i, len(groups)):
                size = len(groups[j][2])
                total += size
                if total > 19 or (j > i and size < 2):
                    break  # no kind has a 1-digit group after the first
                ends.append(j)
                if j > i and size == 2 and lead != "+":
                    break  # a 2-digit group only ends a number (or follows a "+")
            start = groups[i][0] - len(lead)
            before, hit = None, None
            for j in reversed(ends):
                window = [g[2] for g in groups[i : j + 1]]
                if sum(map(len, window)) < 8:
                    break
                before = text[max(0, start - 24) : start] if before is None else before
                kind = _classify(lead, window, before)
                if kind and take(start, groups[j][1], kind):
                    hit = j
                    break
            i = hit + 1 if hit is not None else i + 1
    return found


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """One character, as ASCII when Unicode folds it to one character: full-width and other
    digits (``０``, ``٣``), full-width letters and signs, odd spaces."""
    if ch.isdigit():
        value = unicodedata.digit(ch, None)
        if value is not None:
            return str(value)
    if ch in "\u00a0\u2007\u202f\u3000":
        return " "
    if ch in "\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d":
        return "-"
    folded = unicodedata.normalize("NFKC", ch)
    return folded if len(folded) == 1 else ch


def fold(text: str) -> str:
    """``text`` with the same length, characters folded for matching (see ``_fold_char``)."""
    if text.isascii():
        return text
    return "".join(_fold_char(ch) for ch in text)


def find(text: str) -> list[tuple[int, int, str]]:
    """The spans of personal data and secrets in ``text``: ``(start, end, kind)``, in order."""
    folded = fold(text)
    mask = bytearray(len(folded))
    spans: list[tuple[int, int, str]] = []

    def take(start: int, end: int, kind: str) -> None:
        if not any(mask[start:end]):
            mask[start:end] = b"\x01" * (end - start)
            spans.append((start, end, kind))

    for m in _URL.finditer(folded):  # whole URLs first: a webhook's token is part of it
        if _secret_url(m.group(0)):
            take(m.start(), m.end(), "secret")
    for pattern in (_SECRET, _KEY_VALUE):
        for m in pattern.finditer(folded):
            take(m.start(), m.end(), "secret")
    for m in _EMAIL.finditer(folded):
        take(m.start(), m.end(), "email")
    spans += _number_spans(folded, mask)
    return sorted(spans)


def redact(text: str) -> tuple[str, Counter]:
    """``text`` with personal data and secrets replaced, and how many of each kind were found."""
    found: Counter = Counter()
    out, at = [], 0
    for start, end, kind in find(text):
        out.append(text[at:start])
        out.append(f"[REDACTED_{kind.upper()}]")
        found[kind] += 1
        at = end
    out.append(text[at:])
    return "".join(out), found


def screen(record: dict[str, Any], domain: str) -> dict[str, Any]:
    """The redacted record (every text field), the counts per kind, its domain (checked against
    ``DOMAINS``; ``DomainError`` otherwise), its risk and where it goes (candidate/quarantine)."""
    domain = normalize_domain(domain)
    clean: dict[str, Any] = {}
    counts: Counter = Counter()
    for key, value in record.items():
        if isinstance(value, str):
            clean[key], found = redact(value)
            counts.update(found)
        else:
            clean[key] = value
    high = domain in HIGH_RISK_DOMAINS or any(counts[k] for k in SENSITIVE_KINDS)
    return {
        "record": clean,
        "redactions": dict(counts),
        "domain": domain,
        "risk": "high" if high else "normal",
        "status": "quarantine" if high else "candidate",
    }
