"""The privacy scan, the domain policy and tool-output condensation (no model needed)."""

import pytest

from sigerlm_serving.condense import condense
from sigerlm_serving.privacy import DomainError, looks_like_nik, luhn_ok, redact, screen


@pytest.mark.parametrize(
    "text, kind",
    [
        ("kirim ke budi.santoso@example.co.id ya", "email"),
        ("hubungi +62 812-3456-7890", "phone"),
        ("hubungi 081234567890", "phone"),
        ("telp (021) 5551234", "phone"),
        ("NIK 3171234501900001", "nik"),
        ("kartu 4111 1111 1111 1111", "card"),
        ("kartu 5500-0000-0000-0004", "card"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "secret"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE", "secret"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz.0123", "secret"),
        ("api_key=ZXhhbXBsZXNlY3JldA", "secret"),
        ("password: hunter2hunter2", "secret"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "secret"),
        # forms the first redactor missed (issue 14)
        ("hubungi 6281234567890 ya", "phone"),
        ("wa081234567890", "phone"),
        ("HP ０８１２－３４５６－７８９０", "phone"),
        ("NIK3201234501900001", "nik"),
        ("kartu4012888888881881", "card"),
        ("NPWP 01.234.567.8-901.234", "npwp"),
        ("npwp:012345678901234", "npwp"),
        ("STRIPE=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret"),
        ("login hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "secret"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----",
            "secret",
        ),
        ("kirim ke https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "secret"),
        ("password: rahasia", "secret"),
    ],
)
def test_personal_data_and_secrets_are_redacted(text, kind):
    clean, found = redact(text)
    assert found == {kind: 1}, (clean, found)
    assert f"[REDACTED_{kind.upper()}]" in clean


@pytest.mark.parametrize(
    "text",
    [
        "Harga pempek 15000 rupiah pada tahun 2024.",
        "Rapat tanggal 2024-01-15 jam 10:30, ruang 12.",
        "Versi 3.11.7 dan build 20240115.",
        "Nyak haga mengan di pekon.",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == (text, {})


def test_numbers_inside_text_keep_the_text_around_them():
    clean, found = redact(
        "Halo, NIK3201234501900001 dan wa081234567890, email sari@example.com. ＨＰ：０８１２３４５６７８９０"
    )
    assert clean == "Halo, NIK[REDACTED_NIK] dan wa[REDACTED_PHONE], email [REDACTED_EMAIL]. ＨＰ：[REDACTED_PHONE]"
    assert found == {"nik": 1, "phone": 2, "email": 1}


def test_the_labelled_set_recall_and_false_positives():
    """The redactor on the labelled set in redaction_set.jsonl (written for this test: planted
    e-mails, phones, NIKs, cards, NPWPs and secrets in many forms, and ordinary text with
    numbers, dates, prices, versions, code and URLs). docs/serving.md states these numbers."""
    import json
    from collections import Counter
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).parent / "redaction_set.jsonl").read_text().splitlines()]
    positives, negatives = [r for r in rows if r["kind"]], [r for r in rows if not r["kind"]]
    assert len(positives) >= 200 and len(negatives) >= 200
    assert set(Counter(r["kind"] for r in positives)) == {"email", "phone", "nik", "card", "npwp", "secret"}
    missed = [r["text"] for r in positives if r["value"] in redact(r["text"])[0]]
    wrong_kind = [r["text"] for r in positives if r["kind"] not in redact(r["text"])[1]]
    flagged = [r["text"] for r in negatives if redact(r["text"])[1]]
    recall, false_positives = 1 - len(missed) / len(positives), len(flagged) / len(negatives)
    print(
        f"recall {recall:.4f} ({len(positives)} positives), false positives {false_positives:.4f} "
        f"({len(negatives)} negatives), wrong kind {len(wrong_kind)}"
    )
    assert recall >= 0.99, missed
    assert false_positives <= 0.02, flagged


def test_the_redactor_is_linear_on_hostile_text():
    import time

    for text in ("a" * 50_000, "1 " * 25_000, "1." * 25_000, "https://x.io/hooks/" * 2_600, "a@" * 25_000):
        start = time.perf_counter()
        redact(text)
        assert time.perf_counter() - start < 3, text[:20]


def test_luhn_and_nik_checks():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert looks_like_nik("3171234501900001") and not looks_like_nik("9971234501900001")


def test_policy():
    assert screen({"instruction": "x", "output": "y"}, "general")["status"] == "candidate"
    with pytest.raises(DomainError, match="unknown domain 'sari@example.com': intake takes one of chat, coding"):
        screen({"instruction": "x", "output": "y"}, "sari@example.com")
    assert screen({"instruction": "x", "output": "y"}, "CRM")["status"] == "quarantine"
    assert screen({"instruction": "x", "output": "y"}, "household finance")["risk"] == "high"
    phone_only = screen({"instruction": "telp 081234567890", "output": "y"}, "general")
    assert phone_only["status"] == "candidate" and phone_only["redactions"] == {"phone": 1}
    card = screen({"instruction": "x", "output": "4111 1111 1111 1111"}, "general")
    assert card["status"] == "quarantine" and "4111" not in card["record"]["output"]


def test_condense_keeps_errors_numbers_paths_head_and_tail():
    lines = (
        ["$ make test"]
        + [f"compiling module {i}" for i in range(300)]
        + [
            "warning: unused variable in src/app/util.py",
            "Traceback (most recent call last):",
            "ValueError: bad value 42",
        ]
        + ["ok"] * 100
        + ["12 passed, 1 failed in 3.2s"]
    )
    out = condense("\n".join(lines))
    for keep in ("$ make test", "src/app/util.py", "Traceback", "ValueError: bad value 42", "12 passed, 1 failed"):
        assert keep in out
    assert "[repeated" in out and "lines omitted" in out
    assert len(out) < len("\n".join(lines)) / 5


def test_condense_leaves_short_output_alone():
    assert condense("one\ntwo\nthree") == "one\ntwo\nthree"
