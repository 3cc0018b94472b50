"""Privacy screening and the domain policy for learning intake (torch-free).

``redact(text)`` replaces e-mail addresses, phone numbers, Indonesian NIK numbers, payment card
numbers (Luhn-checked), API keys and bearer tokens with ``[REDACTED_<KIND>]`` and counts them.
``screen(record)`` applies it to every text field of a record and decides candidate or
quarantine: records from high-risk domains (CRM, household finance, ...) and records in which
an identity number, card number or secret was found go to quarantine.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

HIGH_RISK_DOMAINS = frozenset({"crm", "household_finance", "finance", "health", "legal", "hr"})
#: Redaction kinds whose presence sends a record to quarantine whatever its domain.
SENSITIVE_KINDS = frozenset({"nik", "card", "secret"})

_SECRET = re.compile(
    r"(?:"
    r"\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{16,}"            # OpenAI / Stripe style keys
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"                              # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"                          # Slack tokens
    r"|\bAKIA[0-9A-Z]{16}\b"                                      # AWS access key ids
    r"|\bAIza[0-9A-Za-z_\-]{35}"                                  # Google API keys
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{16,}=*"                 # Authorization: Bearer ...
    r"|(?i:(?:api[_-]?key|secret|token|password|passwd|access[_-]?key)\s*[:=]\s*)[\"']?[^\s\"']{8,}"
    r")"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")
_DIGIT_RUN = re.compile(r"(?<![\w+])(?:\d[ \-.]?){12,18}\d(?!\w)")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ \-.]?|\(?0\d{1,4}\)?[ \-.]?)\d{2,4}(?:[ \-.]?\d{2,4}){1,3}(?!\w)")


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


def redact(text: str) -> tuple[str, Counter]:
    """``text`` with personal data and secrets replaced, and how many of each kind were found."""
    found: Counter = Counter()

    def sub(kind: str) -> Any:
        def replace(m: re.Match) -> str:
            found[kind] += 1
            return f"[REDACTED_{kind.upper()}]"
        return replace

    text = _SECRET.sub(sub("secret"), text)
    text = _EMAIL.sub(sub("email"), text)

    def number(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if looks_like_nik(digits) and not re.search(r"[ \-.]", m.group(0)):
            kind = "nik"
        elif 13 <= len(digits) <= 19 and luhn_ok(digits):
            kind = "card"
        elif looks_like_nik(digits):
            kind = "nik"
        else:
            return m.group(0)
        found[kind] += 1
        return f"[REDACTED_{kind.upper()}]"

    text = _DIGIT_RUN.sub(number, text)

    def phone(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if not 9 <= len(digits) <= 15:
            return m.group(0)
        found["phone"] += 1
        return "[REDACTED_PHONE]"

    text = _PHONE.sub(phone, text)
    return text, found


def screen(record: dict[str, Any], domain: str) -> dict[str, Any]:
    """The redacted record, the counts per kind, its risk and where it goes (candidate/quarantine)."""
    clean: dict[str, Any] = {}
    counts: Counter = Counter()
    for key, value in record.items():
        if isinstance(value, str):
            clean[key], found = redact(value)
            counts.update(found)
        else:
            clean[key] = value
    domain = domain.strip().lower().replace("-", "_").replace(" ", "_") or "general"
    high = domain in HIGH_RISK_DOMAINS or any(counts[k] for k in SENSITIVE_KINDS)
    return {"record": clean, "redactions": dict(counts), "domain": domain, "risk": "high" if high else "normal",
            "status": "quarantine" if high else "candidate"}
