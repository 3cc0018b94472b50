"""The language identifier's held-out accuracy and the intent routing."""

import pytest

from sigerlm_lampung.router import LanguageId, Router, route_accuracy, train_language_id


@pytest.fixture(scope="module")
def trained():
    return train_language_id(per_label=2500)


def test_heldout_accuracy_lampung_indonesian_english(trained):
    _, report = trained
    assert report["n"] > 1500
    assert report["accuracy_abl_ind_eng"] > 95
    assert report["per_label"]["abl"]["accuracy"] > 93
    assert report["accuracy_4way"] > 93  # other regional languages as negatives
    # Lampung written by people (not the templated rows), kept out of training
    assert report["human_written"]["per_label"]["abl"]["accuracy"] > 80
    assert report["human_written_3_words"]["accuracy_abl_ind_eng"] > 85


def test_intents(trained):
    router = Router(trained[0])
    cases = [
        ("Nyak haga mengan manuk di warung paghek jalan", "lampung_to_id"),
        ("Translate to English: Nyak haga mengan manuk di warung paghek jalan", "lampung_to_en"),
        ("terjemahkan ke bahasa Lampung: saya mau makan ikan", "id_to_lampung"),
        ("Tolong terjemahkan ke bahasa Indonesia: nikeu haga dak pasar", "lampung_to_id"),
        ("translate to lampung: I want to eat rice", "en_to_lampung"),
        ("apa arti wawai?", "lampung_to_id"),
        ("bagaimana 'saya mau makan' dalam bahasa Lampung?", "id_to_lampung"),
        ("Jelaskan apa itu unit test secara ringkas.", "general_chat"),
        ("What is the capital of France?", "general_chat"),
        ("Kula badhe tindak dhateng peken", "general_chat"),  # Javanese is not Lampung
    ]
    assert route_accuracy(router, cases) == 100.0
    route = router.route("terjemahkan ke bahasa Lampung: saya mau makan ikan")
    assert route.text == "saya mau makan ikan" and route.language == "ind"


def test_shared_harness_routes(trained):
    import json

    from sigerlm.paths import data_dir

    router = Router(trained[0])
    rows = [
        json.loads(line)
        for line in (data_dir() / "general" / "harness" / "lampung_router.jsonl").read_text().splitlines()
    ]
    assert all(router.route(r["prompt"]).intent == r["expected_route"] for r in rows)


def test_empty_text_and_an_untrained_label_set():
    model = LanguageId().fit(["nyak haga mengan", "saya mau makan"], ["abl", "ind"])
    assert model.predict("nyak haga")[0] == "abl"
    assert model.predict("...") == ("other", 0.0)
