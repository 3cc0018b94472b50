import json

import pytest

pytest_plugins = ["sigerlm_testkit"]

# A small Lampung data folder: enough to build every stage in a second.
TINY_PAIRS = [
    (
        "Nyak haga mengan nasi",
        "saya mau makan nasi",
        "i want to eat rice",
        "synthetic_compositional_lampung_o",
        "synthetic_composition",
    ),
    (
        "Nikeu haga mengan punyeu",
        "kamu mau makan ikan",
        "you want to eat fish",
        "synthetic_compositional_lampung_o",
        "synthetic_composition",
    ),
    (
        "Nyak ago dak pasar",
        "saya mau ke pasar",
        "i want to go to the market",
        "synthetic_compositional_lampung_o",
        "synthetic_composition",
    ),
    (
        "Nikeu ago dak nuwo",
        "kamu mau ke rumah",
        "you want to go home",
        "synthetic_compositional_lampung_o",
        "synthetic_composition",
    ),
    (
        "Yo haga mengan nasi di nuwo",
        "dia mau makan nasi di rumah",
        "he wants to eat rice at home",
        "synthetic_compositional_lampung_o",
        "synthetic_composition",
    ),
    (
        "nuwo di anek ino wawai",
        "rumah di kampung itu bagus",
        "the house in that village is nice",
        "smt_paper_table_2_6",
        "sentence_pair",
    ),
    ("sanak ino mak sihat", "anak itu tidak sehat", "the child is not healthy", "smt_paper_table_3_6", "sentence_pair"),
    ("Sanak ijo wawai", "Anak ini bagus", "", "rajotuho", "sentence_pair"),
    ("Kuyuk", "Anjing", "", "rajotuho", "sentence_pair"),
    ("Manuk", "Ayam", "", "rajotuho", "sentence_pair"),
    ("Nyak mak haga mengan punyeu", "saya tidak mau makan ikan", "", "rajotuho", "sentence_pair"),
    ("Tiyan ago dak pasar", "mereka mau ke pasar", "", "rajotuho", "sentence_pair"),
    ("Kuyuk ino mengan manuk", "anjing itu makan ayam", "", "rajotuho", "sentence_pair"),
    ("Yo mak sihat", "dia tidak sehat", "", "rajotuho", "sentence_pair"),
]


def write_pairs(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = [
        {
            "lampung": lo,
            "indonesian": ind,
            "english": en,
            "dialect": "nyo" if src.startswith("smt") else "o",
            "source": src,
            "type": typ,
        }
        for lo, ind, en, src, typ in TINY_PAIRS
    ]
    rows.append(
        {
            "lampung": "Ikan Gabus",
            "indonesian": "Ughghun",
            "english": "",
            "dialect": "o",
            "source": "rajotuho",
            "type": "sentence_pair",
            "quality_flags": ["suspect_swapped_sides"],
        }
    )
    rows.append(
        {
            "lampung": "Percakapan Bahasa Lampung",
            "indonesian": "Nyow",
            "english": "",
            "dialect": "o",
            "source": "rajotuho",
            "type": "sentence_pair",
            "quality_flags": ["scrape_noise"],
        }
    )
    valid = {4, 10, 11, 12, 13}  # one template with English, four rajotuho sentences
    write_pairs(root / "lampung" / "splits" / "train.jsonl", [r for i, r in enumerate(rows) if i not in valid])
    write_pairs(root / "lampung" / "splits" / "valid.jsonl", [r for i, r in enumerate(rows) if i in valid])
    # made-up rows in the dictionary's schema (the real one is GPL-3.0 and is only read from its path)
    write_pairs(
        root / "lampung" / "sources" / "meizano_lampung_dictionary.jsonl",
        [
            {"indonesian": "ujian", "lampung": "ujiyan", "dialect": "", "source": "meizano_lampung"},
            {"indonesian": "contoh", "lampung": "contoheu", "dialect": "nyo", "source": "meizano_lampung"},
            {"indonesian": "contoh", "lampung": "contohan", "dialect": "api", "source": "meizano_lampung"},
        ],
    )
    return root


@pytest.fixture(scope="session")
def translator():
    """The translator built from the shared data (English systems on first use)."""
    from sigerlm_lampung.translator import Translator

    return Translator.build(english="lazy")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # the service's on-disk cache goes to a folder of the test session, never the user's
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
