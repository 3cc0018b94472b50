"""Normalisation, cleaning of the pair files (quality flags, dedup), the meizano reader, builders."""

import json

import pytest

from sigerlm.errors import SigerError
from sigerlm_lampung import data as d
from sigerlm_lampung.builders import chat_rows, instruction_rows, write_datasets
from sigerlm_lampung.text import alternatives, normalize, restore_surface
from sigerlm_lampung.translator import split_turns


def test_normalize_case_punctuation_apostrophes_whitespace():
    assert normalize("  Nyak ago  nigheu, NA’EN bingei!  ") == "nyak ago nigheu na'en bingei"
    assert normalize("na`en") == normalize("na'en") == "na'en"
    assert normalize("Anai-anai (rayap).") == "anai-anai rayap"
    assert normalize("?!") == ""
    assert alternatives("Iyo/iyyo/yo") == ["iyo", "iyyo", "yo"]
    assert alternatives("Anai-anai, Nanai") == ["anai-anai", "nanai"]
    assert restore_surface("Sapo namo meu?", "siapa namamu") == "Siapa namamu?"


def test_quality_flags_are_honoured():
    base = {"english": "", "source": "rajotuho", "type": "sentence_pair"}
    swapped = d.clean_row(
        {**base, "lampung": "Burung Hantu", "indonesian": "Kemiyak", "quality_flags": ["suspect_swapped_sides"]}
    )
    assert (swapped.lampung, swapped.indonesian) == ("Kemiyak", "Burung Hantu")
    assert d.clean_row({**base, "lampung": "a", "indonesian": "b", "quality_flags": ["misaligned_turns"]}) is None
    assert d.clean_row({**base, "lampung": "a", "indonesian": "b", "quality_flags": ["scrape_noise"]}) is None
    dialect_a = {
        **base,
        "lampung": "Nyak haga ngebeli",
        "indonesian": "saya mau beli",
        "quality_flags": ["dialect_A_article"],
    }
    assert d.clean_row(dialect_a) is None
    assert d.clean_row(dialect_a, keep_dialect_a=True) is not None
    assert d.clean_row({**base, "lampung": "", "indonesian": "b"}) is None


def test_shared_splits_load_clean_and_deduplicated():
    train = d.load_split("train")
    assert 4000 < len(train) < 4323  # flagged rows dropped, duplicates after normalisation merged
    keys = [(p.lo, p.id, p.en) for p in train]
    assert len(keys) == len(set(keys))
    assert not any(p.lo.startswith("=") for p in train)
    human = [p for p in d.dedup(train + d.load_split("valid")) if p.is_human]
    assert 320 <= len(human) <= 360


def test_meizano_is_read_from_its_path_with_dialects(tmp_path):
    path = tmp_path / "dict.jsonl"
    # made-up rows in the dictionary's schema and with its kinds of noise
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"indonesian": "contoh", "lampung": "conto heu", "dialect": "nyo"},
                {"indonesian": "Uji", "lampung": "ujei.ujo (coba)", "dialect": ""},
            ]
        )
        + "\n"
    )
    entries = d.read_meizano(path)
    assert [(e.indonesian, e.lampung, e.dialect) for e in entries] == [
        ("contoh", "conto heu", "nyo"),
        ("uji", "ujei", ""),
        ("uji", "ujo", ""),
    ]
    with pytest.raises(SigerError, match="meizano dictionary not found"):
        d.read_meizano(tmp_path / "missing.jsonl")
    path.write_text("{broken\n")
    with pytest.raises(SigerError, match="dict.jsonl:1"):
        d.read_meizano(path)
    shared = d.load_meizano()
    assert len(shared) > 15000


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SigerError, match="no Lampung data"):
        d.load_split("train", tmp_path)


def test_dialogues_split_at_matching_speakers():
    turns = split_turns("Andi: Nyow kabar meu? Dewi: Kabar wawai.", "Andi: Apa kabar kamu? Dewi: Baik.")
    assert turns == [("Andi: Nyow kabar meu?", "Andi: Apa kabar kamu?"), ("Dewi: Kabar wawai.", "Dewi: Baik.")]
    assert split_turns("Andi: a b. Dewi: c", "Andi: x y z") == [("Andi: a b. Dewi: c", "Andi: x y z")]


def test_builders_cover_every_direction_and_are_seeded(tiny_data, tmp_path):
    pairs = d.load_split("train", tiny_data)
    rows = instruction_rows(pairs, seed=3)
    assert rows == instruction_rows(pairs, seed=3)
    assert [r["input"] for r in rows] != [r["input"] for r in instruction_rows(pairs, seed=4)]
    directions = {r["direction"] for r in rows}
    assert directions == {"abl-ind", "ind-abl", "abl-eng", "eng-abl"}
    nyo = [r for r in rows if r["source"].startswith("smt") and r["direction"] == "abl-ind"]
    assert nyo and all(r["instruction"] == "Terjemahkan Lampung Nyo ke Bahasa Indonesia" for r in nyo)
    assert chat_rows(rows[:1])[0]["messages"][0]["content"].startswith(rows[0]["instruction"] + ": ")
    report = write_datasets(tmp_path / "out", "train", 0, tiny_data)
    assert report["rows"] == len(rows)
    assert len((tmp_path / "out" / "chat.jsonl").read_text().splitlines()) == len(rows)
    with pytest.raises(SigerError, match="unknown direction"):
        instruction_rows(pairs, ["abl-fra"])
