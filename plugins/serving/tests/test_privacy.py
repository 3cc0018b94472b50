"""The privacy scan, the domain policy and tool-output condensation (no model needed)."""

import pytest

from sigerlm_serving.condense import condense
from sigerlm_serving.privacy import looks_like_nik, luhn_ok, redact, screen


@pytest.mark.parametrize("text, kind", [
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
])
def test_personal_data_and_secrets_are_redacted(text, kind):
    clean, found = redact(text)
    assert found == {kind: 1}, (clean, found)
    assert f"[REDACTED_{kind.upper()}]" in clean


@pytest.mark.parametrize("text", [
    "Harga pempek 15000 rupiah pada tahun 2024.",
    "Rapat tanggal 2024-01-15 jam 10:30, ruang 12.",
    "Versi 3.11.7 dan build 20240115.",
    "Nyak haga mengan di pekon.",
])
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == (text, {})


def test_luhn_and_nik_checks():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert looks_like_nik("3171234501900001") and not looks_like_nik("9971234501900001")


def test_policy():
    assert screen({"instruction": "x", "output": "y"}, "general")["status"] == "candidate"
    assert screen({"instruction": "x", "output": "y"}, "CRM")["status"] == "quarantine"
    assert screen({"instruction": "x", "output": "y"}, "household finance")["risk"] == "high"
    phone_only = screen({"instruction": "telp 081234567890", "output": "y"}, "general")
    assert phone_only["status"] == "candidate" and phone_only["redactions"] == {"phone": 1}
    card = screen({"instruction": "x", "output": "4111 1111 1111 1111"}, "general")
    assert card["status"] == "quarantine" and "4111" not in card["record"]["output"]


def test_condense_keeps_errors_numbers_paths_head_and_tail():
    lines = ["$ make test"] + [f"compiling module {i}" for i in range(300)] + \
        ["warning: unused variable in src/app/util.py", "Traceback (most recent call last):",
         'ValueError: bad value 42'] + ["ok"] * 100 + ["12 passed, 1 failed in 3.2s"]
    out = condense("\n".join(lines))
    for keep in ("$ make test", "src/app/util.py", "Traceback", "ValueError: bad value 42", "12 passed, 1 failed"):
        assert keep in out
    assert "[repeated" in out and "lines omitted" in out
    assert len(out) < len("\n".join(lines)) / 5


def test_condense_leaves_short_output_alone():
    assert condense("one\ntwo\nthree") == "one\ntwo\nthree"
